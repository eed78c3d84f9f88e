"""Plain-file output of the probe jobs: a map function that writes every record as a line,
each function instance to a file of its own, and the reader of those files."""

from __future__ import annotations

import glob
import os
import uuid
from typing import Any

from pyflink.datastream import MapFunction

__all__ = ["LineWriter", "read_lines"]


class LineWriter(MapFunction):
    """Appends every record (a string) to ``<directory>/output-<instance>.txt``, flushed
    at once (a failure loses nothing written); the directory is created."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def open(self, runtime_context: Any) -> None:
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"output-{uuid.uuid4().hex[:12]}.txt")
        self.file = open(path, "a")

    def map(self, value: str) -> str:
        self.file.write(value + "\n")
        self.file.flush()
        return value

    def close(self) -> None:
        self.file.close()


def read_lines(directory: str) -> list[str]:
    """Every line the :class:`LineWriter` instances wrote to ``directory``."""
    lines: list[str] = []
    for path in glob.glob(os.path.join(directory, "output-*.txt")):
        with open(path) as fh:
            lines.extend(line.rstrip("\n") for line in fh)
    return lines
