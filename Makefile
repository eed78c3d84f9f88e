# flink-agents-ext: every target creates what it needs (venv, dependencies, jar) when missing
# and reuses it when present.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fae-installed-$(shell cat setup.py constraints.txt | sha1sum | cut -c1-12)

.PHONY: help setup jar run kafka-broker demo test test-fast lint bench mutate fuzz clean

help:
	@echo "make run       set up, then run the main job on the local mini-cluster"
	@echo "               (FAIL_AFTER=0 for no injected failure, CONFIG=conf/... for another profile)"
	@echo "make demo      the checkpoint-callback demo job"
	@echo "make test      set up, then lint and run the whole test suite"
	@echo "make test-fast unit tests only (no Flink job)"
	@echo "make lint      ruff + mypy"
	@echo "make bench     benchmarks, side by side; writes bench-results.json"
	@echo "make mutate    mutation testing of the protocol core; writes mutation-results.json"
	@echo "               (MUTATE_WORKERS=2 to test two mutants at once)"
	@echo "make bench-anchor  the same agent on Apache Flink Agents 0.3.1 and on this package;"
	@echo "               writes bench-results-anchor.json (BENCH_ANCHOR_ARGS=--quick for a smoke run)"
	@echo "make fuzz      random runs of the protocol model until a counterexample or FUZZ_SECONDS"
	@echo "               (FUZZ_EXAMPLES, FUZZ_STEPS, FUZZ_ENABLE=switch,...|all; README, Testing)"
	@echo "make jar       build the bridge jar (done automatically at first use)"
	@echo "make clean     remove build output (keeps the venv)"

$(STAMP): setup.py constraints.txt
	@bash scripts/ensure-toolchain.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,postgres,bench,kafka]" 2>&1 \
		| grep -v "^WARNING: Location" || true
	@$(PY) -c "import pyflink, flink_agents_ext" || (echo "dependency install failed" >&2; exit 1)
	@rm -f $(VENV)/.fae-installed-*
	@touch $@

setup: $(STAMP)

jar: setup
	$(PY) -c "import sys, flink_agents_ext.jar as j; sys.exit(j.main())"

CONFIG ?= conf/local.yaml
FAIL_AFTER ?= 800

run: jar kafka-broker
	$(PY) jobs/support_triage.py --config $(CONFIG) --fail-after $(FAIL_AFTER)

# A profile whose Kafka bootstrap is on 127.0.0.1 gets the throwaway broker on that port
# (scripts/kafka-test-server.sh, data in .kafka/); started once, reused after.
kafka-broker: setup
	@port=$$(sed -n 's/^ *bootstrap_servers: *127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' $(CONFIG) | head -n 1); \
	if [ -n "$$port" ]; then FAE_KAFKA_PORT=$$port bash scripts/kafka-test-server.sh start >/dev/null; fi

demo: jar
	$(PY) jobs/checkpoint_demo.py

lint: setup
	$(PY) -m ruff check flink_agents_ext jobs tests bench scripts
	$(PY) -m mypy

# The suite runs on TEST_WORKERS parallel workers (pytest-xdist; most of a Flink test's time
# is waiting for checkpoints and JVMs): tests that share a server or the cluster are kept on
# one worker (tests/workers.py). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 3
test: jar lint
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

test-fast: setup
	$(PY) -m pytest -m "not flink"

bench: jar
	$(PY) -m bench.run_all

# Mutation testing (scripts/mutate.py; modules and tests in [tool.mutmut] of pyproject.toml).
# mutmut is pinned: scripts/mutate.py reads its result files.
MUTMUT_VERSION := 3.8.1
MUTATE_WORKERS ?= 1

mutate: setup
	@$(PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('mutmut') != '$(MUTMUT_VERSION)')" \
		2>/dev/null || $(PY) -m pip install -q "mutmut==$(MUTMUT_VERSION)"
	$(PY) -m scripts.mutate --workers $(MUTATE_WORKERS)

# Not part of `make test`: installs flink-agents 0.3.1 into its own venv (bench/anchor/install.py),
# starts the throwaway Kafka broker and PostgreSQL server, runs both sides (README, "Against
# Apache Flink Agents").
BENCH_ANCHOR_ARGS ?=
.PHONY: bench-anchor
bench-anchor: jar
	$(PY) -m bench.anchor $(BENCH_ANCHOR_ARGS)

# Long random runs of the protocol model (tests/protocol_model.py; README "Testing the
# protocol"): prints the minimal counterexample and fails, or passes after FUZZ_SECONDS.
FUZZ_SECONDS  ?= 300
FUZZ_EXAMPLES ?= 200
FUZZ_STEPS    ?= 60
FUZZ_ENABLE   ?=
fuzz: setup
	$(PY) -m tests.protocol_fuzz --seconds $(FUZZ_SECONDS) --examples $(FUZZ_EXAMPLES) \
		--steps $(FUZZ_STEPS) $(if $(FUZZ_ENABLE),--enable $(FUZZ_ENABLE))

clean:
	rm -rf flink_agents_ext/_build build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache \
		mutants mutation-results.json

# ---- cluster: a local standalone Flink cluster (scripts/cluster.sh; README "Running on a standalone Flink cluster")
# make cluster-start cluster-submit cluster-checkpoints cluster-savepoint cluster-resume \
#      cluster-wait cluster-summary cluster-stop      (CONFIG=... for another job profile)
# make cluster-submit-py JOB=mine.py ARGS="--out /abs/dir"   a pipeline of your own
# The cluster's state lives in out/cluster (FAE_CLUSTER_DIR); REST/web UI on :8081.
CLUSTER        := bash scripts/cluster.sh
CLUSTER_CONFIG ?= conf/cluster.yaml
# CONFIG above defaults to the local profile: the cluster targets use conf/cluster.yaml unless
# CONFIG is given on the command line or in the environment.
CLUSTER_JOB_CONFIG = $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),$(CLUSTER_CONFIG))

.PHONY: cluster-start cluster-submit cluster-submit-py cluster-checkpoints cluster-savepoint cluster-resume \
	cluster-wait cluster-summary cluster-status cluster-logs cluster-stop cluster-pg

cluster-start: jar
	$(CLUSTER) start

# The profile's PostgreSQL store: start (or reuse) the throwaway server when it is configured.
cluster-pg: setup
	@if grep -Eq '^\s*backend:\s*postgres' $(CLUSTER_JOB_CONFIG); then \
		bash scripts/pg-test-server.sh start >/dev/null; fi

cluster-submit: jar cluster-pg
	$(CLUSTER) submit --config $(CLUSTER_JOB_CONFIG)

JOB  ?=
ARGS ?=
cluster-submit-py: jar
	@test -n "$(JOB)" || (echo 'usage: make cluster-submit-py JOB=mine.py [ARGS="..."]' >&2; exit 2)
	$(CLUSTER) submit-py $(JOB) $(ARGS)

cluster-checkpoints: setup
	$(CLUSTER) checkpoints

cluster-savepoint: setup
	$(CLUSTER) savepoint

cluster-resume: jar cluster-pg
	$(CLUSTER) resume

cluster-wait: setup
	$(CLUSTER) wait

cluster-summary: setup
	$(CLUSTER) summary

cluster-status: setup
	$(CLUSTER) status

cluster-logs: setup
	$(CLUSTER) logs

cluster-stop: setup
	$(CLUSTER) stop
# ---- end of cluster section -------------------------------------------------------------------

# ---- chaos: fault injection (chaos/; python -m chaos.run --help) -----------------------------
# make chaos        60 mini-cluster trials, each with a failure at a random point in a drawn
#                   configuration (mode, max_in_flight, commit, retention, parallelism, savepoint
#                   resume / fresh start on a used namespace, SQLite/PostgreSQL/Kafka), plus a
#                   PostgreSQL restart and two killed TaskManagers (commit each, group); each
#                   checked against a failure-free run and its configuration's expectation.
#                   Prints tables per failure point and configuration, writes chaos-results.json.
# make chaos-short  the short form the test suite runs (tests/test_chaos.py)
# CHAOS_ARGS=...    e.g. "--seed 7", "--trials 30", "--no-cluster", "--no-kafka"
CHAOS_ARGS ?=

.PHONY: chaos chaos-short chaos-lint

chaos: jar
	$(PY) -m chaos.run $(CHAOS_ARGS)

chaos-short: jar
	$(PY) -m chaos.run --short $(CHAOS_ARGS)

# `make lint` checks chaos/ too.
lint: chaos-lint
chaos-lint: setup
	$(PY) -m ruff check chaos
# ---- end of chaos section ---------------------------------------------------------------------
