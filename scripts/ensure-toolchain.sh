#!/usr/bin/env bash
# Make sure a JDK (java, javac, jar) is present: the checkpoint bridge compiles a small Java
# operator. On a Debian machine where we are root, install one; otherwise say what is missing.
set -euo pipefail
missing=()
for tool in java javac jar; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/$tool" ] || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing a JDK (missing: ${missing[*]})" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
  exit 0
fi
echo "error: ${missing[*]} not found; install a JDK 11+ (e.g. openjdk-17-jdk-headless)" >&2
exit 1
