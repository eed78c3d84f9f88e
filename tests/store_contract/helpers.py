"""Helpers shared by the store contract and the backend tests: record builders,
threads started together, a kill -9 durability check, processes creating one store at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    RecordId,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository root

#: Opens a new store object on the test's database.
StoreFactory = Callable[[], ActionStateStore]


def rid(ns: str, key: str = "k", seq: int = 1, action: str = "a",
        occurrence: int = 0) -> RecordId:
    """A record id with defaults for the parts a test does not care about."""
    return RecordId(ns, key, seq, action, occurrence)


def action_record(record_id: RecordId, tag: str = "", completed: bool = True,
                  size: int = 0) -> ActionRecord:
    """An action record whose payloads are derived from ``record_id`` and ``tag``."""
    base = f"{record_id}|{tag}".encode()
    pad = bytes(i % 251 for i in range(size))
    return ActionRecord(record_id, event=b"ev:" + base + pad, outputs=b"out:" + base,
                        events=b"evs:" + base, memory_updates=b"mem:" + base,
                        completed=completed)


def call_record(record_id: RecordId, position: int,
                status: CallStatus = CallStatus.OK, tag: str = "") -> CallRecord:
    """A call record; ``OK`` calls carry a result, ``ERROR`` calls an error."""
    if status is CallStatus.OK:
        return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status,
                          result=f"r{position}{tag}".encode())
    if status is CallStatus.ERROR:
        return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status,
                          error_type="builtins.ValueError", error_message=f"bad {tag}")
    return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status)


def fill(store: ActionStateStore, ns: str, key: str, seqs: range, calls: int = 2) -> int:
    """Write one action record and ``calls`` call records per sequence; return rows."""
    for seq in seqs:
        record_id = rid(ns, key, seq)
        store.put_action(action_record(record_id))
        for position in range(calls):
            store.put_call(call_record(record_id, position))
    return len(seqs) * (1 + calls)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads started together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writer threads did not finish"
    if errors:
        raise errors[0]


def check_put_survives_a_killed_process(open_source: str,
                                        reopen: Callable[[], ActionStateStore]) -> None:
    """Put an action record and a call in a process that then kills itself (``kill -9``,
    no close); ``reopen`` must find both. ``open_source`` is Python source assigning the
    store to ``store`` (imports included)."""
    script = "\n".join([
        "import os, signal",
        "from flink_agents_ext.store import ActionRecord, CallRecord, CallStatus, RecordId",
        open_source,
        "rid = RecordId('ns', 'k', 1, 'a', 0)",
        "store.put_action(ActionRecord(rid, b'e', b'o', b'v', b'm', True))",
        "store.put_call(CallRecord(rid, 0, 'f', 'd', CallStatus.OK, result=b'r'))",
        "os.kill(os.getpid(), signal.SIGKILL)"])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with reopen() as store:
        record_id = RecordId("ns", "k", 1, "a", 0)
        assert store.get_action(record_id) == ActionRecord(record_id, b"e", b"o", b"v", b"m",
                                                           True)
        assert [c.result for c in store.get_calls(record_id)] == [b"r"]


def check_processes_creating_at_once(open_source: str, reopen: Callable[[], ActionStateStore],
                                     writes: int, processes: int = 6) -> None:
    """``processes`` processes open the store (creating its schema) at the same instant, then
    each writes ``writes`` runs of its own key, pruning all but the last five as it goes;
    ``reopen`` must find five runs per process. ``open_source`` is Python source assigning
    the store to ``store`` (imports included)."""
    script = "\n".join([
        "import sys, time",
        "from flink_agents_ext.store import ActionRecord, RecordId",
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))",
        open_source,
        "with store:",
        f"    for seq in range({writes}):",
        "        store.put_action(ActionRecord(RecordId('ns', sys.argv[2], seq, 'a', 0),",
        "                                      b'e', b'o', b'v', b'm', True))",
        "        store.prune('ns', {sys.argv[2]: seq - 5})"])
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start), f"p{i}"], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with reopen() as store:
        assert store.size("ns") == processes * 5
