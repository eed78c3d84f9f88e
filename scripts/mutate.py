"""``make mutate``: mutation testing of the protocol core (issue 16), with mutmut.

Which modules are mutated and which fast tests (no Flink job) run against them is declared
once, in ``[tool.mutmut]`` of ``pyproject.toml``; mutmut runs, for each mutant, the tests
that call the mutated function. Then:

* every mutant mutmut reports as a timeout (or as suspicious: the test process crashed) is
  run again here, by itself, with a generous wall-clock limit: a mutant only counts as
  killed by a timeout when its tests still do not finish in
  ``RECHECK_FACTOR`` x their clean duration + ``RECHECK_SLACK_S``;
* every survivor (tests passed, or no test calls the function) is matched against
  ``tests/mutation-equivalents.txt``: lines ``module | function | mutation | reason``, where
  ``mutation`` is the mutant's change as ``old -> new`` (the changed lines, stripped, joined
  by `` / ``; ``*`` matches anything) and ``reason`` says in one line why no test can tell
  the mutant from the original;
* ``mutation-results.json`` gets, per module, ``mutants``, ``killed``, ``equivalent``,
  ``survived`` and ``score`` = killed / (mutants - equivalent), plus every unexplained
  survivor and every equivalents line that matched nothing (killed since, or stale).

The exit status is 1 when a module scores below :data:`GOAL`. Usage::

    python -m scripts.mutate [--workers N] [--keep | --report]

``--keep`` reuses the results of an earlier run in ``mutants/``: mutmut tests the mutants of
new or changed functions, then every earlier survivor again (with the current tests); by
default the run starts from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from scripts import ROOT

#: Every module must kill at least this share of its non-equivalent mutants.
GOAL = 0.90
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.txt"
RESULTS = ROOT / "mutation-results.json"
MUTANTS = ROOT / "mutants"
PACKAGE = "flink_agents_ext"
#: A re-checked timeout must still run this many times longer than the clean tests...
RECHECK_FACTOR = 5
#: ...plus this many seconds.
RECHECK_SLACK_S = 60

_KILLED, _SURVIVED, _NO_TESTS, _TIMEOUT = (1, 3), 0, (5, 33), 36


@dataclass
class Mutant:
    """One mutant: where it is, what it changes, what became of it."""

    name: str
    module: str  # path below the package, e.g. "actions/runner.py"
    function: str  # "Class.method" or "function"
    exit_code: int | None
    status: str = ""
    mutation: str = ""
    reason: str = ""  # for an equivalent mutant


def mutmut_config() -> dict[str, Any]:
    """``[tool.mutmut]`` of pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["tool"]["mutmut"])


def run_mutmut(workers: int, names: list[str] | None = None) -> None:
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut), "run", "--max-children", str(workers), *(names or [])]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def function_of(name: str) -> str:
    """``Class.method`` or ``function`` of a mutmut mutant name."""
    mangled = name.partition("__mutmut_")[0].rpartition(".")[2]
    if "ǁ" in mangled:
        _, cls, fn = mangled.split("ǁ")
        return f"{cls}.{fn}"
    return mangled.removeprefix("x_")


def describe(diff: str) -> str:
    """A mutant's change as ``old -> new`` from mutmut's diff of the function."""
    old = [ln[1:].strip() for ln in diff.splitlines()
           if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in diff.splitlines()
           if ln.startswith("+") and not ln.startswith("+++")]
    return f"{' / '.join(old)} -> {' / '.join(new)}"


def load_mutants(modules: list[str]) -> list[Mutant]:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    found = []
    for path in modules:
        with open(MUTANTS / (path + ".meta")) as f:
            codes = json.load(f)["exit_code_by_key"]
        for name, code in sorted(codes.items()):
            m = Mutant(name, path.removeprefix(PACKAGE + "/"), function_of(name), code)
            m.mutation = describe(get_diff_for_mutant(name, path=path))
            found.append(m)
    return found


def tests_and_duration(name: str) -> tuple[list[str], float]:
    """The tests mutmut ran for mutant ``name`` and their clean duration."""
    with open(MUTANTS / "mutmut-stats.json") as f:
        stats = json.load(f)
    tests = sorted(stats["tests_by_mangled_function_name"].get(
        name.partition("__mutmut_")[0], []))
    return tests, sum(stats["duration_by_test"].get(t, 0.0) for t in tests)


def recheck(m: Mutant, pytest_args: list[str]) -> str:
    """Run the tests of a timed-out or crashed mutant again by themselves: "killed" (a test
    failed), "survived" (all passed) or "timeout" (still not done after the limit)."""
    tests, duration = tests_and_duration(m.name)
    if not tests:
        return "no tests"
    limit = RECHECK_FACTOR * duration + RECHECK_SLACK_S
    env = dict(os.environ, MUTANT_UNDER_TEST=m.name)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", *pytest_args, *tests]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=MUTANTS, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        code = None
    verdict = "timeout" if code is None else ("survived" if code == 0 else "killed")
    print(f"  recheck {m.name}: {verdict} after {time.monotonic() - started:.0f}s "
          f"(clean tests {duration:.1f}s, limit {limit:.0f}s)", flush=True)
    return verdict


def classify(mutants: list[Mutant], pytest_args: list[str]) -> None:
    for m in mutants:
        if m.exit_code in _KILLED:
            m.status = "killed"
        elif m.exit_code == _SURVIVED:
            m.status = "survived"
        elif m.exit_code in _NO_TESTS:
            m.status = "no tests"
        else:  # timeout, crash, not checked: see for ourselves
            verdict = recheck(m, pytest_args)
            m.status = "killed" if verdict == "timeout" else verdict


@dataclass
class Equivalent:
    module: str
    function: str
    pattern: re.Pattern[str]
    line: str
    reason: str
    used: int = 0


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    """The lines ``module | function | mutation | reason`` of the equivalents file."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        module, function, rest = ([*line.split(" | ", 2), "", ""])[:3]
        mutation, _, reason = rest.rpartition(" | ")
        if not (module and function and mutation and reason.strip()):
            raise SystemExit(f"{path}:{number}: expected 'module | function | mutation | "
                             f"reason', got {line!r}")
        regex = ".*".join(re.escape(part) for part in mutation.strip().split("*"))
        found.append(Equivalent(module.strip(), function.strip(), re.compile(regex + r"\Z"),
                                line, reason.strip()))
    return found


def explain(mutants: list[Mutant], equivalents: list[Equivalent]) -> None:
    for m in mutants:
        if m.status not in ("survived", "no tests"):
            continue
        for e in equivalents:
            if e.module == m.module and e.function == m.function and \
                    e.pattern.match(m.mutation):
                m.status, m.reason = "equivalent", e.reason
                e.used += 1
                break


def summarise(mutants: list[Mutant], modules: list[str]) -> dict[str, dict[str, Any]]:
    summary = {}
    for path in modules:
        module = path.removeprefix(PACKAGE + "/")
        of = [m for m in mutants if m.module == module]
        killed = sum(m.status == "killed" for m in of)
        equivalent = sum(m.status == "equivalent" for m in of)
        counted = len(of) - equivalent
        summary[module] = {"mutants": len(of), "killed": killed, "equivalent": equivalent,
                           "survived": counted - killed,
                           "score": round(killed / counted, 4) if counted else 1.0}
    return summary


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", PACKAGE, "tests"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the results of an earlier run in mutants/")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: write the results of mutants/ again (after an "
                             "edit of the equivalents file)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # mutmut reads its configuration and writes mutants/ here
    config = mutmut_config()
    modules = list(config["only_mutate"])
    started, commit = time.monotonic(), git_commit()
    if args.report:
        pass
    elif args.keep and (MUTANTS / "mutmut-stats.json").exists():
        # Tests may have changed since: which test calls what is collected again, new and
        # changed mutants are tested, then every earlier survivor again.
        previous = [name for path in modules
                    for name, code in json.loads((MUTANTS / (path + ".meta")).read_text())
                    ["exit_code_by_key"].items() if code not in _KILLED]
        (MUTANTS / "mutmut-stats.json").unlink()
        run_mutmut(args.workers)
        if previous:
            run_mutmut(args.workers, previous)
    else:
        shutil.rmtree(MUTANTS, ignore_errors=True)
        run_mutmut(args.workers)
    mutants = load_mutants(modules)
    classify(mutants, list(config.get("pytest_add_cli_args", [])))
    equivalents = load_equivalents()
    explain(mutants, equivalents)
    summary = summarise(mutants, modules)
    survivors = [{"module": m.module, "function": m.function, "mutation": m.mutation,
                  "status": m.status, "mutant": m.name}
                 for m in mutants if m.status in ("survived", "no tests")]
    results = {
        "commit": commit,
        "seconds": round(time.monotonic() - started),
        "workers": args.workers,
        "goal": GOAL,
        "modules": summary,
        "survivors": survivors,
        "unused_equivalents": [e.line for e in equivalents if not e.used],
    }
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    for s in survivors:
        print(f"SURVIVED {s['module']} | {s['function']} | {s['mutation']}  ({s['mutant']}, "
              f"{s['status']})")
    for line in results["unused_equivalents"]:
        print(f"UNUSED EQUIVALENT {line}")
    print(f"{'module':<24}{'mutants':>8}{'killed':>8}{'equiv':>7}{'survived':>9}{'score':>8}")
    for module, s in summary.items():
        print(f"{module:<24}{s['mutants']:>8}{s['killed']:>8}{s['equivalent']:>7}"
              f"{s['survived']:>9}{s['score']:>8.3f}")
    print(f"wrote {RESULTS.name} ({results['seconds']}s)")
    return 0 if all(s["score"] >= GOAL for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
