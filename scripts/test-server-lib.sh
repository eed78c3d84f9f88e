# Sourced by the throwaway-server scripts (scripts/kafka-test-server.sh,
# scripts/pg-test-server.sh) once they have set SERVER_NAME: messages, checks of numeric
# settings and the data directory.

die() { echo "$SERVER_NAME: error: $*" >&2; exit 1; }
say() { echo "$SERVER_NAME: $*" >&2; }

# require_digits VALUE MESSAGE: die with MESSAGE unless VALUE is a non-empty run of digits.
require_digits() { case "$1" in ''|*[!0-9]*) die "$2" ;; esac; }

# data_dir DIR: create DIR (and its parents); print its absolute path.
data_dir() { mkdir -p "$1" || die "cannot create $1"; (cd "$1" && pwd); }
