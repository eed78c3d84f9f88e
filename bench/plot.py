"""Draw ``bench-results/ratios.png``: each measured ratio (and the scale benchmark's CPU ms and
checkpoint ms) next to its goal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (result key, label, goal, True when higher is better)
RATIOS = [
    ("bridge_overhead_ratio_thread", "bridge vs stock\n(thread)", 0.8, True),
    ("bridge_overhead_ratio_process", "bridge vs stock\n(process)", 0.8, True),
    ("throughput_ratio_1k_keys", "durable vs stock\n1k keys", 0.5, True),
    ("throughput_ratio_100k_keys", "durable vs stock\n100k keys", 0.5, True),
    ("throughput_ratio_1k_keys_group_commit", "same, group\ncommit, 1k keys", 0.8, True),
    ("throughput_ratio_100k_keys_group_commit", "same, group\ncommit, 100k keys", 0.8, True),
    ("throughput_ratio_1k_keys_1ms_work", "durable vs stock\n1 ms work", 0.8, True),
    ("snapshot_cost_ratio_1m_vs_10k", "checkpoint cost\n1M / 10k keys", 2.0, False),
    ("baseline_snapshot_cost_ratio_1m_vs_10k", "full-scan baseline\n1M / 10k keys", 2.0, False),
    ("store_growth_ratio", "store growth\nend / midpoint", 1.1, False),
    ("async_speedup", "64 vs 1 runs in\nflight (speed-up)", 40.0, True),
    ("kafka_recovery_speedup_1m", "Kafka recovery, 1M\nmarker vs full scan", 10.0, True),
    ("scale_fraction_of_ideal_1024_async", "1,024 in flight,\nasync: of ideal", 0.95, True),
    ("scale_fraction_of_ideal_4096", "4,096 in flight,\nasync: of ideal", 0.75, True),
    ("scale_fraction_of_ideal_4096_sync", "4,096 in flight,\nsync: of ideal", 0.75, True),
    ("cpu_ms_per_run_4096", "CPU ms per run\n4,096 in flight", 0.3, False),
    ("checkpoint_ms_4096_in_flight", "checkpoint ms\n4,096 in flight", 500.0, False),
]


def plot(results: dict[str, Any], out_dir: Path) -> Path:
    """Write the chart (log scale: the values span 0.1 to 500) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, float(results[key]), goal, higher) for key, label, goal, higher in RATIOS
            if key in results]
    fig, ax = plt.subplots(figsize=(14, 6.5))
    xs = range(len(rows))
    colors = ["tab:gray" if label.startswith("full-scan") else
              "tab:green" if (v >= g if hi else v <= g) else "tab:red"
              for label, v, g, hi in rows]
    ax.bar(xs, [v for _, v, _, _ in rows], color=colors, width=0.6, label="measured")
    ax.scatter(xs, [g for _, _, g, _ in rows], marker="_", s=900, color="black", zorder=3,
               label="goal")
    for x, (_, value, _, _) in zip(xs, rows):
        ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs))
    # Slanted, one label per bar: side by side they ran into each other.
    ax.set_xticklabels([label.replace("\n", " ") for label, _, _, _ in rows], fontsize=8,
                       rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yscale("log")
    ax.set_ylabel("ratio, or the unit its label names (log scale)")
    machine = results.get("machine", {})
    ax.set_title(f"flink-agents-ext benchmarks: {machine.get('cores', '?')} cores, "
                 f"{machine.get('cpu', '?')}, {results.get('date', '')}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
