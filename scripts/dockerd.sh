#!/usr/bin/env bash
# Starts a Docker engine if none answers, and waits until `docker info` works. Idempotent.
#   scripts/dockerd.sh                 the system engine (/var/run/docker.sock)
#   scripts/dockerd.sh --private DIR   a private engine rooted in DIR (tests: no shared state);
#                                      prints its DOCKER_HOST (unix://DIR/docker.sock)
#   scripts/dockerd.sh --stop DIR      stops the private engine of DIR (and its containerd)
set -euo pipefail

wait_for() { # host pidfile log
  for _ in $(seq 1 90); do
    if DOCKER_HOST="$1" docker info >/dev/null 2>&1; then return 0; fi
    if [ -f "$2" ] && ! kill -0 "$(cat "$2")" 2>/dev/null; then break; fi
    sleep 1
  done
  echo "dockerd.sh: the Docker engine did not answer at $1; last lines of $3:" >&2
  tail -n 20 "$3" >&2 || true
  return 1
}

command -v docker >/dev/null && command -v dockerd >/dev/null || {
  echo "dockerd.sh: missing docker/dockerd (install the Debian package docker.io, or run scripts/setup.sh)" >&2
  exit 2
}

case "${1:-}" in
  --private)
    dir=$(realpath -m "${2:?usage: dockerd.sh --private DIR}")
    mkdir -p "$dir"
    host="unix://$dir/docker.sock"
    if DOCKER_HOST="$host" docker info >/dev/null 2>&1; then echo "$host"; exit 0; fi
    # No bridge and no iptables: containers here only ever run with --network=none, and a private
    # engine must not touch the host's firewall or collide with the system engine's docker0.
    setsid dockerd --data-root "$dir/data" --exec-root "$dir/x" --pidfile "$dir/docker.pid" \
      --host "$host" --bridge=none --iptables=false --ip6tables=false \
      >"$dir/dockerd.log" 2>&1 </dev/null &
    wait_for "$host" "$dir/docker.pid" "$dir/dockerd.log"
    echo "$host"
    ;;
  --stop)
    dir=$(realpath -m "${2:?usage: dockerd.sh --stop DIR}")
    [ -f "$dir/docker.pid" ] || exit 0
    pid=$(cat "$dir/docker.pid")
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
  "")
    if docker info >/dev/null 2>&1; then exit 0; fi
    log=/var/log/dockerd.log
    exec 9>/run/supply-chain-dockerd.lock
    flock 9 # two callers at once start one engine
    if docker info >/dev/null 2>&1; then exit 0; fi
    setsid dockerd >>"$log" 2>&1 </dev/null &
    wait_for "unix:///var/run/docker.sock" /var/run/docker.pid "$log"
    ;;
  *)
    echo "usage: dockerd.sh [--private DIR | --stop DIR]" >&2
    exit 2
    ;;
esac
