"""The Python that ``scripts/cluster.sh`` calls (run as a file, standard library and PyYAML).

    cluster_tool.py render-conf SRC DST BUNDLED CLUSTER_DIR PYTHON REST_PORT RPC_PORT
        the cluster's Flink configuration from conf/flink/ (templates) and PyFlink's bundled
        conf/ (the JVM options, log4j files)
    cluster_tool.py package-zip ROOT TARGET
        a zip of the flink_agents_ext package for ``flink run -pyfs`` (no build output, no
        Java sources, no caches)
    cluster_tool.py show WHAT [ARGS...] < JSON
        one REST answer (on stdin) as text; WHAT is one of :data:`SHOW`
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import zipfile
from typing import Any, Callable

import yaml


def render_conf(src: str, dst: str, bundled_dir: str, cluster_dir: str, python: str,
                rest_port: str, rpc_port: str) -> None:
    """Render ``config.yaml`` and ``masters`` from their templates into ``dst``, copy
    ``workers`` and PyFlink's logging configuration; the result must be valid YAML."""
    with open(os.path.join(bundled_dir, "config.yaml")) as fh:
        bundled = yaml.safe_load(fh)
    values = {"@CLUSTER_DIR@": cluster_dir, "@PYTHON@": python, "@REST_PORT@": rest_port,
              "@JM_RPC_PORT@": rpc_port,
              "@JAVA_OPTS_ALL@": bundled["env"]["java"]["opts"]["all"]}

    def render(name: str, target: str) -> None:
        with open(os.path.join(src, name)) as fh:
            text = fh.read()
        for key, value in values.items():
            text = text.replace(key, value)
        tmp = os.path.join(dst, f".{target}.tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(dst, target))

    render("config.yaml.template", "config.yaml")
    render("masters.template", "masters")
    shutil.copyfile(os.path.join(src, "workers"), os.path.join(dst, "workers"))
    with open(os.path.join(dst, "config.yaml")) as fh:
        yaml.safe_load(fh)  # must stay valid YAML
    for pattern in ("log4j*.properties", "logback*.xml"):
        for path in glob.glob(os.path.join(bundled_dir, pattern)):
            shutil.copyfile(path, os.path.join(dst, os.path.basename(path)))


def package_zip(root: str, target: str) -> None:
    """Write the zip of ``<root>/flink_agents_ext`` to ``target`` (atomically)."""
    tmp = target + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for base, dirs, files in os.walk(os.path.join(root, "flink_agents_ext")):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "_build", "java"))
            for name in sorted(files):
                if name.endswith((".py", ".typed")):
                    path = os.path.join(base, name)
                    zf.write(path, os.path.relpath(path, root))
    os.replace(tmp, target)


# -- REST answers as text ---------------------------------------------------------------------
def _taskmanagers(d: Any) -> str:
    return str(d["taskmanagers"])


def _running(d: Any) -> str:
    return (f"{d['taskmanagers']} TaskManager(s), {d['slots-total']} slots "
            f"({d['slots-available']} free)")


def _started(d: Any) -> str:
    return (f"{d['taskmanagers']} TaskManager(s), {d['slots-total']} slots, "
            f"Flink {d['flink-version']}")


def _status(d: Any) -> str:
    return (f"{_running(d)}, jobs: {d['jobs-running']} running, {d['jobs-finished']} "
            f"finished, {d['jobs-cancelled']} cancelled, {d['jobs-failed']} failed")


def _state(d: Any) -> str:
    return str(d["state"])


def _completed(d: Any) -> str:
    return str(d["counts"]["completed"])


def _checkpoints(d: Any, job: str, state: str) -> str:
    c = d["counts"]
    lines = [f"job {job} ({state})",
             f"  checkpoints: {c['completed']} completed, {c['in_progress']} in progress, "
             f"{c['failed']} failed, {c['total']} triggered, {c['restored']} restored"]
    latest = d.get("latest") or {}
    for kind in ("completed", "savepoint", "restored", "failed"):
        cp = latest.get(kind)
        if not cp:
            continue
        where = cp.get("external_path") or cp.get("failure_message") or ""
        extra = f", {cp['state_size']} bytes" if "state_size" in cp else ""
        lines.append(f"  latest {kind}: id {cp['id']}{extra}  {where}")
    return "\n".join(lines)


def _exceptions(d: Any) -> str:
    """The newest three failures of a job, each with its last causes."""
    lines = []
    for e in ((d.get("exceptionHistory") or {}).get("entries") or [])[:3]:
        trace = (e.get("stacktrace") or "").splitlines()
        causes = [line for line in trace if line.startswith("Caused by")]
        lines.append(f"-- {e.get('taskName') or 'job'} : "
                     f"{trace[0] if trace else e.get('exceptionName')}")
        lines += [f"   {line}" for line in causes[-3:]]
    return "\n".join(lines)


#: ``show`` formats: name -> (function of the JSON and the extra arguments, what it reads).
SHOW: dict[str, tuple[Callable[..., str], str]] = {
    "taskmanagers": (_taskmanagers, "GET /overview: registered TaskManagers"),
    "running": (_running, "GET /overview: TaskManagers and slots"),
    "started": (_started, "GET /overview: TaskManagers, slots, Flink version"),
    "status": (_status, "GET /overview: TaskManagers, slots and jobs"),
    "state": (_state, "GET /jobs/<id>: the job's state"),
    "completed": (_completed, "GET /jobs/<id>/checkpoints: completed checkpoints"),
    "checkpoints": (_checkpoints, "GET /jobs/<id>/checkpoints JOB STATE: counts, latest"),
    "exceptions": (_exceptions, "GET /jobs/<id>/exceptions: the newest failures"),
}


def main(argv: list[str]) -> int:
    """Dispatch a subcommand (see the module documentation)."""
    if len(argv) == 8 and argv[0] == "render-conf":
        render_conf(*argv[1:])
    elif len(argv) == 3 and argv[0] == "package-zip":
        package_zip(*argv[1:])
    elif len(argv) >= 2 and argv[0] == "show" and argv[1] in SHOW:
        print(SHOW[argv[1]][0](json.load(sys.stdin), *argv[2:]))
    else:
        print(__doc__ + "\nshow formats:\n" + "\n".join(
            f"  {name:<13} {what}" for name, (_, what) in SHOW.items()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
