"""Fetch Java artifacts from Maven Central into a cache directory outside the repository.

Used for what the Flink ecosystem gets from Maven: the Kafka connector jar of a pipeline
(:mod:`flink_agents_ext.connectors.kafka`) and the Kafka broker of the tests
(``scripts/kafka-test-server.sh``). Jars are never committed: :func:`fetch` writes a small
POM into ``<cache>/<name>/``, runs ``mvn dependency:copy-dependencies`` once, and marks the
directory complete; later calls return it at once. Concurrent fetches of the same name (two
test runs) wait for each other on a file lock.

Environment:
    ``FAE_MAVEN_CACHE``: the cache directory (default ``~/.cache/flink-agents-ext/maven``).
    ``FAE_MAVEN_TIMEOUT_S``: bound on one Maven run (default 600).
    ``FAE_MVN``: the Maven executable (default ``mvn`` on the ``PATH``).

    python -m flink_agents_ext.maven NAME GROUP:ARTIFACT:VERSION...   # prints the directory
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

from flink_agents_ext.errors import FlinkAgentsExtError

_COMPLETE = ".complete"


class MavenFetchError(FlinkAgentsExtError):
    """Java or Maven is missing, or Maven could not fetch the artifacts (network, name)."""


def cache_dir() -> Path:
    """The cache root (``$FAE_MAVEN_CACHE`` or ``~/.cache/flink-agents-ext/maven``)."""
    given = os.environ.get("FAE_MAVEN_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "flink-agents-ext" / "maven"


def _pom(artifacts: Sequence[str], transitive: bool) -> str:
    deps = []
    for spec in artifacts:
        parts = spec.split(":")
        if len(parts) != 3 or not all(parts):
            raise MavenFetchError(f"artifact {spec!r} must be GROUP:ARTIFACT:VERSION")
        group, artifact, version = map(escape, parts)
        exclusions = ("" if transitive else
                      "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId>"
                      "</exclusion></exclusions>")
        deps.append(f"<dependency><groupId>{group}</groupId><artifactId>{artifact}"
                    f"</artifactId><version>{version}</version>{exclusions}</dependency>")
    return ("<project xmlns=\"http://maven.apache.org/POM/4.0.0\"><modelVersion>4.0.0"
            "</modelVersion><groupId>flink-agents-ext.cache</groupId><artifactId>fetch"
            "</artifactId><version>1</version><packaging>pom</packaging><dependencies>"
            + "".join(deps) + "</dependencies></project>\n")


def fetch(name: str, artifacts: Sequence[str], *, transitive: bool = True) -> Path:
    """Return ``<cache>/<name>/lib`` holding ``artifacts`` (and, if ``transitive``, their
    runtime dependencies), fetching them with Maven the first time.

    Raises:
        MavenFetchError: ``java`` or ``mvn`` is missing, Maven failed (the message holds the
            end of its output: no network, an unknown artifact...) or did not finish within
            ``$FAE_MAVEN_TIMEOUT_S``.
    """
    target = cache_dir() / name
    lib = target / "lib"
    if (target / _COMPLETE).exists():
        return lib
    mvn = os.environ.get("FAE_MVN") or shutil.which("mvn")
    if not mvn:
        raise MavenFetchError(
            f"Maven ('mvn') is needed to fetch {', '.join(artifacts)} from Maven Central; "
            f"install it (Debian: apt-get install maven) or set FAE_MVN")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise MavenFetchError("java not found: Maven needs a JDK (apt-get install "
                              "openjdk-17-jdk-headless) or JAVA_HOME")
    timeout = float(os.environ.get("FAE_MAVEN_TIMEOUT_S", "600"))
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same name
        if (target / _COMPLETE).exists():
            return lib
        shutil.rmtree(lib, ignore_errors=True)
        (target / "pom.xml").write_text(_pom(artifacts, transitive))
        cmd = [mvn, "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise MavenFetchError(
                f"Maven did not fetch {', '.join(artifacts)} within {timeout:.0f} s "
                f"(FAE_MAVEN_TIMEOUT_S); is Maven Central reachable?") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise MavenFetchError(
                f"Maven could not fetch {', '.join(artifacts)} (exit {done.returncode}); "
                f"is Maven Central reachable?\n{tail}")
        if not any(lib.glob("*.jar")):
            raise MavenFetchError(f"Maven fetched no jar for {', '.join(artifacts)}")
        (target / _COMPLETE).write_text("\n".join(artifacts) + "\n")
    return lib


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flink_agents_ext.maven NAME G:A:V...``: fetch and print the directory."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m flink_agents_ext.maven NAME GROUP:ARTIFACT:VERSION...",
              file=sys.stderr)
        return 2
    try:
        print(fetch(args[0], args[1:]))
    except MavenFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
