"""The main job with the fault-injection hooks of :mod:`chaos.inject` (what ``make chaos``
runs, on the mini-cluster or submitted to a standalone cluster):

    python -m chaos.job --config F [--spec SPEC] [--bad-input] [--max-in-flight N]
                        [--parallelism P] [--mode thread|process] [--from-savepoint SP]
                        [--keep-namespace] [--summary-json FILE]

``--spec`` is a :class:`chaos.inject.ChaosSpec` (``none`` for none); ``--bad-input`` turns
the tickets of :mod:`chaos.inputs` bad inside the agent. Everything before the agent runs
with parallelism 1, so that each key's tickets arrive in the same order in every run,
whatever the agent's parallelism. A fresh run (no ``--from-savepoint``) empties the outputs
and, unless ``--keep-namespace``, the store namespace (``--keep-namespace``: a fresh start on
the namespace of an earlier job, as a careless redeploy would do).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pyflink.datastream import DataStream, KeyedStream

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chaos import inject
from jobs import support_triage as triage


class ChaosVariant(triage.Variant):
    """The main job instrumented by :class:`chaos.inject.ChaosHooks`."""

    upstream_parallelism = 1

    def __init__(self, hooks: inject.ChaosHooks, max_in_flight: int = 0) -> None:
        self.hooks = hooks
        self.max_in_flight = max_in_flight

    def key_by(self, parsed: DataStream) -> KeyedStream:
        """Keys are pickled here (no key type), so that an unencodable one reaches the agent."""
        return parsed.key_by(self.hooks.key_selector())

    def instrument(self, agent: Any, function_cls: type, store: Any) -> tuple[Any, type, Any]:
        """The agent, function class and store wrapped with the failure hooks."""
        return self.hooks.instrument(agent, function_cls, store)

    def function_options(self) -> dict[str, Any]:
        """``max_in_flight`` of the trial."""
        return {"max_in_flight": self.max_in_flight}


def main(argv: list[str] | None = None) -> int:
    """Run the instrumented job; print progress and the summary."""
    p = triage.arguments(__doc__ or "")
    p.add_argument("--spec", default="none",
                   help="inject one failure: none or POINT:TARGET:TRIGGER (chaos/inject.py)")
    p.add_argument("--bad-input", action="store_true",
                   help="tickets with a 'chaos' field turn bad in the agent (chaos/inputs.py)")
    p.add_argument("--max-in-flight", type=int, default=0, help="runs in flight per subtask")
    p.add_argument("--keep-namespace", action="store_true",
                   help="a fresh run that does not empty the store namespace first")
    args = p.parse_args(argv)
    try:
        inject.ChaosSpec.parse(args.spec)
    except ValueError as exc:
        p.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = triage.load(args)
    out_dir = os.path.abspath(cfg.output_dir)
    if not args.from_savepoint:
        triage.prepare_outputs(cfg, out_dir, files=inject.OUTPUT_FILES,
                               clear_namespace=not args.keep_namespace)
    hooks = inject.ChaosHooks(args.spec, args.bad_input, out_dir, triage.page_oncall,
                              triage.page_id)
    return triage.run(cfg, out_dir, savepoint=args.from_savepoint,
                      variant=ChaosVariant(hooks, args.max_in_flight),
                      summary_json=args.summary_json,
                      note=f", chaos {args.spec}, max_in_flight {args.max_in_flight}")


if __name__ == "__main__":
    sys.exit(main())
