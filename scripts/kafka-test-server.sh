#!/usr/bin/env bash
# A throwaway Kafka broker for tests, benchmarks and the Kafka profile (conf/kafka.yaml).
#
#   scripts/kafka-test-server.sh [start] [DIR]   start (or reuse) the broker, print its settings
#   scripts/kafka-test-server.sh stop [DIR]      stop it (TERM, KILL after 30 s); data stays in DIR
#   scripts/kafka-test-server.sh status [DIR]    exit 0 if it is running (3 if not)
#
# One node in KRaft mode (broker and controller in one JVM), from the Apache Kafka jars on
# Maven Central (org.apache.kafka:kafka_2.13:$FAE_KAFKA_VERSION and its runtime
# dependencies), fetched once with Maven into ~/.cache/flink-agents-ext/maven
# (FAE_MAVEN_CACHE) by flink_agents_ext/maven.py; nothing is downloaded into the repository.
# DIR (argument, else $FAE_KAFKA_DIR, else .kafka/ in the repository, ignored by git) holds
# the data (DIR/data), the configuration, the log (DIR/kafka.log) and the pid.
#
# Listens on 127.0.0.1 only: $FAE_KAFKA_PORT, else the port it had before in DIR, else a
# free port. Idempotent: a broker already running from DIR is reused. Waits are bounded:
# $FAE_KAFKA_START_TIMEOUT_S (default 90) for the start, 30 s for the stop.
#
# On success, prints shell-style settings on stdout:
#   FAE_KAFKA_BOOTSTRAP=127.0.0.1:PORT FAE_KAFKA_DIR=DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVER_NAME="kafka-test-server"
# shellcheck source=scripts/test-server-lib.sh
. "$ROOT/scripts/test-server-lib.sh"
cmd="start"
case "${1:-}" in
  start|stop|status) cmd="$1"; shift ;;
  -h|--help|help) sed -n '2,20p' "$0"; exit 0 ;;
esac
DIR="${1:-${FAE_KAFKA_DIR:-$ROOT/.kafka}}"
VERSION="${FAE_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="2.24.3"
START_TIMEOUT="${FAE_KAFKA_START_TIMEOUT_S:-90}"
HOST="127.0.0.1"

require_digits "$START_TIMEOUT" "FAE_KAFKA_START_TIMEOUT_S must be a number of seconds"
DIR="$(data_dir "$DIR")"
PIDFILE="$DIR/kafka.pid"
LOG="$DIR/kafka.log"

# The pid of our broker, if it runs: the pid file's process must be a java started with our
# configuration file (a reused pid of another process is not ours).
our_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/server.properties" || return 1
  echo "$pid"
}
port_of() { sed -n 's/^listeners=PLAINTEXT:\/\/[^:]*:\([0-9]*\),.*/\1/p' "$DIR/server.properties" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
print_settings() { echo "FAE_KAFKA_BOOTSTRAP=$HOST:$1 FAE_KAFKA_DIR=$DIR"; }

case "$cmd" in
  status)
    if pid="$(our_pid)"; then say "running on $HOST:$(port_of) (pid $pid, $DIR)"; exit 0; fi
    say "not running ($DIR)"; exit 3 ;;
  stop)
    if pid="$(our_pid)"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        say "did not stop in 30 s; killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$PIDFILE"
      say "stopped ($DIR)"
    else
      say "not running ($DIR)"
    fi
    exit 0 ;;
esac

# -- start -----------------------------------------------------------------------------------
if pid="$(our_pid)"; then
  port="$(port_of)"
  [ -z "${FAE_KAFKA_PORT:-}" ] || [ "$FAE_KAFKA_PORT" = "$port" ] \
    || die "the broker in $DIR already runs on port $port, not $FAE_KAFKA_PORT; stop it first"
  say "reusing the running broker on $HOST:$port (pid $pid, $DIR)"
  print_settings "$port"
  exit 0
fi

command -v java >/dev/null 2>&1 || die "java not found; install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
PY="${FAE_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || die "no Python environment at $PY; run 'make setup' first (or set FAE_PYTHON)"
LIB="$(cd "$ROOT" && "$PY" -c "import sys; from flink_agents_ext.maven import main; sys.exit(main())" "kafka-$VERSION" \
        "org.apache.kafka:kafka_2.13:$VERSION" \
        "org.apache.logging.log4j:log4j-core:$LOG4J_VERSION" \
        "org.apache.logging.log4j:log4j-slf4j2-impl:$LOG4J_VERSION" \
        "org.slf4j:slf4j-api:2.0.17")" || die "could not fetch the Kafka $VERSION jars (see above)"

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT="${FAE_KAFKA_PORT:-$(port_of || true)}"
[ -n "$PORT" ] || PORT="$(free_port)"
require_digits "$PORT" "FAE_KAFKA_PORT must be a port number, got '$PORT'"
port_open "$PORT" && die "port $PORT on $HOST is taken by another process; set FAE_KAFKA_PORT to a free port"
CPORT="$(sed -n 's/^listeners=.*CONTROLLER:\/\/[^:]*:\([0-9]*\)$/\1/p' "$DIR/server.properties" 2>/dev/null || true)"
# The controller port is internal: keep the old one only if it can be bound now (an
# outgoing connection's local port is not "open" but cannot be bound either).
can_bind() { "$PY" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
{ [ -n "$CPORT" ] && can_bind "$CPORT"; } || CPORT="$(free_port)"
while [ "$CPORT" = "$PORT" ]; do CPORT="$(free_port)"; done

# The configuration: one node, loopback only, replication factor 1 for the internal topics,
# topics created explicitly (a typo in a topic name fails instead of creating one), the
# log cleaner checking often (the action store's compacted topic).
cat >"$DIR/server.properties" <<EOF
# written by scripts/kafka-test-server.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=900000
log.cleaner.backoff.ms=1000
EOF
cat >"$DIR/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$LOG
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
EOF

JAVA_OPTS=(-Xms128m -Xmx${FAE_KAFKA_HEAP:-512m} -XX:+UseG1GC -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$DIR/log4j2.properties" -cp "$LIB/*")
if [ ! -f "$DIR/data/meta.properties" ]; then
  mkdir -p "$DIR/data"
  cluster_id="$(java "${JAVA_OPTS[@]}" kafka.tools.StorageTool random-uuid 2>>"$DIR/format.log")" \
    || die "kafka-storage random-uuid failed: $(tail -5 "$DIR/format.log")"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$DIR/server.properties" >>"$DIR/format.log" 2>&1 \
    || die "formatting $DIR/data failed: $(tail -5 "$DIR/format.log")"
fi

: >"$LOG"
started="$(date +%s)"
# setsid: the broker outlives this script and is not in the caller's process group.
setsid java "${JAVA_OPTS[@]}" kafka.Kafka "$DIR/server.properties" >>"$DIR/kafka.out" 2>&1 </dev/null &
echo $! >"$PIDFILE"
deadline=$(( started + START_TIMEOUT ))
until grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$PORT"; do
  if ! our_pid >/dev/null; then
    rm -f "$PIDFILE"
    die "the broker exited during start-up: $(tail -5 "$DIR/kafka.out" "$LOG" 2>/dev/null)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    kill -KILL "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "the broker did not start within ${START_TIMEOUT} s (FAE_KAFKA_START_TIMEOUT_S); log: $LOG"
  fi
  sleep 0.5
done
say "started on $HOST:$PORT in $(( $(date +%s) - started )) s (Kafka $VERSION, pid $(cat "$PIDFILE"), $DIR)"
print_settings "$PORT"
