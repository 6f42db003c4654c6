#!/usr/bin/env bash
# `POST /api/track` in distributed mode (Redis counters, MongoDB records) on one and on two
# metering-server instances, beside the embedded default, in the same run.
#
# Started here, all on loopback: a redis-server of the script's own (no persistence), the
# MongoDB wire-protocol test server (scripts/mongodb-test-server.sh, its data on disk), the
# embedded default (SQLite + memory, pinned to core 0), and two instances sharing Redis and
# MongoDB (instance A pinned to core 0, B to core 1; one JWT secret). An admin makes a plan
# with huge limits, TENANTS tenants sign up (once on the embedded server, once on A), and wrk
# tracks calls for them in turn, each with its own access token:
#
#   embedded  wrk -cCONNECTIONS against the embedded default
#   one       wrk -cCONNECTIONS against instance A
#   two       two wrk at once, CONNECTIONS/2 each, against A and against B
#
#   floor     the MongoDB test server alone (scripts/lib/mongodb_floor.py, with its own
#             pymongo): copies of a stored ledger document, under the ledger's indexes, in
#             batches of FLOOR_BATCH from FLOOR_CLIENTS threads: the documents/s it sustains
#             bounds the tracked calls/s of any number of instances
#
# Each is run ROUNDS times, interleaved. It prints requests/s, p50/p99 (the worse of the two
# wrk for `two`), and the CPU time per request (user + system, every thread, from /proc)
# spent by our servers, by Redis and by the MongoDB test server, and how busy the test
# server's one core was. The test server is a Python program: where it is at a full core it
# caps the throughput, and the figures to read are the scaling shape and the servers' own
# CPU per request.
#
#   bash scripts/bench-distributed.sh                  # 2 rounds of 10 s each
#   DURATION=5s ROUNDS=1 bash scripts/bench-distributed.sh
#
# Settings (environment): DURATION (default 10s), ROUNDS (2), CONNECTIONS (32), WARMUP (2s),
# TENANTS (100), PORT (3931: embedded; A and B on PORT+1, PORT+2; Redis on PORT+3; MongoDB
# on PORT+4), WRITE_CONCERN (majority), FLOOR_CLIENTS (2), FLOOR_BATCH (16), BUILD (1; 0 reuses the release binary), SERVER_BIN.
# Needs curl, python3, taskset, redis-server and wrk (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
TENANTS=${TENANTS:-100}
PORT=${PORT:-3931}
WRITE_CONCERN=${WRITE_CONCERN:-majority}
FLOOR_CLIENTS=${FLOOR_CLIENTS:-2}
FLOOR_BATCH=${FLOOR_BATCH:-16}
EMBEDDED_ADDR="127.0.0.1:${PORT}"
A_ADDR="127.0.0.1:$((PORT + 1))"
B_ADDR="127.0.0.1:$((PORT + 2))"
REDIS_PORT=$((PORT + 3))
MONGO_PORT=$((PORT + 4))
ADMIN_EMAIL="bench-admin@example.com"
ADMIN_PASSWORD="bench admin password $$-$RANDOM"
JWT_SECRET="bench-distributed-secret-$$-$RANDOM-$RANDOM-$RANDOM"

source scripts/lib/track-load.sh
need_load_tools
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "this script pins the two instances to cores 0 and 1; it needs 2 CPUs" >&2
  exit 1
fi

server_bin=${SERVER_BIN:-target/release/metering-server}
if [ "${BUILD:-1}" != 0 ]; then
  echo "== building (release)"
  cargo build --release -p metering-server --bin metering-server
fi
[ -x "$server_bin" ] || { echo "$server_bin is not built" >&2; exit 1; }

work=$(mktemp -d)
pids=()
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "== starting Redis on $REDIS_PORT and the MongoDB test server on $MONGO_PORT (data in $work/mongodb)"
start_own_stores "$REDIS_PORT" "$MONGO_PORT" "$work/mongodb"
mongo_python="${XDG_CACHE_HOME:-$HOME/.cache}/metering-secantusdb/bin/python"

common_env=(RUST_LOG=warn METERING_ADMIN_EMAIL="$ADMIN_EMAIL" METERING_ADMIN_PASSWORD="$ADMIN_PASSWORD"
  METERING_SIGNUP_LIMIT="100000/hour" METERING_ACCESS_TOKEN_TTL="1h")
shared_env=(METERING_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" METERING_REDIS_PREFIX=bench-distributed
  METERING_MONGODB_URI="$mongo_uri" METERING_MONGODB_DATABASE=bench_distributed
  METERING_MONGODB_WRITE_CONCERN="$WRITE_CONCERN" METERING_JWT_SECRET="$JWT_SECRET")

echo "== starting the embedded default on $EMBEDDED_ADDR (cpu 0, data in $work/embedded)"
env "${common_env[@]}" METERING_LISTEN="$EMBEDDED_ADDR" METERING_DATA_DIR="$work/embedded" \
  taskset -c 0 "$server_bin" >"$work/embedded.log" 2>&1 &
embedded_pid=$!
pids+=("$embedded_pid")
wait_for "http://$EMBEDDED_ADDR/healthz" "$work/embedded.log" "$embedded_pid"

echo "== starting instance A on $A_ADDR (cpu 0) and B on $B_ADDR (cpu 1), on Redis and MongoDB"
env "${common_env[@]}" "${shared_env[@]}" METERING_LISTEN="$A_ADDR" METERING_DATA_DIR="$work/a" \
  taskset -c 0 "$server_bin" >"$work/a.log" 2>&1 &
a_pid=$!
pids+=("$a_pid")
wait_for "http://$A_ADDR/healthz" "$work/a.log" "$a_pid"
env "${common_env[@]}" "${shared_env[@]}" METERING_LISTEN="$B_ADDR" METERING_DATA_DIR="$work/b" \
  taskset -c 1 "$server_bin" >"$work/b.log" 2>&1 &
b_pid=$!
pids+=("$b_pid")
wait_for "http://$B_ADDR/healthz" "$work/b.log" "$b_pid"

echo "== an admin makes the bench plan; $TENANTS tenants sign up on each store"
write_track_script "$EMBEDDED_ADDR" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "$TENANTS" 0 "$work/embedded.lua"
write_track_script "$A_ADDR" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "$TENANTS" 0 "$work/shared.lua"
check_tracks "$work/embedded.lua" "$EMBEDDED_ADDR"
check_tracks "$work/shared.lua" "$A_ADDR" "$B_ADDR"

WRK_LIMIT=$((${DURATION%s} + 30))
CLK_TCK=$(getconf CLK_TCK)
seconds() { case "$1" in *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }

# wrk_at ADDR CONNECTIONS DURATION SCRIPT OUT: one wrk run, its RESULT line into OUT.
wrk_at() {
  timeout "$WRK_LIMIT" wrk -t1 -c"$2" -d"$3" --timeout 2s -s "$4" "http://$1/api/track" | grep '^RESULT' >"$5"
}

# measure TARGET DURATION -> "rps p50 p99 bad requests servers_us redis_us mongo_us mongo_busy"
measure() {
  local target=$1 duration=$2 servers before_s before_r before_m after_s after_r after_m
  case "$target" in
    embedded) servers=("$embedded_pid") ;;
    one) servers=("$a_pid") ;;
    two) servers=("$a_pid" "$b_pid") ;;
  esac
  before_s=$(cpu_ticks "${servers[@]}")
  before_r=$(cpu_ticks "$redis_pid")
  before_m=$(cpu_ticks "$mongo_pid")
  case "$target" in
    embedded) wrk_at "$EMBEDDED_ADDR" "$CONNECTIONS" "$duration" "$work/embedded.lua" "$work/out.1" ;;
    one) wrk_at "$A_ADDR" "$CONNECTIONS" "$duration" "$work/shared.lua" "$work/out.1" ;;
    two)
      wrk_at "$A_ADDR" $((CONNECTIONS / 2)) "$duration" "$work/shared.lua" "$work/out.1" &
      local first=$!
      wrk_at "$B_ADDR" $((CONNECTIONS - CONNECTIONS / 2)) "$duration" "$work/shared.lua" "$work/out.2"
      wait "$first" ;;
  esac
  after_s=$(cpu_ticks "${servers[@]}")
  after_r=$(cpu_ticks "$redis_pid")
  after_m=$(cpu_ticks "$mongo_pid")
  [ "$target" = two ] || : >"$work/out.2"
  cat "$work/out.1" "$work/out.2" | awk -v s=$((after_s - before_s)) -v r=$((after_r - before_r)) \
    -v m=$((after_m - before_m)) -v hz="$CLK_TCK" -v secs="$(seconds "$duration")" '
    { rps += $2; p50 = ($3 > p50 ? $3 : p50); p99 = ($4 > p99 ? $4 : p99); bad += $5 + $6; n += $7 }
    END {
      us = n > 0 ? 1e6 / hz / n : 0
      print rps, p50, p99, bad, n, s * us, r * us, m * us, 100 * m / hz / secs
    }'
}

# floor DURATION -> "documents/s mongo_us_per_document mongo_busy"
floor() {
  local before after out
  before=$(cpu_ticks "$mongo_pid")
  out=$("$mongo_python" scripts/lib/mongodb_floor.py "$mongo_uri" bench_distributed "$(seconds "$1")" \
    "$FLOOR_CLIENTS" "$FLOOR_BATCH" | grep '^FLOOR')
  after=$(cpu_ticks "$mongo_pid")
  awk -v m=$((after - before)) -v hz="$CLK_TCK" -v secs="$(seconds "$1")" \
    '{ print $2, ($2 > 0 ? m * 1e6 / hz / ($2 * secs) : 0), 100 * m / hz / secs }' <<<"$out"
}

echo "== warm-up ($WARMUP each)"
for target in embedded one two; do measure "$target" "$WARMUP" >/dev/null; done

echo "== measuring: $ROUNDS rounds x (embedded one two floor), $CONNECTIONS connections in all, $DURATION, $TENANTS tenants"
: >"$work/results"
for round in $(seq "$ROUNDS"); do
  for target in embedded one two; do
    read -r rps p50 p99 bad n servers redis mongo busy <<<"$(measure "$target" "$DURATION")"
    echo "$target $rps $p50 $p99 $bad $servers $redis $mongo $busy" >>"$work/results"
    printf '   round %d %-8s %8.0f req/s  p50 %6d us  p99 %6d us  CPU/req: servers %5.1f us, Redis %5.1f us, MongoDB %6.1f us (busy %3.0f%%)  errors %s\n' \
      "$round" "$target" "$rps" "$p50" "$p99" "$servers" "$redis" "$mongo" "$busy" "$bad"
  done
  read -r docs mongo busy <<<"$(floor "$DURATION")"
  echo "floor $docs 0 0 0 0 0 $mongo $busy" >>"$work/results"
  printf '   round %d %-8s %8.0f documents/s (%d threads, batches of %d)  MongoDB %6.1f us/document (busy %3.0f%%)\n' \
    "$round" floor "$docs" "$FLOOR_CLIENTS" "$FLOOR_BATCH" "$mongo" "$busy"
done

echo
echo "== results ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); write concern $WRITE_CONCERN)"
awk -v rounds="$ROUNDS" '
  { rps[$1] += $2; p50[$1] += $3; p99[$1] += $4; bad[$1] += $5; srv[$1] += $6; red[$1] += $7; mon[$1] += $8; busy[$1] += $9 }
  END {
    printf "   %-8s %12s %9s %9s %16s %14s %16s %13s %7s\n", "target", "req/s (mean)", "p50 (us)", "p99 (us)", "servers (us/req)", "Redis (us/req)", "MongoDB (us/req)", "MongoDB busy", "errors"
    split("embedded one two floor", names, " ")
    for (i = 1; i <= 4; i++) {
      k = names[i]
      printf "   %-8s %12.0f %9.0f %9.0f %16.1f %14.1f %16.1f %12.0f%% %7d\n", k, rps[k] / rounds, p50[k] / rounds, p99[k] / rounds, srv[k] / rounds, red[k] / rounds, mon[k] / rounds, busy[k] / rounds, bad[k]
    }
    printf "\n   two / one instance requests/s: %.2fx\n", rps["two"] / rps["one"]
    printf "   one instance / floor: %.1f%%, two instances / floor: %.1f%% (the floor: documents/s MongoDB sustains alone)\n", 100 * rps["one"] / rps["floor"], 100 * rps["two"] / rps["floor"]
    printf "   one instance / embedded requests/s: %.1f%%\n", 100 * rps["one"] / rps["embedded"]
  }' "$work/results"
