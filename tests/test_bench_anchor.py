"""The anchor benchmark's pure logic (no Flink, no anchor): the probe's arithmetic, the
ratios and their direction, and the source patches that let the anchor's jars build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.anchor import install, probe, report
from bench.anchor.sides import Outcome


def test_probe_rate_and_recovery(tmp_path: Path) -> None:
    path = str(tmp_path / "p")
    fail = probe.FailOnce(path, at=3)
    out = probe.OutputProbe(path, fail_at=3)
    out.open()
    probe.mark_input(path)
    probe.mark_input(path)  # once per process
    for i in range(3):
        fail.check(i)
        out.map((i, "x"))
    with pytest.raises(RuntimeError, match="injected failure at input 3"):
        fail.check(3)
    fail.check(3)  # only once: the marker file remembers
    out.close()
    restarted = probe.OutputProbe(path, fail_at=3)
    restarted.open()
    for i in (2, 3, 4):  # 2 is a replay, 3 the first new output
        restarted.map({"i": i})
    restarted.close()
    rows = probe.read(path)
    assert sum("input" in r for r in rows) == 1
    first_input = next(r["input"] for r in rows if "input" in r)
    fail_t = next(r["fail"] for r in rows if "fail" in r)
    new_t = next(r["first_new"] for r in rows if "first_new" in r)
    s = probe.summarise(rows, expected=5)
    last = max(r["last"] for r in rows if "outputs" in r)
    assert s["rate"] == pytest.approx(5 / (last - first_input))
    assert s["outputs"] == 6
    assert s["recovery_s"] == pytest.approx(new_t - fail_t)
    assert next(r["i"] for r in rows if "first_new" in r) == 3
    assert s["first_output_after_failure_s"] is not None
    assert s["first_output_after_failure_s"] <= s["recovery_s"]


def test_probe_without_failure_has_no_recovery(tmp_path: Path) -> None:
    path = str(tmp_path / "p")
    out = probe.OutputProbe(path, fail_at=0)
    out.open()
    probe.mark_input(path)
    out.map(7)
    out.close()
    s = probe.summarise(probe.read(path), expected=1)
    assert s["recovery_s"] is None and s["outputs"] == 1


def _o(side: str, rate: float | None = None, rec: float | None = None,
       ok: bool = True) -> Outcome:
    return Outcome(side, "x", ok, {"rate": rate, "recovery_s": rec},
                   error="" if ok else "boom")


def test_ratios_take_our_best_store_and_point_the_right_way() -> None:
    trivial = {"anchor": _o("anchor", 100.0), "sqlite": _o("sqlite", 300.0),
               "kafka": _o("kafka", 150.0)}
    slow = {"anchor": _o("anchor", 50.0), "sqlite": _o("sqlite", 25.0)}
    recovery = {"anchor": _o("anchor", rec=20.0), "sqlite": _o("sqlite", rec=4.0),
                "kafka": _o("kafka", rec=2.0)}
    r = report.summarise(trivial, slow, recovery, {}, 100_000, 100_000)
    assert r["anchor_ratio_throughput_trivial"] == 3.0
    assert r["anchor_ratio_throughput_trivial_store"] == "sqlite"
    assert r["anchor_ratio_throughput_slow_calls"] == 0.5
    assert r["anchor_ratio_recovery"] == 10.0  # anchor's time / ours: higher is better
    assert r["anchor_ratio_recovery_store"] == "kafka"
    json.dumps(r)


def test_ratios_compare_recovery_at_the_anchors_scale_and_report_its_failures() -> None:
    recovery = {"anchor": _o("anchor", rec=9.0), "sqlite": _o("sqlite", rec=1.0)}
    same = {"sqlite": _o("sqlite", rec=3.0)}
    failed = {"anchor": _o("anchor", ok=False), "sqlite": _o("sqlite", 10.0)}
    r = report.summarise(failed, failed, recovery, same, 100_000, 20_000)
    assert r["anchor_ratio_recovery"] == 3.0
    assert r["anchor_ratio_recovery_runs_before_failure"] == 20_000
    assert r["anchor_ratio_throughput_trivial"] is None
    assert r["anchor"]["errors"] == {"a": "boom", "b": "boom"}
    assert r["ours"]["sqlite"]["recovery_s"] == 1.0
    assert r["ours"]["sqlite"]["recovery_s_at_anchor_scale"] == 3.0


def test_source_patches_remove_fluss_and_integrations(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / Path(install._FLUSS_STORE).parent).mkdir(parents=True)
    (src / install._FLUSS_STORE).write_text("class FlussActionStateStore {}")
    (src / Path(install._MANAGER).parent).mkdir(parents=True)
    (src / install._MANAGER).write_text(
        "import org.apache.flink.agents.runtime.actionstate.FlussActionStateStore;\n"
        "x; actionStateStore = new FlussActionStateStore(config);\n")
    dep = ("        <dependency>\n            <groupId>{g}</groupId>\n"
           "            <artifactId>{a}</artifactId>\n        </dependency>\n")
    (src / "runtime/pom.xml").write_text(
        "<deps>\n" + dep.format(g="org.apache.kafka", a="kafka-clients")
        + dep.format(g="org.apache.fluss", a="fluss-client") + "</deps>\n")
    (src / "dist").mkdir()
    (src / "dist/pom.xml").write_text(
        "<deps>\n" + dep.format(g="org.apache.flink", a="flink-agents-runtime")
        + dep.format(g="org.apache.flink", a="flink-agents-integrations-mcp") + "</deps>\n")
    for _ in range(2):  # idempotent
        install.remove_fluss(src)
        install.remove_integrations(src)
    assert not (src / install._FLUSS_STORE).exists()
    manager = (src / install._MANAGER).read_text()
    assert "import" not in manager and "UnsupportedOperationException" in manager
    runtime = (src / "runtime/pom.xml").read_text()
    assert "kafka-clients" in runtime and "fluss" not in runtime
    dist = (src / "dist/pom.xml").read_text()
    assert "flink-agents-runtime" in dist and "integrations" not in dist
    assert dist.count("<dependency>") == dist.count("</dependency>") == 1
