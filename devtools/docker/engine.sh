#!/usr/bin/env bash
# Install (Debian's docker.io) and start the Docker engine if it is not running.
# --ip-masq=false and --dns 127.0.0.1: containers can reach each other and published loopback
# ports, nothing outside this machine.
set -euo pipefail
LOG=${DOCKERD_LOG:-/var/log/dockerd-explain.log}

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing the Docker engine (Debian package docker.io)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
echo "starting dockerd (log: $LOG)"
nohup dockerd --ip-masq=false --dns 127.0.0.1 >"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "ERROR: the Docker engine did not start within 60 s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
