#!/usr/bin/env bash
# A local standalone Flink cluster (1 JobManager + 1 TaskManager with 2 slots) from the
# pip package apache-flink, and the main job (jobs/support_triage.py) on it.
#
#   scripts/cluster.sh start                  start the cluster (idempotent); waits for REST
#                                             and a registered TaskManager
#   scripts/cluster.sh submit [--job FILE] [--config F] [JOB ARGS...]
#                                             flink run -d the main job, or the job script
#                                             FILE taking the same options (default F:
#                                             conf/cluster.yaml); saves the job id
#   scripts/cluster.sh submit-py FILE.py [ARGS...]
#                                             flink run -d a pipeline of your own (any
#                                             PyFlink script; ARGS must not start with an
#                                             option of 'flink run'); saves the job id
#   scripts/cluster.sh checkpoints            the job's checkpoints, over REST
#   scripts/cluster.sh savepoint              flink stop --savepointPath: stop the job with a
#                                             savepoint; saves the savepoint path
#   scripts/cluster.sh resume                 submit the same job again from that savepoint
#   scripts/cluster.sh wait [SECONDS]         wait until the job is FINISHED (default 900 s)
#   scripts/cluster.sh summary                the job's summary (outputs + store), no job run
#   scripts/cluster.sh status                 cluster processes, TaskManagers, slots, the job
#   scripts/cluster.sh stop                   stop the cluster (pid files; then leftovers of
#                                             this cluster only)
#   scripts/cluster.sh logs [LINES]           the tail of every cluster log (default 40)
#
# Everything lives in the cluster directory (FAE_CLUSTER_DIR, default out/cluster):
#   flink/conf/   config.yaml rendered from conf/flink/config.yaml.template, log4j files
#   flink/log/    JobManager, TaskManager and client logs     flink/pid/  pid files
#   checkpoints/  savepoints/   job-id   savepoint   job-args (job script, config and args
#   of the submit)
# Environment: FAE_REST_PORT (8081), FAE_JM_RPC_PORT (6123), FAE_START_TIMEOUT_S (120),
# FAE_SUBMIT_TIMEOUT_S (180), FAE_SAVEPOINT_TIMEOUT_S (180), FAE_WAIT_TIMEOUT_S (900),
# FAE_PYTHON (the venv's python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${FAE_PYTHON:-$ROOT/.venv/bin/python}"
CLUSTER_DIR="${FAE_CLUSTER_DIR:-$ROOT/out/cluster}"
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"
FLINK_DIR="$CLUSTER_DIR/flink"
export FLINK_CONF_DIR="$FLINK_DIR/conf"
export FLINK_LOG_DIR="$FLINK_DIR/log"
export FLINK_PID_DIR="$FLINK_DIR/pid"
# The ports of a running cluster are those it was started with.
if [ -z "${FAE_REST_PORT:-}" ] && [ -f "$FLINK_DIR/ports" ]; then
  read -r FAE_REST_PORT FAE_JM_RPC_PORT <"$FLINK_DIR/ports"
fi
REST_PORT="${FAE_REST_PORT:-8081}"
JM_RPC_PORT="${FAE_JM_RPC_PORT:-6123}"
REST="http://localhost:$REST_PORT"
START_TIMEOUT="${FAE_START_TIMEOUT_S:-120}"
SUBMIT_TIMEOUT="${FAE_SUBMIT_TIMEOUT_S:-180}"
SAVEPOINT_TIMEOUT="${FAE_SAVEPOINT_TIMEOUT_S:-180}"
WAIT_TIMEOUT="${FAE_WAIT_TIMEOUT_S:-900}"
MAIN_JOB="$ROOT/jobs/support_triage.py"
# The PostgreSQL store of conf/cluster.yaml reads its password from FAE_PG_PASSWORD: in the
# client (submit, summary) and in the TaskManager, which inherits it from 'start'. Default:
# the password of the throwaway server of scripts/pg-test-server.sh.
export FAE_PG_PASSWORD="${FAE_PG_PASSWORD:-flink_agents}"

die() { echo "cluster: error: $*" >&2; exit 1; }
say() { echo "cluster: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

for p in "$REST_PORT" "$JM_RPC_PORT"; do
  case "$p" in ''|*[!0-9]*) die "FAE_REST_PORT / FAE_JM_RPC_PORT must be port numbers" ;; esac
done
[ -x "$PY" ] || die "no python at $PY: run 'make setup' first (or set FAE_PYTHON)"
PF_HOME="$("$PY" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))' 2>/dev/null)" \
  || die "$PY cannot import pyflink: run 'make setup' first"
FLINK="$PF_HOME/bin/flink"
[ -x "$FLINK" ] || die "$FLINK is missing or not executable (broken apache-flink install?)"

# -- helpers ---------------------------------------------------------------------------------
# GET a REST path; prints the JSON body, fails (quietly) when the REST API does not answer.
rest() { curl -sf --max-time 5 "$REST$1"; }
# A REST answer (JSON on stdin) as text: show taskmanagers|running|started|status|state|
# completed|checkpoints|exceptions (scripts/cluster_tool.py).
TOOL="$ROOT/scripts/cluster_tool.py"
show() { "$PY" "$TOOL" show "$@"; }

pid_files() { ls "$FLINK_PID_DIR"/flink-*-standalonesession.pid \
                 "$FLINK_PID_DIR"/flink-*-taskexecutor.pid 2>/dev/null || true; }
# A live process started with our config directory (a pid in a stale pid file may have been
# reused by an unrelated process).
ours() { [ -n "$1" ] && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$FLINK_CONF_DIR/"; }
# The live pids recorded in our pid files.
recorded_pids() {
  local f p
  for f in $(pid_files); do
    while read -r p; do
      if ours "$p"; then echo "$p"; fi
    done <"$f"
  done
  return 0
}
jm_alive() {
  local f p
  for f in "$FLINK_PID_DIR"/flink-*-standalonesession.pid; do
    [ -f "$f" ] || continue
    while read -r p; do if ours "$p"; then return 0; fi; done <"$f"
  done
  return 1
}
# Processes of THIS cluster: the daemons and CLI clients started with our config directory
# (their command line holds -Dlog4j.configuration=file:<our conf dir>/log4j...), plus
# every descendant of those (e.g. Python workers in process mode).
our_processes() {
  local pattern roots p
  pattern="file:$(printf '%s' "$FLINK_CONF_DIR" | sed 's/[][\.*^$+?(){}|]/\\&/g')/log4j"
  roots="$( { recorded_pids; pgrep -f -- "$pattern" || true; } | sort -u)"
  for p in $roots; do echo "$p"; descendants "$p"; done | sort -u
}
descendants() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do echo "$c"; descendants "$c"; done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

job_id() {
  [ -s "$CLUSTER_DIR/job-id" ] || die "no job id in $CLUSTER_DIR/job-id: submit a job first ('cluster.sh submit')"
  cat "$CLUSTER_DIR/job-id"
}
job_state() { rest "/jobs/$1" | show state; }
require_rest() {
  rest /overview >/dev/null \
    || die "the cluster's REST API does not answer on $REST: start it with 'cluster.sh start'"
}
log_tail() {
  local f
  for f in "$FLINK_LOG_DIR"/*standalonesession*.log "$FLINK_LOG_DIR"/*taskexecutor*.log \
           "$FLINK_LOG_DIR"/*.out; do
    [ -s "$f" ] || continue
    echo "---- $f (last ${1:-20} lines)" >&2
    tail -n "${1:-20}" "$f" >&2
  done
}

# Wait until REST answers and at least one TaskManager is registered (prints /overview).
wait_ready() {
  local deadline overview
  deadline=$(( $(date +%s) + $1 ))
  while :; do
    if overview="$(rest /overview)" && [ "$(show taskmanagers <<<"$overview")" -ge 1 ]; then
      echo "$overview"
      return 0
    fi
    if ! jm_alive; then
      log_tail 30
      die "the JobManager process exited during start-up (logs above, all logs: $FLINK_LOG_DIR)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { log_tail 30; die "no TaskManager registered at $REST within $1 s (logs above)"; }
    sleep 0.5
  done
}

render_conf() {
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$FLINK_DIR/tmp" \
           "$CLUSTER_DIR/checkpoints" "$CLUSTER_DIR/savepoints"
  "$PY" "$TOOL" render-conf "$ROOT/conf/flink" "$FLINK_CONF_DIR" "$PF_HOME/conf" \
      "$CLUSTER_DIR" "$PY" "$REST_PORT" "$JM_RPC_PORT"
  echo "$REST_PORT $JM_RPC_PORT" >"$FLINK_DIR/ports"
  # The daemons' lib/: pyflink's lib/ plus the flink-python jar (pemja must be loaded once per
  # JVM, by the system class loader; see classloader.parent-first-patterns in the template).
  rm -rf "$FLINK_DIR/lib"
  mkdir -p "$FLINK_DIR/lib"
  ln -s "$PF_HOME"/lib/*.jar "$FLINK_DIR/lib/"
  ls "$PF_HOME"/opt/flink-python-*.jar >/dev/null 2>&1 || die "no flink-python jar in $PF_HOME/opt"
  ln -s "$PF_HOME"/opt/flink-python-*.jar "$FLINK_DIR/lib/"
}
# Run a cluster script (start-cluster.sh, stop-cluster.sh) with our lib/ and working directory.
daemon_script() {
  local lib="$PF_HOME/lib"
  [ -d "$FLINK_DIR/lib" ] && lib="$FLINK_DIR/lib"
  (cd "$ROOT" && FLINK_LIB_DIR="$lib" timeout --kill-after=5 60 "$PF_HOME/bin/$1")
}

# A zip of our package for -pyfs (no build output, no Java sources, no caches).
package_zip() {
  local zip="$FLINK_DIR/pyfiles/flink_agents_ext.zip"
  mkdir -p "$(dirname "$zip")"
  "$PY" "$TOOL" package-zip "$ROOT" "$zip"
  echo "$zip"
}

# flink run -d a job; $1: savepoint ('' for a fresh run), $2: the job script, then the job's
# arguments.
run_job() {
  local savepoint="$1" job="$2" zip out rc t0 id
  shift 2
  require_rest
  local jar
  jar="$("$PY" -W ignore::RuntimeWarning -m flink_agents_ext.jar 2>/dev/null | tail -n 1)" \
    && [ -f "$jar" ] || die "building the bridge jar failed (run: $PY -m flink_agents_ext.jar)"
  # The client imports the package from the -pyfs zip, which has no Java sources: it uses
  # this jar (the job script need not put the repository on sys.path).
  export FLINK_AGENTS_EXT_JAR="$jar"
  zip="$(package_zip)"
  local cmd=("$FLINK" run -d)
  [ -n "$savepoint" ] && cmd+=(-s "$savepoint")
  # The job's own arguments must not start with an option the flink CLI knows (e.g. -d): it
  # would take it for itself. The main job's start with --config.
  case "${1:-}" in -d|--detached|-s|--fromSavepoint|-p|--parallelism|-py|--python)
    die "the job's arguments start with '$1', an option of 'flink run': put one of the job's own first" ;;
  esac
  cmd+=(-py "$job" -pyfs "$zip" -pyexec "$PY" -pyclientexec "$PY" "$@")
  # A job taking the main job's options keeps its outputs and store when resumed.
  if [ -n "$savepoint" ] && [ "${1:-}" = --config ]; then cmd+=(--from-savepoint "$savepoint"); fi
  t0="$(now)"
  set +e
  out="$(cd "$ROOT" && timeout --kill-after=10 "$SUBMIT_TIMEOUT" "${cmd[@]}" 2>&1)"
  rc=$?
  set -e
  printf '%s\n' "$out" >"$FLINK_LOG_DIR/submit.out"
  [ "$rc" != 124 ] || die "flink run did not return within $SUBMIT_TIMEOUT s (output: $FLINK_LOG_DIR/submit.out)"
  id="$(sed -n 's/^JOB_ID \([0-9a-f]\{32\}\)$/\1/p' <<<"$out" | tail -n 1)"
  # Flink's own line, should the job script not print its JOB_ID line.
  [ -n "$id" ] || id="$(sed -n 's/.*submitted with JobID \([0-9a-f]\{32\}\).*/\1/p' <<<"$out" | tail -n 1)"
  if [ "$rc" != 0 ] || [ -z "$id" ]; then
    printf '%s\n' "$out" | tail -n 40 >&2
    die "flink run failed (exit code $rc; full output: $FLINK_LOG_DIR/submit.out)"
  fi
  grep -v '^JOB_ID ' <<<"$out" | grep -v '^\s*$' | sed 's/^/  /' || true
  echo "$id" >"$CLUSTER_DIR/job-id"
  say "submitted job $id in $(since "$t0") s${savepoint:+ (restored from $savepoint)}"
  echo "JOB_ID $id"
}

# -- subcommands -----------------------------------------------------------------------------
cmd_start() {
  local t0 overview
  if jm_alive; then
    overview="$(wait_ready 30)"
    say "already running: $REST, $(show running <<<"$overview")"
    return 0
  fi
  local p stray
  stray="$(our_processes | tr '\n' ' ')"
  [ -z "${stray// /}" ] || die "processes of this cluster run without pid files ($stray): run 'cluster.sh stop' first"
  for p in "$REST_PORT" "$JM_RPC_PORT"; do
    ! port_open "$p" || die "port $p is in use by another process (not the cluster of $CLUSTER_DIR); stop it, or choose other ports with FAE_REST_PORT / FAE_JM_RPC_PORT"
  done
  render_conf
  rm -f "$FLINK_PID_DIR"/*.pid
  t0="$(now)"
  # The daemons inherit this working directory: relative paths in job configs (e.g. a SQLite
  # store path) then mean the same on the cluster as on the client.
  daemon_script start-cluster.sh >"$FLINK_LOG_DIR/start-cluster.out" 2>&1 \
    || { cat "$FLINK_LOG_DIR/start-cluster.out" >&2; die "start-cluster.sh failed"; }
  overview="$(wait_ready "$START_TIMEOUT")"
  say "started in $(since "$t0") s: REST $REST, $(show started <<<"$overview")"
  say "config $FLINK_CONF_DIR/config.yaml, logs $FLINK_LOG_DIR"
}

cmd_submit() {
  local config="conf/cluster.yaml" job="$MAIN_JOB"
  local args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --job) [ $# -ge 2 ] || die "--job needs a file"; job="$2"; shift 2 ;;
      --config) [ $# -ge 2 ] || die "--config needs a file"; config="$2"; shift 2 ;;
      --config=*) config="${1#--config=}"; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  case "$config" in /*) ;; *) config="$ROOT/$config" ;; esac
  [ -f "$config" ] || die "no such config file: $config"
  case "$job" in /*) ;; *) job="$ROOT/$job" ;; esac
  [ -f "$job" ] || die "no such job script: $job"
  # Saved for resume / summary: the job script, then one argument per line.
  printf '%s\n' "$job" --config "$config" "${args[@]}" >"$CLUSTER_DIR/job-args"
  rm -f "$CLUSTER_DIR/savepoint"
  run_job "" "$job" --config "$config" "${args[@]}"
}

# flink run -d a pipeline of your own: $1 the Python file, then its arguments.
cmd_submit_py() {
  [ $# -ge 1 ] || die "submit-py needs a Python file: cluster.sh submit-py FILE.py [ARGS...]"
  local job="$1"
  shift
  case "$job" in /*) ;; *) job="$PWD/$job" ;; esac
  [ -f "$job" ] || die "no such Python file: $job"
  printf '%s\n' "$job" "$@" >"$CLUSTER_DIR/job-args"
  rm -f "$CLUSTER_DIR/savepoint"
  run_job "" "$job" "$@"
}

saved_args() {
  [ -s "$CLUSTER_DIR/job-args" ] || die "no saved job arguments in $CLUSTER_DIR/job-args: submit a job first"
  mapfile -t JOB_ARGS <"$CLUSTER_DIR/job-args"
  JOB_FILE="${JOB_ARGS[0]}"
  JOB_ARGS=("${JOB_ARGS[@]:1}")
}

cmd_resume() {
  [ -s "$CLUSTER_DIR/savepoint" ] || die "no savepoint in $CLUSTER_DIR/savepoint: take one with 'cluster.sh savepoint'"
  local sp
  sp="$(cat "$CLUSTER_DIR/savepoint")"
  [ -f "${sp#file:}/_metadata" ] || die "the saved savepoint $sp has no _metadata (deleted?)"
  saved_args
  run_job "$sp" "$JOB_FILE" "${JOB_ARGS[@]}"
}

cmd_checkpoints() {
  local id
  id="$(job_id)"
  require_rest
  rest "/jobs/$id/checkpoints" >"$FLINK_DIR/checkpoints.json" \
    || die "the cluster does not know job $id (GET $REST/jobs/$id/checkpoints failed)"
  show checkpoints "$id" "$(job_state "$id" || echo UNKNOWN)" <"$FLINK_DIR/checkpoints.json"
}

cmd_savepoint() {
  local id state t0 out rc sp
  id="$(job_id)"
  require_rest
  state="$(job_state "$id")" || die "the cluster does not know job $id"
  [ "$state" = RUNNING ] || die "job $id is $state, not RUNNING: nothing to stop with a savepoint"
  t0="$(now)"
  set +e
  out="$(timeout --kill-after=10 "$SAVEPOINT_TIMEOUT" "$FLINK" stop \
           --savepointPath "file://$CLUSTER_DIR/savepoints" "$id" 2>&1)"
  rc=$?
  set -e
  printf '%s\n' "$out" >"$FLINK_LOG_DIR/savepoint.out"
  [ "$rc" != 124 ] || die "flink stop did not return within $SAVEPOINT_TIMEOUT s (output: $FLINK_LOG_DIR/savepoint.out)"
  sp="$(sed -n 's/^Savepoint completed\. Path: \(.*\)$/\1/p' <<<"$out" | tail -n 1)"
  if [ "$rc" != 0 ] || [ -z "$sp" ]; then
    printf '%s\n' "$out" | tail -n 40 >&2
    die "flink stop --savepointPath failed (exit code $rc; output: $FLINK_LOG_DIR/savepoint.out)"
  fi
  echo "$sp" >"$CLUSTER_DIR/savepoint"
  say "job $id stopped with a savepoint in $(since "$t0") s"
  echo "SAVEPOINT $sp"
}

cmd_wait() {
  local timeout="${1:-$WAIT_TIMEOUT}" id deadline state last=0 t0 info
  case "$timeout" in ''|*[!0-9]*) die "wait: the timeout must be a number of seconds" ;; esac
  id="$(job_id)"
  require_rest
  t0="$(now)"
  deadline=$(( $(date +%s) + timeout ))
  while :; do
    state="$(job_state "$id" 2>/dev/null)" || state=UNREACHABLE
    case "$state" in
      FINISHED)
        say "job $id FINISHED (waited $(since "$t0") s)"; return 0 ;;
      FAILED|CANCELED|CANCELLING|FAILING|SUSPENDED)
        rest "/jobs/$id/exceptions" | show exceptions >&2 || true
        die "job $id is $state" ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "job $id is still $state after $timeout s"
    fi
    if [ $(( $(date +%s) - last )) -ge 10 ]; then
      last=$(date +%s)
      info="$(rest "/jobs/$id/checkpoints" | show completed 2>/dev/null || echo '?')"
      say "  $(since "$t0") s: job $id $state, $info checkpoints completed"
    fi
    sleep 1
  done
}

cmd_summary() {
  saved_args
  local config="" i
  for i in "${!JOB_ARGS[@]}"; do
    [ "${JOB_ARGS[$i]}" = --config ] && config="${JOB_ARGS[$((i + 1))]}"
  done
  (cd "$ROOT" && "$PY" -m jobs.triage_summary --config "$config" "$@")
}

cmd_status() {
  local pids overview id state
  pids="$(recorded_pids | tr '\n' ' ')"
  if [ -z "$pids" ]; then
    pids="$(our_processes | tr '\n' ' ')"
    if [ -n "${pids// /}" ]; then
      say "processes of this cluster run without pid files: $pids(use 'cluster.sh stop')"
      return 4
    fi
    say "not running (cluster dir $CLUSTER_DIR)"
    return 3
  fi
  say "processes: $pids(pid files in $FLINK_PID_DIR)"
  if overview="$(rest /overview)"; then
    say "REST $REST: $(show status <<<"$overview")"
  else
    say "REST $REST does not answer"
  fi
  if [ -s "$CLUSTER_DIR/job-id" ]; then
    id="$(cat "$CLUSTER_DIR/job-id")"
    state="$(job_state "$id" 2>/dev/null)" || state="unknown to the cluster"
    say "job $id: $state"
  fi
  [ -s "$CLUSTER_DIR/savepoint" ] && say "savepoint: $(cat "$CLUSTER_DIR/savepoint")"
  return 0
}

cmd_stop() {
  local t0 pids left deadline
  t0="$(now)"
  if [ -z "$(recorded_pids)" ] && [ -z "$(our_processes)" ]; then
    rm -f "$FLINK_PID_DIR"/*.pid
    say "not running (cluster dir $CLUSTER_DIR)"
    return 0
  fi
  if [ -n "$(pid_files)" ] && [ -f "$FLINK_CONF_DIR/config.yaml" ]; then
    daemon_script stop-cluster.sh 2>&1 | sed 's/^/  /' || true
  fi
  # Leftovers of this cluster only (a daemon whose pid file was lost, a hanging client, a
  # Python worker): TERM, then KILL after 15 s.
  pids="$(our_processes | tr '\n' ' ')"
  if [ -n "${pids// /}" ]; then
    say "terminating leftover processes of this cluster: $pids"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    deadline=$(( $(date +%s) + 15 ))
    while :; do
      left=""
      for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
      [ -z "$left" ] && break
      if [ "$(date +%s)" -ge "$deadline" ]; then
        say "killing$left"
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null || true
        break
      fi
      sleep 0.5
    done
  fi
  rm -f "$FLINK_PID_DIR"/*.pid
  if port_open "$REST_PORT"; then
    say "warning: port $REST_PORT still answers (another process, not this cluster?)"
  fi
  say "stopped in $(since "$t0") s"
}

cmd_logs() {
  local n="${1:-40}" f
  [ -d "$FLINK_LOG_DIR" ] || die "no logs yet ($FLINK_LOG_DIR)"
  for f in "$FLINK_LOG_DIR"/*; do
    [ -f "$f" ] || continue
    echo "==== $f"
    tail -n "$n" "$f"
  done
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  start) cmd_start ;;
  submit) cmd_submit "$@" ;;
  submit-py) cmd_submit_py "$@" ;;
  checkpoints) cmd_checkpoints ;;
  savepoint) cmd_savepoint ;;
  resume) cmd_resume ;;
  wait) cmd_wait "$@" ;;
  summary) cmd_summary "$@" ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  logs) cmd_logs "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; die "unknown subcommand '${cmd}'" ;;
esac
