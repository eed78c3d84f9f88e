"""Reproduce, without flink-agents-ext, the PyFlink 2.3.0 process-mode failover race.

A plain PyFlink job (stock operators only): a paced Python map, a keyed process function
that keeps state and writes a line per element, a Python map writing the output, one
injected failure. In some runs (2 of the first 5 on a 2-core machine) the failover kills
the TaskManager with::

    FATAL - exception in exception handler of task Source: n -> Map, _stream_key_by_map_operator
    java.lang.IllegalStateException: Reference count must not be negative.
        at ...DefaultJobBundleFactory$WrappedSdkHarnessClient.unref(...java:712)
        at ...DefaultJobBundleFactory.close(DefaultJobBundleFactory.java:376)
        at ...PythonSharedResources.close(PythonSharedResources.java:67)
        ...
        at ...BeamPythonFunctionRunner.close(BeamPythonFunctionRunner.java:347)

and the local mini-cluster then waits for slots forever (the script never ends: run it
under ``timeout``). The cancelled upstream map's asynchronous flush still closes a Beam
bundle when its close releases the slot's last shared-resource lease; the bundle's release
and the factory's forced clean-up both decrement the SDK harness client's count.

Run: ``timeout 150 .venv/bin/python scripts/pyflink_process_mode_race.py /tmp/race-1``,
then look for the message in ``.venv/lib/python3.11/site-packages/pyflink/log/``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, Iterator

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import KeyedProcessFunction, MapFunction, StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.state import ValueStateDescriptor

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/pyflink-race"


class Count(KeyedProcessFunction):
    """Counts per key, logs every element (a slow consumer), fails once at element 2000."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.file = open(os.path.join(OUT, f"events-{uuid.uuid4().hex[:8]}.jsonl"), "a")

    def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
        marker = os.path.join(OUT, "failed-once")
        if value[1] == 2000 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure")
        c = (self.count.value() or 0) + 1
        self.count.update(c)
        self.file.write(json.dumps({"key": value[0], "count": c, "i": value[1]}) + "\n")
        self.file.flush()
        yield f"{value[0]}:{c}"


class Write(MapFunction):
    """Appends every output line to a file."""

    def open(self, runtime_context: Any) -> None:
        self.file = open(os.path.join(OUT, f"out-{uuid.uuid4().hex[:8]}.txt"), "a")

    def map(self, value: str) -> str:
        self.file.write(value + "\n")
        self.file.flush()
        return value


def to_pair(i: int) -> tuple[str, int]:
    time.sleep(0.001)
    return (f"k{(i // 25) % 20}", i)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "3")
    conf.set_string("restart-strategy.fixed-delay.delay", "200 ms")
    conf.set_string("python.fn-execution.bundle.size", "100")
    conf.set_string("python.fn-execution.bundle.time", "100")
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    env.enable_checkpointing(200)
    env.from_source(NumberSequenceSource(0, 3999), WatermarkStrategy.no_watermarks(), "n") \
        .map(to_pair, output_type=Types.TUPLE([Types.STRING(), Types.LONG()])) \
        .key_by(lambda t: t[0], key_type=Types.STRING()) \
        .process(Count(), Types.STRING()) \
        .map(Write(), output_type=Types.STRING())
    env.execute("pyflink-process-mode-race")


if __name__ == "__main__":
    main()
