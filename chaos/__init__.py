"""Fault injection for the main job (``make chaos``).

* :mod:`chaos.inject`: the hooks ``jobs/support_triage.py`` installs when run with
  ``--chaos SPEC`` and/or ``--chaos-bad-input`` (failure points inside actions, between a
  durable call and its record, in snapshots and completion notifications; bad-input tickets).
* :mod:`chaos.inputs`: the bad-input file (malformed JSON, unknown type, oversized, a result
  that cannot be serialised, a key that cannot be encoded...) and what each must produce.
* :mod:`chaos.run`: the harness: a failure-free reference run, then trials with a failure at
  a random point each (plus a killed TaskManager on a standalone cluster and a PostgreSQL
  restart), each checked against the reference; prints a table, writes
  ``chaos-results.json``.
"""
