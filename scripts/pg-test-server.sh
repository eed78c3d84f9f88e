#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and CI.
#
#   scripts/pg-test-server.sh [start] [DIR]   start (or reuse) the server, print its settings
#   scripts/pg-test-server.sh stop [DIR]      stop it (fast shutdown); the data stays in DIR
#   scripts/pg-test-server.sh restart [DIR]   restart it (fast shutdown: sessions are cut)
#   scripts/pg-test-server.sh status [DIR]    exit 0 if it is running
#
# DIR (argument, else $FAE_PG_DIR, else .pg/ in the repository) holds the cluster (DIR/data),
# its log (DIR/postgres.log) and, when the path is short enough, its Unix socket (DIR/run).
# The server listens on 127.0.0.1:$FAE_PG_PORT (default 55432). Local (socket) connections
# are trusted; TCP connections need a SCRAM password. Role and database "flink_agents" are
# created, the role's password set to $FAE_PG_PASSWORD (default "flink_agents").
# FAE_PG_FSYNC=off starts the server without fsync (faster commits for test suites; a crash
# of the machine can then corrupt the cluster). Default: on.
#
# Idempotent: a server already running on that port is reused (our cluster: the role and
# database are checked; another server: it must accept the role's password). When the
# `postgresql` package is missing, it is installed with apt-get (root only). initdb and the
# server run as the `postgres` user when this script runs as root.
#
# On success, prints shell-style settings on stdout:
#   FAE_PG_HOST=127.0.0.1 FAE_PG_PORT=55432 FAE_PG_DBNAME=flink_agents FAE_PG_USER=flink_agents
# The password is never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVER_NAME="pg-test-server"
# shellcheck source=scripts/test-server-lib.sh
. "$ROOT/scripts/test-server-lib.sh"
cmd="start"
case "${1:-}" in
  start|stop|restart|status) cmd="$1"; shift ;;
esac
DIR="${1:-${FAE_PG_DIR:-$ROOT/.pg}}"
PORT="${FAE_PG_PORT:-55432}"
PASSWORD="${FAE_PG_PASSWORD:-flink_agents}"
FSYNC="${FAE_PG_FSYNC:-on}"
ROLE="flink_agents"
DB="flink_agents"
HOST="127.0.0.1"

require_digits "$PORT" "FAE_PG_PORT must be a port number, got '$PORT'"
case "$FSYNC" in on|off) ;; *) die "FAE_PG_FSYNC must be on or off, got '$FSYNC'" ;; esac
DIR="$(data_dir "$DIR")"
DATA="$DIR/data"
LOG="$DIR/postgres.log"
# A Unix socket path is limited to ~107 bytes; fall back to a short directory in /tmp.
SOCK="$DIR/run"
if [ $(( ${#SOCK} + 20 )) -gt 100 ]; then
  SOCK="/tmp/fae-pg-$(id -u)-$PORT"
fi

# -- PostgreSQL binaries ---------------------------------------------------------------------
find_bindir() {
  local d
  # The versioned directory holds initdb, postgres and pg_ctl together (highest version).
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -rn); do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  if command -v pg_ctl >/dev/null 2>&1; then
    d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  fi
  return 1
}
BIN="$(find_bindir || true)"
if [ -z "$BIN" ]; then
  [ "$cmd" = start ] || die "PostgreSQL is not installed (no pg_ctl)"
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    || die "pg_ctl not found and cannot install it (needs root and apt-get); install the 'postgresql' package"
  say "installing the postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null; } \
    || die "apt-get install postgresql failed"
  BIN="$(find_bindir)" || die "postgresql installed but pg_ctl not found under /usr/lib/postgresql/*/bin"
fi

# Run a command as the cluster owner: `postgres` when we are root (initdb refuses root).
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
  as_owner() { runuser -u postgres -- "$@"; }
  own() { chown "$@"; }
  OWNER="postgres"
else
  as_owner() { "$@"; }
  own() { :; }
  OWNER="$(id -un)"
fi

running() { as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
# The port our running cluster listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }

case "$cmd" in
  status)
    if [ -d "$DATA" ] && running; then say "running on $HOST:$(running_port) ($DATA)"; exit 0; fi
    say "not running ($DATA)"; exit 3 ;;
  stop)
    if [ -d "$DATA" ] && running; then
      as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
      say "stopped ($DATA)"
    else
      say "not running ($DATA)"
    fi
    exit 0 ;;
  restart)
    { [ -d "$DATA" ] && running; } || die "not running ($DATA); use start"
    # -l: the server must not inherit our stdout (callers wait for its end).
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -m fast -w -t 60 restart >/dev/null \
      || die "restart failed: $(tail -5 "$LOG")"
    say "restarted on $HOST:$(running_port) ($DATA)"
    exit 0 ;;
esac

# -- start -----------------------------------------------------------------------------------
print_settings() {
  echo "FAE_PG_HOST=$HOST FAE_PG_PORT=$PORT FAE_PG_DBNAME=$DB FAE_PG_USER=$ROLE"
}
# SQL string literal of the password (standard_conforming_strings: only ' is special).
pw_literal="'${PASSWORD//\'/\'\'}'"

port_accepts() { "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -t 2 >/dev/null 2>&1; }

setup_role_and_db() {
  # Through the Unix socket as the superuser (trusted locally). SQL on stdin: the password
  # never appears in a process's arguments.
  as_owner "$BIN/psql" -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres \
      -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "creating role/database failed (log: $LOG)"
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') AS need_role \gset
\if :need_role
CREATE ROLE $ROLE LOGIN;
\endif
SET password_encryption = 'scram-sha-256';
ALTER ROLE $ROLE WITH LOGIN PASSWORD $pw_literal;
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB') AS need_db \gset
\if :need_db
CREATE DATABASE $DB OWNER $ROLE;
\endif
SQL
}

if [ -d "$DATA" ] && running; then
  have="$(running_port)"
  [ "$have" = "$PORT" ] || die "the cluster in $DATA is already running on port $have, not $PORT; stop it first"
  SOCK="$(sed -n 5p "$DATA/postmaster.pid")"
  setup_role_and_db
  say "reusing the running server on $HOST:$PORT ($DATA)"
  print_settings
  exit 0
fi

if port_accepts; then
  # Someone else's server on this port: reuse it if our role can log in with the password.
  if PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=3 "$BIN/psql" -X -q -w -h "$HOST" -p "$PORT" \
      -U "$ROLE" -d "$DB" -c "SELECT 1" >/dev/null 2>&1; then
    say "reusing the server already listening on $HOST:$PORT (not started by this script)"
    print_settings
    exit 0
  fi
  die "another server listens on $HOST:$PORT and does not accept role $ROLE with \$FAE_PG_PASSWORD; set FAE_PG_PORT to a free port"
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  [ -z "$(ls -A "$DATA" 2>/dev/null)" ] || die "$DATA exists but is not a PostgreSQL cluster; remove it"
  mkdir -p "$DATA"
  own -R postgres: "$DIR"
  chmod 700 "$DATA"
  # A non-C default collation (ICU when available) so that code relying on the "C"
  # collation for its ordering is really tested.
  if ! as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --no-sync --locale=C.UTF-8 \
        --locale-provider=icu --icu-locale=en-US \
        --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1; then
    rm -rf "${DATA:?}"/*
    as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --no-sync \
        --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -5 "$DIR/initdb.log")"
  fi
  {
    echo "# written by scripts/pg-test-server.sh"
    echo "local all all                trust"
    echo "host  all all 127.0.0.1/32   scram-sha-256"
    echo "host  all all ::1/128        scram-sha-256"
  } >"$DATA/pg_hba.conf"
  own postgres: "$DATA/pg_hba.conf"
fi
own postgres: "$DIR"
mkdir -p "$SOCK"
own postgres: "$SOCK"
touch "$LOG"
own postgres: "$LOG"

as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-p $PORT -k $SOCK -c listen_addresses=$HOST -c max_connections=200 -c fsync=$FSYNC" start >/dev/null \
  || die "the server did not start: $(tail -5 "$LOG")"
setup_role_and_db
say "started on $HOST:$PORT ($DATA, owner $OWNER)"
print_settings
