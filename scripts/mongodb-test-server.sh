#!/usr/bin/env bash
# A MongoDB wire-protocol server for the tests: SecantusDB (from PyPI, on WiredTiger),
# installed once into a cached virtual environment and run on loopback. Tests only: a
# deployment runs MongoDB itself.
#
#   scripts/mongodb-test-server.sh start PORT [DIR]   start on PORT (data in DIR, kept across
#                                                     restarts; in memory without DIR), print the URI
#   scripts/mongodb-test-server.sh stop PORT          stop the server started on PORT
#   scripts/mongodb-test-server.sh uri PORT           print the URI
#
# Known quirk: under heavy concurrency an upsert asked to return the document after it may
# come back empty though applied; the record store never relies on that answer.
set -euo pipefail
action=${1:?usage: mongodb-test-server.sh start|stop|uri PORT [DIR]}
port=${2:?a port}
dir=${3:-}
package="secantusdb==0.7.0b3"
env_dir="${XDG_CACHE_HOME:-$HOME/.cache}/metering-secantusdb"
state="${TMPDIR:-/tmp}/metering-mongodb-$port"
uri="mongodb://127.0.0.1:$port/?directConnection=true"

listening() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.3)" 2>/dev/null; }

install() {
  [ -x "$env_dir/bin/secantusd-py" ] && return
  command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
  python3 -m venv "$env_dir" >&2 || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$env_dir" >&2; }
  "$env_dir/bin/pip" install -q "$package" >&2
}

case "$action" in
  start)
    if listening; then echo "$uri"; exit 0; fi
    install
    mkdir -p "$state"
    : > "$state/settings.toml"
    storage=":memory:"
    if [ -n "$dir" ]; then mkdir -p "$dir"; storage="$dir"; fi
    nohup "$env_dir/bin/secantusd-py" --config "$state/settings.toml" --host 127.0.0.1 --port "$port" \
      --storage-path "$storage" --log-level WARNING > "$state/log" 2>&1 &
    echo $! > "$state/pid"
    for _ in $(seq 1 300); do
      if listening; then echo "$uri"; exit 0; fi
      sleep 0.1
    done
    echo "mongodb-test-server: nothing listening on $port after 30 s; see $state/log" >&2
    exit 1 ;;
  stop)
    [ -f "$state/pid" ] || exit 0
    pid=$(cat "$state/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$state/pid" ;;
  uri) echo "$uri" ;;
  *) echo "usage: mongodb-test-server.sh start|stop|uri PORT [DIR]" >&2; exit 2 ;;
esac
