#!/usr/bin/env bash
# Instructions per `POST /api/track` in the server's own process, counted by callgrind
# (repeatable, whatever else the machine is doing): the embedded default, and one instance
# on Redis and MongoDB (a redis-server and the MongoDB test server of the script's own).
# Each server runs under `valgrind --tool=callgrind`; after the sign-ups and a warm-up the
# counters are zeroed, wrk tracks calls for CALLS_FOR, and the instructions of the dump
# (every thread) are divided by the calls wrk counted.
#
#   bash scripts/track-instructions.sh
#
# Settings (environment): CALLS_FOR (wrk -d, default 10s), CONNECTIONS (8), TENANTS (20),
# PORT (3951: embedded; the shared instance on PORT+1, Redis PORT+3, MongoDB PORT+4),
# BUILD (1; 0 reuses the release binary), SERVER_BIN, KEEP (a directory to copy the dumps
# into, for `callgrind_annotate --inclusive=yes`). Needs valgrind, redis-server, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS_FOR=${CALLS_FOR:-10s}
CONNECTIONS=${CONNECTIONS:-8}
TENANTS=${TENANTS:-20}
PORT=${PORT:-3951}
REDIS_PORT=$((PORT + 3))
MONGO_PORT=$((PORT + 4))
ADMIN_EMAIL="bench-admin@example.com"
ADMIN_PASSWORD="bench admin password $$-$RANDOM"

source scripts/lib/track-load.sh
need_load_tools
for tool in valgrind callgrind_control redis-server; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done
server_bin=${SERVER_BIN:-target/release/metering-server}
if [ "${BUILD:-1}" != 0 ]; then
  cargo build --release -p metering-server --bin metering-server
fi

work=$(mktemp -d)
pids=()
trap stop_all EXIT
trap 'exit 130' INT TERM

start_own_stores "$REDIS_PORT" "$MONGO_PORT"

# count NAME ADDR ENV...: instructions per tracked call of the server started with ENV.
count() {
  local name=$1 addr=$2 pid requests total
  shift 2
  env RUST_LOG=warn METERING_ADMIN_EMAIL="$ADMIN_EMAIL" METERING_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    METERING_SIGNUP_LIMIT="100000/hour" METERING_ACCESS_TOKEN_TTL="1h" METERING_LISTEN="$addr" \
    METERING_DATA_DIR="$work/$name" "$@" \
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.%p.out" "$server_bin" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do curl -s -o /dev/null "http://$addr/healthz" && break; sleep 0.1; done
  write_track_script "$addr" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "$TENANTS" 0 "$work/$name.lua"
  check_tracks "$work/$name.lua" "$addr"
  wrk -t1 -c"$CONNECTIONS" -d2s --timeout 10s -s "$work/$name.lua" "http://$addr/api/track" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  requests=$(wrk -t1 -c"$CONNECTIONS" -d"$CALLS_FOR" --timeout 10s -s "$work/$name.lua" "http://$addr/api/track" |
    awk '$1 == "RESULT" { print $7 }')
  callgrind_control -d "$pid" >/dev/null 2>&1
  [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP" && cp "$work/$name".*.out.* "$KEEP"/; }
  total=$(cat "$work/$name".*.out.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')
  awk -v n="$name" -v t="$total" -v r="$requests" \
    'BEGIN { printf "   %-10s %8d calls  %12.0f instructions per call\n", n, r, (r > 0 ? t / r : 0) }'
}

echo "== instructions per POST /api/track in the server's process (callgrind, $CONNECTIONS connections, $CALLS_FOR)"
count embedded "127.0.0.1:$PORT"
count shared "127.0.0.1:$((PORT + 1))" METERING_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  METERING_REDIS_PREFIX=track-instructions METERING_MONGODB_URI="$mongo_uri" \
  METERING_MONGODB_DATABASE=track_instructions METERING_JWT_SECRET="track-instructions-$$-$RANDOM-$RANDOM-$RANDOM"
