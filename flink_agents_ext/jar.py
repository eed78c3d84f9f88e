"""Build and locate the Java half of the checkpoint bridge.

The Java sources ship inside the package (``flink_agents_ext/java``). They are compiled with
``javac`` against the jars of the installed PyFlink the first time a job needs them (or by
``make jar`` / ``python -m flink_agents_ext.jar``). The jar's file name carries a digest of
the sources and of the PyFlink version, so an edited source or another PyFlink is rebuilt,
never silently reused.

Environment:
    ``FLINK_AGENTS_EXT_JAR``: use this pre-built jar instead of building one.
    ``FLINK_AGENTS_EXT_BUILD_DIR``: where built jars go (default: ``flink_agents_ext/_build``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from flink_agents_ext._compat import SUPPORTED_FLINK_VERSION, check_flink_version
from flink_agents_ext.errors import JavaToolchainError

_log = logging.getLogger(__name__)

#: Where the Java sources of the bridge live inside the package.
JAVA_SOURCE_DIR = Path(__file__).resolve().parent / "java"
_DEFAULT_BUILD_DIR = Path(__file__).resolve().parent / "_build"
_lock = threading.Lock()


def pyflink_home() -> Path:
    """Return the directory of the installed ``pyflink`` package (holds ``lib/`` and ``opt/``)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _sources() -> list[Path]:
    found = sorted(JAVA_SOURCE_DIR.rglob("*.java"))
    if not found:
        raise JavaToolchainError(f"no Java sources found under {JAVA_SOURCE_DIR}")
    return found


def _digest(sources: list[Path]) -> str:
    h = hashlib.sha256(SUPPORTED_FLINK_VERSION.encode())
    for src in sources:
        h.update(str(src.relative_to(JAVA_SOURCE_DIR)).encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:12]


def java_tool(name: str) -> str:
    """The path of the JDK tool ``name`` (``javac``, ``jar``, ``javap``...): in
    ``$JAVA_HOME/bin``, else on ``PATH``.

    Raises:
        JavaToolchainError: it is in neither.
    """
    candidates = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(Path(java_home) / "bin" / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for cand in candidates:
        if cand.exists():
            return str(cand)
    raise JavaToolchainError(
        f"'{name}' was not found (looked in $JAVA_HOME/bin and on PATH). flink-agents-ext "
        f"compiles a small Java operator at first use and needs a JDK 11 or newer, e.g. "
        f"'apt-get install -y openjdk-17-jdk-headless'. Or point FLINK_AGENTS_EXT_JAR at a "
        f"pre-built jar."
    )


def _classpath() -> str:
    home = pyflink_home()
    python_jar = home / "opt" / f"flink-python-{SUPPORTED_FLINK_VERSION}.jar"
    if not python_jar.exists():
        raise JavaToolchainError(f"PyFlink's flink-python jar is missing: {python_jar}")
    return os.pathsep.join([str(home / "lib" / "*"), str(python_jar)])


def jar_path() -> Path:
    """Return the path of the bridge jar, building it first when it is missing or stale."""
    override = os.environ.get("FLINK_AGENTS_EXT_JAR")
    if override:
        path = Path(override)
        if not path.is_file():
            raise JavaToolchainError(f"FLINK_AGENTS_EXT_JAR points at a missing file: {path}")
        return path
    check_flink_version()
    sources = _sources()
    build_dir = Path(os.environ.get("FLINK_AGENTS_EXT_BUILD_DIR", _DEFAULT_BUILD_DIR))
    target = build_dir / f"flink-agents-ext-{_digest(sources)}.jar"
    with _lock:
        if not target.exists():
            _build(sources, target)
    return target


def jar_url() -> str:
    """Return the bridge jar as a ``file://`` URL, the form ``pipeline.jars`` expects."""
    return jar_path().resolve().as_uri()


def _build(sources: list[Path], target: Path) -> None:
    javac, jar = java_tool("javac"), java_tool("jar")
    target.parent.mkdir(parents=True, exist_ok=True)
    _log.info("building %s from %d Java sources", target.name, len(sources))
    with tempfile.TemporaryDirectory(prefix="fae-javac-") as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        cmd = [javac, "--release", "11", "-nowarn", "-cp", _classpath(), "-d", str(classes)]
        _run(cmd + [str(s) for s in sources], "javac")
        partial = target.parent / f".{target.name}.{os.getpid()}.tmp"
        _run([jar, "cf", str(partial), "-C", str(classes), "."], "jar")
        # Atomic publish: a concurrent builder (another process) either sees no jar or a
        # whole one.
        os.replace(partial, target)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise JavaToolchainError(
            f"{what} failed with exit code {proc.returncode}:\n{proc.stderr or proc.stdout}"
        )


def main() -> int:
    """Build the jar (if needed) and print its path: ``python -m flink_agents_ext.jar``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(jar_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
