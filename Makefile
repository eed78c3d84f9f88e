# flink-agents-ext: every target creates what it needs (venv, dependencies, jar) when missing
# and reuses it when present.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fae-installed-$(shell cat setup.py constraints.txt | sha1sum | cut -c1-12)

.PHONY: help setup jar run demo test test-fast lint clean

help:
	@echo "make run       set up, then run the main job on the local mini-cluster"
	@echo "               (FAIL_AFTER=0 for no injected failure, CONFIG=conf/... for another profile)"
	@echo "make demo      the checkpoint-callback demo job"
	@echo "make test      set up, then lint and run the whole test suite"
	@echo "make test-fast unit tests only (no Flink job)"
	@echo "make lint      ruff + mypy"
	@echo "make jar       build the bridge jar (done automatically at first use)"
	@echo "make clean     remove build output (keeps the venv)"

$(STAMP): setup.py constraints.txt
	@bash scripts/ensure-toolchain.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,postgres]" 2>&1 \
		| grep -v "^WARNING: Location" || true
	@$(PY) -c "import pyflink, flink_agents_ext" || (echo "dependency install failed" >&2; exit 1)
	@rm -f $(VENV)/.fae-installed-*
	@touch $@

setup: $(STAMP)

jar: setup
	$(PY) -m flink_agents_ext.jar

CONFIG ?= conf/local.yaml
FAIL_AFTER ?= 800

run: jar
	$(PY) jobs/support_triage.py --config $(CONFIG) --fail-after $(FAIL_AFTER)

demo: jar
	$(PY) jobs/checkpoint_demo.py

lint: setup
	$(PY) -m ruff check flink_agents_ext jobs tests
	$(PY) -m mypy

test: jar lint
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not flink"

clean:
	rm -rf flink_agents_ext/_build build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
