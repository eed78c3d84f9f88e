"""The anchor's side of the benchmark: the agent of ``bench/anchor/anchor_agent.py`` on Apache
Flink Agents 0.3.1 (Java runtime, Flink 2.3 mini-cluster, checkpoints every second), durable
execution on: its Kafka action-state store on the given broker.

Runs only in the anchor's virtual environment (``bench/anchor/install.py``), from the
repository root: ``<anchor venv>/bin/python -m bench.anchor.anchor_job ...``.

* ``--case trivial``: ``durable_execute`` of a SHA-256, 1 thread;
* ``--case slow``: ``durable_execute_async`` of a ``--call-s`` sleep, ``num-async-threads`` =
  ``--threads``;
* ``--fail-at N``: the action raises once on input ``N`` (the runtime's error strategy
  ``fail``: the job fails, Flink restarts it from the last checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource

from bench.anchor.job_common import Probe, job_configuration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["trivial", "slow"], required=True)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap (host:port)")
    p.add_argument("--topic", required=True, help="the action-state topic (created)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--call-s", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=4, help="num-async-threads")
    p.add_argument("--fail-at", type=int, default=0)
    p.add_argument("--python-mode", choices=["process", "thread"], default="process",
                   help="execution mode of the PyFlink functions around the agent")
    p.add_argument("--probe", required=True)
    args = p.parse_args()

    # The runtime's own Python (pemja, in the JVM) and the PyFlink workers import the agent
    # and the probe from the repository, the rest from this virtual environment.
    os.environ["PYTHONPATH"] = os.pathsep.join([sysconfig.get_paths()["purelib"], ROOT])
    os.environ["FAE_ANCHOR_PROBE"] = args.probe
    os.environ["FAE_ANCHOR_FAIL_AT"] = str(args.fail_at)
    os.environ["FAE_ANCHOR_CALL_S"] = str(args.call_s)

    from flink_agents.api.core_options import (
        AgentConfigOptions,
        AgentExecutionOptions,
        EventLogLevel,
    )
    from flink_agents.api.execution_environment import AgentsExecutionEnvironment

    from bench.anchor.anchor_agent import SlowAgent, TrivialAgent

    conf = job_configuration()
    conf.set_string("python.execution-mode", args.python_mode)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    env.enable_checkpointing(1000)

    agents_env = AgentsExecutionEnvironment.get_execution_environment(env=env)
    cfg = agents_env.get_config()
    cfg.set(AgentConfigOptions.ACTION_STATE_STORE_BACKEND, "kafka")
    cfg.set(AgentConfigOptions.KAFKA_BOOTSTRAP_SERVERS, args.bootstrap)
    cfg.set(AgentConfigOptions.KAFKA_ACTION_STATE_TOPIC, args.topic)
    cfg.set(AgentConfigOptions.KAFKA_ACTION_STATE_TOPIC_NUM_PARTITIONS, args.partitions)
    cfg.set(AgentConfigOptions.EVENT_LOG_LEVEL, EventLogLevel.OFF)
    cfg.set(AgentExecutionOptions.NUM_ASYNC_THREADS, args.threads)

    keys = args.keys
    inputs = env.from_source(NumberSequenceSource(0, args.n - 1),
                             WatermarkStrategy.no_watermarks(), "numbers") \
        .map(lambda i: (i % keys, i))
    agent = SlowAgent() if args.case == "slow" else TrivialAgent()
    out = agents_env.from_datastream(input=inputs, key_selector=lambda t: t[0]) \
        .apply(agent).to_datastream()
    out.map(Probe(args.probe, args.fail_at), Types.LONG())
    agents_env.execute(f"anchor-bench-anchor-{args.case}")


if __name__ == "__main__":
    main()
