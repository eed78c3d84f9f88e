"""``make fuzz``: long random runs of the protocol model (:mod:`tests.protocol_model`) that
print a minimal counterexample. ``python -m tests.protocol_fuzz --help``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import Optional, Sequence

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.protocol_model import machine
from tests.protocol_reference import KNOWN_UNFIXED, enabled_from_env


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``make fuzz``: run the machine at random, round after round, until a counterexample
    (printed minimal, exit 1) or the time is up (exit 0)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m tests.protocol_fuzz",
                                     description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=float(env("FAE_FUZZ_SECONDS", "300")),
                        help="how long to run (FAE_FUZZ_SECONDS, default 300)")
    parser.add_argument("--examples", type=int, default=int(env("FAE_FUZZ_EXAMPLES", "200")),
                        help="examples per round (FAE_FUZZ_EXAMPLES, default 200)")
    parser.add_argument("--steps", type=int, default=int(env("FAE_FUZZ_STEPS", "60")),
                        help="steps per example (FAE_FUZZ_STEPS, default 60)")
    parser.add_argument("--enable", default=None,
                        help=f"comma-separated switches of rules that reach known bugs, or "
                             f"'all' (FAE_MODEL_ENABLE): {', '.join(sorted(KNOWN_UNFIXED))}")
    args = parser.parse_args(argv)
    # The function's warnings (a blocked run outliving close, refused restores) are
    # expected here; only the counterexample matters.
    logging.getLogger("flink_agents_ext").setLevel(logging.ERROR)
    if args.enable is not None:
        os.environ["FAE_MODEL_ENABLE"] = args.enable
    enabled = enabled_from_env()
    config = settings(max_examples=args.examples, stateful_step_count=args.steps,
                      deadline=None, database=None, derandomize=False, print_blob=True,
                      suppress_health_check=list(HealthCheck))
    started, rounds = time.monotonic(), 0
    print(f"fuzzing the protocol model for {args.seconds:.0f} s ({args.examples} examples "
          f"of up to {args.steps} steps per round; switches on: {sorted(enabled) or 'none'})",
          flush=True)
    while time.monotonic() - started < args.seconds:
        rounds += 1
        try:
            run_state_machine_as_test(machine(enabled), settings=config)
        except Exception as exc:  # any failure is a counterexample
            print(f"COUNTEREXAMPLE after {time.monotonic() - started:.0f} s, round {rounds}:")
            print("".join(traceback.format_exception(exc)), flush=True)
            return 1
        print(f"round {rounds}: {args.examples} examples passed "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    print(f"no counterexample in {rounds} rounds ({rounds * args.examples} examples, "
          f"{time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
