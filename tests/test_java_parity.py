"""The process-mode protocol constants are the same in the built Java operator and in Python.

The Java operator sends checkpoint signals to the Python worker as timer-type codes and reads
the snapshot's ledger back from a named broadcast state; Python decodes the same codes and
writes the same state (``flink_agents_ext/checkpoint/_process_mode.py``). Nothing else ties
the two: this test reads the constants out of the built jar with ``javap -constants``.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from flink_agents_ext import jar
from flink_agents_ext.checkpoint import _process_mode

OPERATOR = "org.flinkagentsext.CheckpointingExternalKeyedProcessOperator"
_CONSTANT = re.compile(r"static final (byte|int|java\.lang\.String) (\w+) = (.+);$")


@pytest.fixture(scope="module")
def java_constants() -> dict[str, object]:
    """The ``static final`` byte, int and String constants of the operator in the jar."""
    out = subprocess.run([jar.java_tool("javap"), "-p", "-constants", "-cp",
                          str(jar.jar_path()), OPERATOR],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    constants: dict[str, object] = {}
    for line in out.splitlines():
        match = _CONSTANT.search(line.strip())
        if match:
            kind, name, value = match.groups()
            constants[name] = (int(value) if kind != "java.lang.String"
                               else value.encode().decode("unicode_escape").strip('"'))
    assert constants, f"javap printed no constants:\n{out}"
    return constants


def test_signal_codes_match(java_constants: dict[str, object]) -> None:
    java = {k: v for k, v in java_constants.items() if k.startswith("SIGNAL_")}
    python = {k: getattr(_process_mode, k) for k in dir(_process_mode)
              if k.startswith("SIGNAL_")}
    assert java == python
    assert len(java) == 6 and len(set(java.values())) == 6  # distinct codes
    assert min(java.values()) > 1  # PyFlink's own timer types are 0 and 1


def test_return_state_and_loader_match(java_constants: dict[str, object]) -> None:
    assert java_constants["RETURN_STATE_NAME"] == _process_mode.RETURN_STATE_NAME
    assert java_constants["PYTHON_LOADER_MODULE"] == _process_mode.__name__
    assert callable(getattr(_process_mode, str(java_constants["PYTHON_LOADER_FUNCTION"])))
