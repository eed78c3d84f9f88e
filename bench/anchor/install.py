"""The anchor's virtual environment: ``apache-flink==2.3.0`` and ``flink-agents==0.3.1`` (and
py-spy) in ``~/.cache/flink-agents-ext/anchor-venv`` (``FAE_ANCHOR_VENV``), apart from ours:
flink-agents pins pydantic, pyyaml, chromadb, mem0ai, openai... that must not enter ours.

``flink-agents`` 0.3.1 is an sdist whose build backend downloads its jars
(``flink-agents-dist-common``, ``flink-agents-dist-flink-2.3`` and the other Flink versions'
thin jars) from Maven Central. When the registry does not serve them (here it answers 404
for every ``org.apache.flink:flink-agents-*`` artifact), the jars are built with Maven from
the project's own source at tag ``release-0.3.1`` (``FAE_ANCHOR_SRC``, default
``~/.cache/flink-agents-ext/src/flink-agents-0.3.1``; its dependencies come from Maven
Central), put into the sdist from PyPI (the Python code is the released one) with a manifest
that lists only those two jars, and that sdist is installed. The sha256 of the built jars is
recorded next to the published ones (``anchor-jars.json`` in the venv).

Usage: ``python -m bench.anchor.install`` (idempotent; prints the venv's python).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FAE_CACHE", Path.home() / ".cache" / "flink-agents-ext"))
VENV = Path(os.environ.get("FAE_ANCHOR_VENV", CACHE / "anchor-venv"))
SRC = Path(os.environ.get("FAE_ANCHOR_SRC", CACHE / "src" / "flink-agents-0.3.1"))
VERSION = "0.3.1"
#: The jars the anchor needs on Flink 2.3 (artifact, classifier, wheel directory).
JARS = [("flink-agents-dist-common", None, "common"),
        ("flink-agents-dist-flink-2.3", "thin", "flink-2.3")]
PY = VENV / "bin" / "python"


class InstallError(RuntimeError):
    """The anchor could not be installed (the message says why and what to do)."""


def _run(argv: list[str], what: str, timeout: float = 1800, cwd: Path | None = None) -> str:
    print(f"[anchor-install] {what}: {' '.join(map(str, argv))}", file=sys.stderr, flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        raise InstallError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-5000:]}")
    return proc.stdout


def installed() -> bool:
    """Whether the venv has pyflink 2.3.0 and flink-agents 0.3.1 with the Flink 2.3 jars."""
    if not PY.exists():
        return False
    probe = ("import importlib.metadata as m, importlib.resources as r, pyflink\n"
             "assert m.version('apache-flink') == '2.3.0'\n"
             f"assert m.version('flink-agents') == '{VERSION}'\n"
             "lib = r.files('flink_agents.lib')\n"
             "assert any(p.name.endswith('.jar') for p in (lib / 'flink-2.3').iterdir())\n"
             "assert any(p.name.endswith('.jar') for p in (lib / 'common').iterdir())\n")
    return subprocess.run([str(PY), "-c", probe], capture_output=True).returncode == 0


def _jar_name(artifact: str, classifier: str | None) -> str:
    return f"{artifact}-{VERSION}{'-' + classifier if classifier else ''}.jar"


_RUNTIME = "runtime/src/main/java/org/apache/flink/agents/runtime"
_FLUSS_STORE = f"{_RUNTIME}/actionstate/FlussActionStateStore.java"
_MANAGER = f"{_RUNTIME}/operator/DurableExecutionManager.java"


def remove_fluss(src: Path) -> None:
    """Take the Fluss action-state backend out of the source tree (idempotent).

    Its client (``org.apache.fluss:fluss-client:0.9.0-incubating``) is not served by Maven
    Central here, so the runtime would not build. The benchmark uses the Kafka backend; the
    Fluss store class, its tests and its four dependencies go, and selecting ``fluss`` fails.
    """
    (src / _FLUSS_STORE).unlink(missing_ok=True)
    for test in (src / "runtime/src/test").rglob("Fluss*.java"):
        test.unlink()
    manager = src / _MANAGER
    text = manager.read_text()
    text = text.replace(
        "import org.apache.flink.agents.runtime.actionstate.FlussActionStateStore;\n", "")
    text = text.replace(
        "actionStateStore = new FlussActionStateStore(config);",
        'throw new UnsupportedOperationException("Fluss backend removed from this build");')
    manager.write_text(text)
    pom = src / "runtime/pom.xml"
    kept, skip = [], False
    lines = pom.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == "<dependency>" and i + 1 < len(lines) \
                and "<groupId>org.apache.fluss</groupId>" in lines[i + 1]:
            skip = True
        if not skip:
            kept.append(line)
        elif line.strip() == "</dependency>":
            skip = False
    pom.write_text("".join(kept))


def remove_integrations(src: Path) -> None:
    """Build the dist jars without the integrations (idempotent).

    Some of their dependencies are not served by Maven Central here (e.g.
    ``software.amazon.awssdk:bedrockruntime:2.32.16``); the benchmark uses no chat model,
    embedding model, vector store or MCP server. ``dist/pom.xml`` loses its
    ``flink-agents-integrations-*`` dependencies: the common jar then holds the third-party
    dependencies of api, plan and runtime, the thin jar their classes.
    """
    pom = src / "dist/pom.xml"
    lines = pom.read_text().splitlines(keepends=True)
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "<dependency>" and i + 2 < len(lines) \
                and "<artifactId>flink-agents-integrations-" in lines[i + 2]:
            while lines[i].strip() != "</dependency>":
                i += 1
            i += 1
            continue
        kept.append(lines[i])
        i += 1
    pom.write_text("".join(kept))


def build_jars() -> dict[str, Path]:
    """Build the two jars from ``SRC`` with Maven; return ``{artifact: jar}``."""
    if not (SRC / "pom.xml").exists():
        raise InstallError(
            f"Maven Central does not serve the flink-agents {VERSION} jars, and there is no "
            f"source tree to build them from at {SRC}: put the apache/flink-agents repository "
            f"at tag release-{VERSION} there (or set FAE_ANCHOR_SRC).")
    remove_fluss(SRC)
    remove_integrations(SRC)
    _run(["mvn", "-B", "-q", "-Dmaven.test.skip=true", "-Dspotless.skip=true",
          "-Drat.skip=true", "-Dcheckstyle.skip=true", "-Dmaven.javadoc.skip=true", "install",
          "-pl", "dist/common,dist/flink-2.3", "-am"], "build the anchor's jars", cwd=SRC)
    jars = {}
    for artifact, classifier, folder in JARS:
        jar = SRC / "dist" / folder / "target" / _jar_name(artifact, classifier)
        if not jar.exists():
            raise InstallError(f"the Maven build did not produce {jar}")
        jars[artifact] = jar
    return jars


def install_from_built_jars(constraints: Path) -> dict[str, object]:
    """Install the PyPI sdist with jars built from source; return what was built."""
    jars = build_jars()
    with tempfile.TemporaryDirectory(prefix="fae-anchor-sdist-") as tmp:
        _run([str(PY), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"flink-agents=={VERSION}", "-d", tmp], "download the flink-agents sdist")
        sdist = next(Path(tmp).glob("flink_agents-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp) / f"flink_agents-{VERSION}"
        manifest_path = tree / "jar_manifest.json"
        manifest = json.loads(manifest_path.read_text())
        published = {j["artifact_id"]: j["sha256"] for j in manifest["jars"]}
        keep = [j for j in manifest["jars"] if j["artifact_id"] in jars]
        built: dict[str, object] = {}
        for entry in keep:
            jar = jars[entry["artifact_id"]]
            dest = tree / entry["dest"]
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(jar, dest / jar.name)
            built[entry["artifact_id"]] = {
                "sha256_built": hashlib.sha256(jar.read_bytes()).hexdigest(),
                "sha256_published": published[entry["artifact_id"]]}
        manifest["jars"] = keep
        manifest_path.write_text(json.dumps(manifest, indent=2))
        _run([str(PY), "-m", "pip", "install", "-q", "-c", str(constraints), str(tree)],
             "install flink-agents with the built jars")
    return built


def ensure() -> Path:
    """Create (or reuse) the anchor's venv; return its python."""
    if installed():
        return PY
    constraints = ROOT / "constraints.txt"
    if not PY.exists():
        _run([sys.executable, "-m", "venv", str(VENV)], "create the anchor venv")
    _run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip>=24"], "upgrade pip")
    _run([str(PY), "-m", "pip", "install", "-q", "-c", str(constraints),
          "apache-flink==2.3.0", "py-spy"], "install apache-flink 2.3.0 and py-spy")
    info: dict[str, object] = {"source": "pypi"}
    try:
        _run([str(PY), "-m", "pip", "install", "-q", "-c", str(constraints),
              f"flink-agents=={VERSION}"], "install flink-agents from PyPI")
    except InstallError as exc:
        if "HTTP Error 404" not in str(exc) and "404" not in str(exc):
            raise
        print("[anchor-install] Maven Central has no flink-agents jars (404): building them "
              "from source", file=sys.stderr, flush=True)
        info = {"source": f"sdist from PyPI, jars built from {SRC}",
                "jars": install_from_built_jars(constraints)}
    (VENV / "anchor-jars.json").write_text(json.dumps(info, indent=2) + "\n")
    if not installed():
        raise InstallError(f"the anchor venv {VENV} is incomplete after installing")
    return PY


def describe() -> dict[str, object]:
    """How the anchor was installed (``anchor-jars.json``), for the results."""
    path = VENV / "anchor-jars.json"
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    try:
        print(ensure())
    except InstallError as err:
        print(f"anchor install: {err}", file=sys.stderr)
        sys.exit(1)
