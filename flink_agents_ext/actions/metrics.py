"""What the runs of one subtask did, counted, and published to Flink's metrics at a bounded
rate (in thread mode each counter increment is a call into Java, too slow per record)."""

from __future__ import annotations

import time
from typing import Any, Callable

from flink_agents_ext.actions.runner import RunResult

#: Counter names in :meth:`DurableAgentFunction.stats`.
STAT_NAMES = ("runs", "actions_run", "actions_replayed", "durable_calls_run",
              "durable_calls_replayed", "records_pruned", "dead_letters", "input_mismatches")
#: The counters also published as Flink metrics (group ``flink_agents_ext``).
#: ``input_mismatches``: recorded actions not replayed because their recorded triggering
#: event differs from the event now (see :func:`~flink_agents_ext.actions.runner.execute_run`).
METRIC_COUNTERS = ("actions_run", "actions_replayed", "durable_calls_replayed",
                   "records_pruned", "dead_letters", "input_mismatches")
#: Levels (values that also go down) published as counters moved by their change at each
#: publication: a Python gauge would be called by Flink's metrics thread, which in thread
#: mode can reach the embedded interpreter after the task closed it (a TaskManager died so,
#: SIGSEGV in pemja under ``MetricGauge.getValue``).
METRIC_LEVELS = ("store_records", "runs_in_flight")
#: Most seconds between two publications of the counters to Flink's metrics.
METRICS_INTERVAL_S = 1.0
#: The store's record count is measured again every this many prunes (estimated between).
MEASURE_EVERY_PRUNES = 100


class RunMetrics:
    """The counters of one subtask (always current, :attr:`stats`) and the store's record
    count, published to Flink as counters ``METRIC_COUNTERS`` and the levels
    ``METRIC_LEVELS`` (``store_records``, ``runs_in_flight``; counters too, see there) in the
    group ``flink_agents_ext``: at most every :data:`METRICS_INTERVAL_S`, at :meth:`publish`
    (snapshots, dead letters) and on close."""

    def __init__(self) -> None:
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        #: Records of the namespace in the store, as last measured or estimated.
        self.store_records = 0
        self._published = dict.fromkeys(STAT_NAMES, 0)
        self._counters: dict[str, Any] = {}
        self._levels: dict[str, Any] = {}
        self._level_values = dict.fromkeys(METRIC_LEVELS, 0)
        self._runs_in_flight: Callable[[], int] = lambda: 0
        self._due = 0.0
        self._prunes = 0

    def open(self, metric_group: Any, runs_in_flight: Callable[[], int],
             store_records: int) -> None:
        """Register the metrics in ``metric_group`` (the runtime context's)."""
        group = metric_group.add_group("flink_agents_ext")
        self._counters = {name: group.counter(name) for name in METRIC_COUNTERS}
        self._levels = {name: group.counter(name) for name in METRIC_LEVELS}
        self._runs_in_flight = runs_in_flight
        self.store_records = store_records
        self._due = time.monotonic() + METRICS_INTERVAL_S

    def account(self, result: RunResult) -> None:
        """Count a finished run (publishing if the interval has passed)."""
        self.store_records += result.actions_run + result.calls.executed
        stats = self.stats
        stats["runs"] += 1
        stats["actions_run"] += result.actions_run
        stats["actions_replayed"] += result.actions_replayed
        stats["durable_calls_run"] += result.calls.executed
        stats["durable_calls_replayed"] += result.calls.replayed
        stats["input_mismatches"] += result.input_mismatches
        if time.monotonic() >= self._due:
            self.publish()

    def dead_letter(self) -> None:
        """Count a dead letter and publish at once (rare)."""
        self.stats["dead_letters"] += 1
        self.publish()

    def pruned(self, count: int, measure: Callable[[], int]) -> None:
        """Count ``count`` pruned records (once per checkpoint); ``measure()`` returns the
        store's true record count, called every :data:`MEASURE_EVERY_PRUNES` prunes."""
        self.stats["records_pruned"] += count
        self._prunes += 1
        if self._prunes % MEASURE_EVERY_PRUNES == 0:
            self.store_records = measure()
        else:
            self.store_records = max(0, self.store_records - count)
        self.publish()

    def publish(self) -> None:
        """Add the counts since the last publication to the Flink counters, and move the
        levels' counters to their current values."""
        stats, published = self.stats, self._published
        for name, counter in self._counters.items():
            delta = stats[name] - published[name]
            if delta:
                counter.inc(delta)
                published[name] = stats[name]
        if self._levels:
            now = {"store_records": self.store_records, "runs_in_flight": self._runs_in_flight()}
            for name, counter in self._levels.items():
                delta = now[name] - self._level_values[name]
                if delta > 0:
                    counter.inc(delta)
                elif delta < 0:
                    counter.dec(-delta)
                self._level_values[name] = now[name]
        self._due = time.monotonic() + METRICS_INTERVAL_S
