"""The anchor benchmark's ratios, raw figures and table."""

from __future__ import annotations

import os
from typing import Any, Optional

from bench import common
from bench.anchor.sides import Outcome

__all__ = ["as_dict", "machine", "say", "summarise", "table"]


def machine() -> dict[str, Any]:
    """The machine the run was made on, and its load when the run started."""
    return {**common.machine(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}


def as_dict(o: Outcome) -> dict[str, Any]:
    """An outcome as JSON."""
    return {"side": o.side, "case": o.figures.get("label", o.case), "ok": o.ok,
            "job_seconds": o.seconds, **{k: v for k, v in o.figures.items() if k != "label"},
            **({"error": o.error} if o.error else {})}


def say(o: Outcome) -> None:
    """One line per run while the benchmark goes."""
    if not o.ok:
        print(f"   FAILED ({o.seconds:.0f} s): {o.error}", flush=True)
        return
    f = o.figures
    parts = [f"{f['rate']:,.1f}/s" if f.get("rate") else ""]
    if f.get("recovery_s") is not None:
        parts.append(f"recovery {f['recovery_s']:.2f} s")
    print(f"   {' '.join(p for p in parts if p)} (job {o.seconds:.0f} s)", flush=True)


def _best(outcomes: dict[str, Outcome], key: str, low: bool = False
          ) -> tuple[Optional[str], Optional[float]]:
    """Our best side for ``key`` (highest, or lowest with ``low``) and its value."""
    values = {s: o.figures[key] for s, o in outcomes.items()
              if s != "anchor" and o.ok and o.figures.get(key) is not None}
    if not values:
        return None, None
    side = (min if low else max)(values, key=lambda s: values[s])
    return side, values[side]


def _anchor(outcomes: dict[str, Outcome], key: str) -> Optional[float]:
    o = outcomes.get("anchor")
    return o.figures.get(key) if o is not None and o.ok else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


def _store(o: Optional[Outcome]) -> Any:
    return o.figures.get("store") if o is not None and o.ok else None


def summarise(trivial: dict[str, Outcome], slow: dict[str, Outcome],
              recovery: dict[str, Outcome], same_scale: dict[str, Outcome],
              recovery_runs: int, anchor_recovery_runs: int) -> dict[str, Any]:
    """The ratios and raw figures of both sides."""
    t_side, t_ours = _best(trivial, "rate")
    s_side, s_ours = _best(slow, "rate")
    like = same_scale or recovery
    r_side, r_ours = _best(like, "recovery_s", low=True)
    t_anchor, s_anchor = _anchor(trivial, "rate"), _anchor(slow, "rate")
    r_anchor = _anchor(recovery, "recovery_s")
    errors = {f"{label}": o.error for label, d in
              (("a", trivial), ("b", slow), ("c", recovery)) for s, o in d.items()
              if s == "anchor" and not o.ok}
    ours: dict[str, Any] = {}
    for side in sorted({*trivial, *slow, *recovery} - {"anchor"}):
        r = recovery.get(side)
        ours[side] = {
            "trivial_records_per_s": trivial[side].figures.get("rate") if side in trivial else None,
            "slow_calls_runs_per_s": slow[side].figures.get("rate") if side in slow else None,
            "recovery_s": r.figures.get("recovery_s") if r is not None else None,
            "first_output_after_failure_s":
                r.figures.get("first_output_after_failure_s") if r is not None else None,
            "recovery_runs_before_failure": recovery_runs,
            "recovery_s_at_anchor_scale":
                same_scale[side].figures.get("recovery_s") if side in same_scale else None,
            "store_after_recovery_run": _store(r),
            "store_after_anchor_scale_run": _store(same_scale.get(side)),
            "stats_after_recovery_run": r.figures.get("stats") if r is not None else None,
        }
    anchor_rec = recovery.get("anchor")
    return {
        "anchor_ratio_throughput_trivial": _ratio(t_ours, t_anchor),
        "anchor_ratio_throughput_trivial_store": t_side,
        "anchor_ratio_throughput_slow_calls": _ratio(s_ours, s_anchor),
        "anchor_ratio_throughput_slow_calls_store": s_side,
        "anchor_ratio_recovery": _ratio(r_anchor, r_ours),
        "anchor_ratio_recovery_store": r_side,
        "anchor_ratio_recovery_runs_before_failure": anchor_recovery_runs,
        "anchor": {
            "trivial_records_per_s": t_anchor, "slow_calls_runs_per_s": s_anchor,
            "recovery_s": r_anchor,
            "first_output_after_failure_s": _anchor(recovery, "first_output_after_failure_s"),
            "recovery_runs_before_failure": anchor_recovery_runs,
            "store_after_recovery_run": _store(anchor_rec),
            "errors": errors,
        },
        "ours": ours,
    }


def _fmt(v: Any, spec: str = ",.1f") -> str:
    return "-" if v is None else format(v, spec)


def _store_line(store: Any, runs: int) -> str:
    if not store:
        return "-"
    if "error" in store:
        return f"inspection failed: {store['error']}"
    disk = store.get("disk_bytes")
    size = f"{disk / 1e6:.1f} MB" if disk is not None else "? MB"
    if "messages" in store:
        gone = store["tombstoned_keys"]
        return (f"{store['messages']:,} msgs, {store['live_keys']:,} live keys "
                f"({gone:,} tombstoned) of {runs:,} runs, {size}")
    return f"{store['records']:,} records left of {runs:,} runs, {size}"


def table(results: dict[str, Any]) -> None:
    """Print the side-by-side table."""
    a, ours = results.get("anchor", {}), results.get("ours", {})
    cols = ["anchor (kafka)", *ours]
    print("\n== the same agent: Apache Flink Agents 0.3.1 vs flink-agents-ext ==")
    print(f"{'measure':<34}" + "".join(f"{c:>16}" for c in cols))
    rows = [("(a) trivial call, rec/s", "trivial_records_per_s", ",.0f"),
            ("(b) 1 s calls x1024, runs/s", "slow_calls_runs_per_s", ",.1f"),
            ("(c) recovery s (own scale)", "recovery_s", ".2f"),
            ("    first output after failure s", "first_output_after_failure_s", ".2f"),
            ("    runs before failure", "recovery_runs_before_failure", ",d"),
            ("    recovery s at anchor's scale", "recovery_s_at_anchor_scale", ".2f")]
    for label, key, spec in rows:
        line = f"{label:<34}{_fmt(a.get(key), spec):>16}"
        line += "".join(f"{_fmt(v.get(key), spec):>16}" for v in ours.values())
        print(line)
    print("(d) store after (c):")
    scale = results.get("anchor_ratio_recovery_runs_before_failure") or 0
    for side, v in [("anchor", a), *ours.items()]:
        if v.get("store_after_anchor_scale_run"):
            print(f"    {side} ({scale:,} runs): "
                  f"{_store_line(v['store_after_anchor_scale_run'], scale)}")
        if v.get("store_after_recovery_run"):
            runs = v.get("recovery_runs_before_failure") or 0
            print(f"    {side} ({runs:,} runs): "
                  f"{_store_line(v['store_after_recovery_run'], runs)}")
    for label, err in (a.get("errors") or {}).items():
        print(f"anchor could not run ({label}): {err}")
    print(f"ratios: trivial {_fmt(results.get('anchor_ratio_throughput_trivial'), '.2f')} "
          f"({results.get('anchor_ratio_throughput_trivial_store')}), slow calls "
          f"{_fmt(results.get('anchor_ratio_throughput_slow_calls'), '.2f')} "
          f"({results.get('anchor_ratio_throughput_slow_calls_store')}), recovery "
          f"{_fmt(results.get('anchor_ratio_recovery'), '.1f')}x "
          f"({results.get('anchor_ratio_recovery_store')}, "
          f"{results.get('anchor_ratio_recovery_runs_before_failure'):,} runs before the "
          "failure)")
    print("goals: throughput ratios >= 1.0 (ours / anchor), recovery >= 10x faster")
