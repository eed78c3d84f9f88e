"""Clear errors for a wrong PyFlink, a missing JDK, a bad jar or bad arguments; and the jar
build itself (real javac)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from flink_agents_ext import _compat, jar, process_with_checkpoints
from flink_agents_ext.environment import configure_environment
from flink_agents_ext.errors import JavaToolchainError, UnsupportedFlinkVersionError


def test_wrong_flink_version_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "installed_flink_version", lambda: "2.2.0")
    with pytest.raises(UnsupportedFlinkVersionError,
                       match=r"needs apache-flink==2\.3\.0 \(found: 2\.2\.0\)"):
        _compat.check_flink_version()
    monkeypatch.setattr(_compat, "installed_flink_version", lambda: None)
    with pytest.raises(UnsupportedFlinkVersionError, match="not installed"):
        _compat.check_flink_version()


def test_missing_javac_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("FLINK_AGENTS_EXT_BUILD_DIR", str(tmp_path / "build"))
    with pytest.raises(JavaToolchainError, match="'javac' was not found"):
        jar.jar_path()


def test_prebuilt_jar_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLINK_AGENTS_EXT_JAR", str(tmp_path / "missing.jar"))
    with pytest.raises(JavaToolchainError, match="points at a missing file"):
        jar.jar_path()


def test_jar_is_built_once_and_holds_both_operators(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("FLINK_AGENTS_EXT_BUILD_DIR", str(tmp_path))
    built = jar.jar_path()
    assert built.parent == tmp_path and built.name.startswith("flink-agents-ext-")
    names = zipfile.ZipFile(built).namelist()
    for cls in ("CheckpointingEmbeddedKeyedProcessOperator",
                "CheckpointingExternalKeyedProcessOperator"):
        assert f"org/flinkagentsext/{cls}.class" in names
    mtime = built.stat().st_mtime
    assert jar.jar_path() == built and built.stat().st_mtime == mtime  # reused


def test_bad_arguments_fail_before_any_job() -> None:
    with pytest.raises(ValueError, match="execution_mode must be one of"):
        configure_environment(object(), "fibers")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a KeyedStream"):
        process_with_checkpoints(object(), object())  # type: ignore[arg-type]
