"""The anchor benchmark (``make bench-anchor``, ``python -m bench.anchor``): the same agent on
Apache Flink Agents 0.3.1 and on this package. Imports nothing at package level: the anchor's
job imports :mod:`bench.anchor.probe` from the anchor's own virtual environment."""
