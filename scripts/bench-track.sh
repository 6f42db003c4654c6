#!/usr/bin/env bash
# The reference server's `POST /api/track` over real HTTP on loopback, against a baseline.
#
# The server (`metering-server`, release build) runs on its embedded default: SQLite
# records with group commit (every answer waits for its ledger record to be durable) and
# in-memory counters, in a fresh temporary data directory, pinned to one core. The script
# signs up TENANTS tenants through the API on a plan with huge limits that an admin makes
# through the API, and wrk, pinned to the other core, tracks calls for them in turn, each
# with its own access token (JWT verification, Casbin authorization, decision, ledger
# record: the whole path). In the same run, wrk sends the same requests to a bare axum
# server (examples/track_bench_baseline.rs, same core) whose `POST /api/track` only parses
# the same JSON body, and to the same bare server made durable ("floor": it answers once
# the body is written and fdatasynced through a group commit, as the server answers once
# its ledger record is), which shows what durability alone costs on this disk. All are
# run ROUNDS times, interleaved, so drift on the machine hits them alike. It prints
# requests/s, latency p50/p99 and CPU time per request (user and system, all threads,
# from /proc) per run, the means, and the ratios.
#
#   bash scripts/bench-track.sh                  # 2 rounds of 10 s each
#   DURATION=5s ROUNDS=1 bash scripts/bench-track.sh
#   BATCH=100 bash scripts/bench-track.sh        # the server alone, on /api/track/batch
#
# Settings (environment): DURATION (wrk -d, default 10s), ROUNDS (2), CONNECTIONS (32),
# THREADS (wrk -t, 1), WARMUP (2s, not counted), TENANTS (100), PORT (3911; the baseline
# uses PORT+1, the floor PORT+2), SERVER_CPU (0), CLIENT_CPU (1), BUILD (1; 0 reuses the release binaries),
# SERVER_BIN and BASE_BIN (the binaries to run, to compare builds; default the release ones),
# BATCH (0; 1 to 1,000 sends that many events per request to POST /api/track/batch instead,
# measures the server alone, and prints events/s and CPU time per event).
#
# Target: the server's requests/s at least 50% of the baseline's, and its p99 under 5 ms.
# Loopback only; both servers are stopped and the data directory removed on exit. Needs
# curl, python3, taskset (util-linux) and wrk (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
TENANTS=${TENANTS:-100}
PORT=${PORT:-3911}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BATCH=${BATCH:-0}
case "$BATCH" in
  '' | *[!0-9]*) echo "BATCH must be a number from 0 to 1000" >&2; exit 1 ;;
esac
if [ "$BATCH" -gt 1000 ]; then echo "BATCH must be a number from 0 to 1000" >&2; exit 1; fi
targets="server baseline floor"
[ "$BATCH" -gt 0 ] && targets="server"
ADDR="127.0.0.1:${PORT}"
BASE_ADDR="127.0.0.1:$((PORT + 1))"
FLOOR_ADDR="127.0.0.1:$((PORT + 2))"
ADMIN_EMAIL="bench-admin@example.com"
ADMIN_PASSWORD="bench admin password $$-$RANDOM"

source scripts/lib/track-load.sh
need_load_tools
pin_server=(taskset -c "$SERVER_CPU")
pin_client=(taskset -c "$CLIENT_CPU")
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; server and wrk share the CPU and nothing is pinned" >&2
  pin_server=()
  pin_client=()
fi

server_bin=${SERVER_BIN:-target/release/metering-server}
base_bin=${BASE_BIN:-target/release/examples/track_bench_baseline}
if [ "${BUILD:-1}" != 0 ]; then
  echo "== building (release)"
  cargo build --release -p metering-server --bin metering-server
  cargo build --release --example track_bench_baseline
fi
for bin in "$server_bin" "$base_bin"; do
  [ -x "$bin" ] || { echo "$bin is not built" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "== starting the server on $ADDR (cpu $SERVER_CPU, data in $work/data)"
METERING_LISTEN="$ADDR" METERING_DATA_DIR="$work/data" RUST_LOG=warn \
  METERING_ADMIN_EMAIL="$ADMIN_EMAIL" METERING_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  METERING_SIGNUP_LIMIT="100000/hour" METERING_ACCESS_TOKEN_TTL="1h" \
  "${pin_server[@]}" "$server_bin" >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
wait_for "http://$ADDR/healthz" "$work/server.log" "$server_pid"

echo "== starting the baseline on $BASE_ADDR (cpu $SERVER_CPU)"
"${pin_server[@]}" "$base_bin" "$BASE_ADDR" >"$work/baseline.log" 2>&1 &
base_pid=$!
pids+=("$base_pid")
wait_for "http://$BASE_ADDR/" "$work/baseline.log" "$base_pid"

echo "== starting the floor (the baseline, durable) on $FLOOR_ADDR (cpu $SERVER_CPU, file in $work/floor)"
"${pin_server[@]}" "$base_bin" "$FLOOR_ADDR" --durable "$work/floor" >"$work/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
wait_for "http://$FLOOR_ADDR/" "$work/floor.log" "$floor_pid"

echo "== an admin makes the bench plan; $TENANTS tenants sign up on it"
write_track_script "$ADDR" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "$TENANTS" "$BATCH" "$work/track.lua"
# All three answer 200 to the bench request before anything is measured.
check_tracks "$work/track.lua" "$ADDR" "$BASE_ADDR" "$FLOOR_ADDR"

WRK_LIMIT=$((${DURATION%s} + 30))
CLK_TCK=$(getconf CLK_TCK)
load() { # addr duration pid -> "rps p50 p99 non2xx errors requests cpu_us_per_request"
  local out before after
  before=$(cpu_ticks "$3")
  out=$(timeout "$WRK_LIMIT" "${pin_client[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --timeout 2s \
    -s "$work/track.lua" "http://$1/api/track")
  after=$(cpu_ticks "$3")
  awk -v ticks=$((after - before)) -v hz="$CLK_TCK" \
    '$1 == "RESULT" { print $2, $3, $4, $5, $6, $7, ($7 > 0 ? ticks * 1e6 / hz / $7 : 0) }' <<<"$out"
}

echo "== warm-up ($WARMUP each)"
load "$ADDR" "$WARMUP" "$server_pid" >/dev/null
if [ "$BATCH" -eq 0 ]; then
  load "$BASE_ADDR" "$WARMUP" "$base_pid" >/dev/null
  load "$FLOOR_ADDR" "$WARMUP" "$floor_pid" >/dev/null
fi

echo "== measuring: $ROUNDS rounds x ($targets), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $TENANTS tenants, batch $BATCH"
: >"$work/results"
for round in $(seq "$ROUNDS"); do
  for target in $targets; do
    case "$target" in
      server) addr=$ADDR pid=$server_pid ;;
      baseline) addr=$BASE_ADDR pid=$base_pid ;;
      floor) addr=$FLOOR_ADDR pid=$floor_pid ;;
    esac
    read -r rps p50 p99 non2xx errors requests cpu <<<"$(load "$addr" "$DURATION" "$pid")"
    echo "$target $round $rps $p50 $p99 $non2xx $errors $requests $cpu" >>"$work/results"
    printf '   round %d %-9s %9.0f req/s  p50 %6d us  p99 %6d us  CPU %5.1f us/req  non-2xx %s  socket errors %s\n' \
      "$round" "$target" "$rps" "$p50" "$p99" "$cpu" "$non2xx" "$errors"
  done
done

echo
echo "== results ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
awk -v rounds="$ROUNDS" -v batch="$BATCH" -v targets="$targets" '
  { rps[$1] += $3; p50[$1] += $4; p99[$1] += $5; bad[$1] += $6 + $7; cpu[$1] += $9; if ($5 > worst[$1]) worst[$1] = $5 }
  END {
    printf "   %-9s %12s %9s %9s %14s %14s %7s\n", "target", "req/s (mean)", "p50 (us)", "p99 (us)", "worst p99 (us)", "CPU (us/req)", "errors"
    n = split(targets, names, " ")
    for (i = 1; i <= n; i++) {
      k = names[i]
      printf "   %-9s %12.0f %9.0f %9.0f %14d %14.1f %7d\n", k, rps[k] / rounds, p50[k] / rounds, p99[k] / rounds, worst[k], cpu[k] / rounds, bad[k]
    }
    if (batch > 0) {
      printf "\n   events/s (%d per request): %.0f, CPU time per event: %.1f us\n", batch, batch * rps["server"] / rounds, cpu["server"] / rounds / batch
      exit
    }
    ratio = rps["server"] / rps["baseline"]
    printf "\n   server / baseline requests/s: %.1f%%\n", 100 * ratio
    printf "   server / baseline CPU time per request: %.1fx\n", cpu["server"] / cpu["baseline"]
    printf "   floor / baseline requests/s: %.1f%% (durability alone, p99 %d us at worst)\n", 100 * rps["floor"] / rps["baseline"], worst["floor"]
    printf "   server / floor requests/s: %.1f%%\n", 100 * rps["server"] / rps["floor"]
    ok = ratio >= 0.5 && worst["server"] < 5000 && bad["server"] == 0
    printf "   target (>= 50%% of the baseline, p99 < 5 ms, no errors): %s\n", ok ? "met" : "NOT met"
  }' "$work/results"
