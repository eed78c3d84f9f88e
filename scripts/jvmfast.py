"""Faster start of the local mini-cluster JVM for short jobs (tests, chaos trials): never for
benchmarks, which measure speed.

A test job spends most of its CPU starting the JVM of PyFlink's local mini-cluster: loading
and verifying some 20,000 classes and compiling them with both JIT compilers. Two JVM options
cut that (measured side by side on 2 cores: a thread-mode test job 24 s -> 13-14 s of wall
and CPU time, a process-mode one 40 s -> 24 s; README, Development):

* ``-XX:TieredStopAtLevel=1``: the quick C1 compiler only (no C2: its threads compete for the
  two cores during start-up, and a short job never runs long enough to repay them);
* ``-XX:SharedArchiveFile``: a class-data-sharing archive of the classes such a job loads
  (JDK 17 dynamic archive), mapped instead of loaded and verified again. It is written once
  per JDK and PyFlink installation by :func:`ensure_archive` (a small job in each execution
  mode, ``-XX:ArchiveClassesAtExit``) into the virtual environment; a JVM that finds it stale
  warns and starts without it.

PyFlink's gateway launcher passes ``JVM_ARGS`` to the mini-cluster JVM
(``pyflink/pyflink_gateway_server.py``): :func:`jvm_args` is the value to set.
``FAE_JVM_FAST=0`` turns both off (to compare).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from scripts import PY, ROOT

#: The JIT option (see the module).
C1_ONLY = "-XX:TieredStopAtLevel=1"
#: Seconds the archive-writing jobs may take.
DUMP_TIMEOUT_S = 240


def enabled() -> bool:
    """Whether ``FAE_JVM_FAST`` leaves the options on (default: on)."""
    return os.environ.get("FAE_JVM_FAST", "1") != "0"


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java else ""


def archive_path() -> Path:
    """Where the archive of this JDK and PyFlink installation is (it may not exist yet)."""
    import pyflink  # the installed one decides the class path

    digest = hashlib.sha1(_java().encode())
    lib = Path(pyflink.__file__).parent
    for jar in sorted([*lib.glob("lib/*.jar"), *lib.glob("opt/*.jar")]):
        stat = jar.stat()
        digest.update(f"{jar.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return Path(sys.prefix) / "fae-jvm" / f"flink-{digest.hexdigest()[:12]}.jsa"


def jvm_args() -> str:
    """The ``JVM_ARGS`` of a short job: C1 only, and the archive when it exists ("" when
    turned off)."""
    if not enabled():
        return ""
    path = archive_path()
    return f"{C1_ONLY} -XX:SharedArchiveFile={path}" if path.exists() else C1_ONLY


def ensure_archive() -> Optional[Path]:
    """Write the archive unless it exists (one process at a time: the others wait for it);
    return its path, or None when turned off or it could not be written (jobs then start
    without it; the reason is printed)."""
    if not enabled():
        return None
    path = archive_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fae-jvm-") as tmp:
            partial = Path(tmp) / "flink.jsa"
            env = {**os.environ, "JVM_ARGS": f"{C1_ONLY} -XX:ArchiveClassesAtExit={partial}",
                   "FLINK_LOG_DIR": tmp}
            # Its own session: the gateway JVM writes the archive as it exits, a moment after
            # the job's Python; the archive is taken once no process of the session is left.
            proc = subprocess.Popen([PY, "-m", "scripts.jvmfast", "--dump-job", tmp], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            try:
                _, err = proc.communicate(timeout=DUMP_TIMEOUT_S)
                left = _wait_session_gone(proc.pid, 60)
                failed = "" if proc.returncode == 0 and not left and partial.exists() \
                    else f"exit {proc.returncode}, {left} process(es) left: {err[-2000:]}"
            except subprocess.TimeoutExpired:
                failed = f"no end in {DUMP_TIMEOUT_S}s"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if failed:
                print(f"jvmfast: no class-data archive ({failed})", file=sys.stderr)
                return None
            shutil.move(str(partial), str(path))
        print(f"jvmfast: wrote {path} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return path


def _wait_session_gone(sid: int, timeout: float) -> int:
    """Wait (at most ``timeout`` seconds) until no process of session ``sid`` is left; return
    how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        left = 0
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == sid:
                    left += 1
            except OSError:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _dump_job(tmp: str) -> None:
    """Two small jobs in one JVM, thread then process mode: the classes a test job loads."""
    from pyflink.common import Configuration, Encoder, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSink
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor

    from flink_agents_ext import configure_environment

    class Count(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, runtime_context: RuntimeContext) -> None:
            self.seen = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))

        def process_element(self, value: int, ctx: KeyedProcessFunction.Context) -> object:
            self.seen.update((self.seen.value() or 0) + 1)
            yield value

    for mode in ("thread", "process"):
        conf = Configuration()
        conf.set_string("restart-strategy.type", "none")
        env = StreamExecutionEnvironment.get_execution_environment(conf)
        configure_environment(env, mode)
        env.set_parallelism(1)
        env.enable_checkpointing(100)
        out = env.from_collection(list(range(200)), type_info=Types.LONG()) \
            .map(lambda i: i + 1, output_type=Types.LONG()) \
            .key_by(lambda i: i % 4, key_type=Types.LONG()) \
            .process(Count(), output_type=Types.LONG())
        out.sink_to(FileSink.for_row_format(os.path.join(tmp, mode),
                                            Encoder.simple_string_encoder()).build())
        env.execute(f"jvmfast-{mode}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump-job":
        _dump_job(sys.argv[2])
    else:
        print(ensure_archive())
