#!/usr/bin/env bash
# The metering layer's cost on an axum route over real HTTP on loopback.
#
# One server (examples/layer_bench_server.rs, single-threaded, pinned to one core) serves
# the same trivial handler three ways: bare, behind MeteringLayer (SQLite ledger with group
# commit, in-memory counters) and behind tower_governor's GovernorLayer. wrk, pinned to the
# other core, loads each route in turn; the triplet is repeated ROUNDS times, interleaved,
# so drift on the machine hits all three alike. It prints requests/s, latency p50/p99 and
# the server's CPU time per request (user + system, all its threads, from /proc: less
# sensitive than requests/s to other work on the machine) per route and run, then the
# means and the ratios metered/bare and metered/governed. "server core busy" is how much
# of its core the server used: below ~95% the run was limited by something else (wrk, or
# other work on the machine) and its requests/s understate what the route can do.
#
#   bash scripts/bench-layer.sh                      # 3 rounds of 10 s per route
#   DURATION=5s ROUNDS=2 bash scripts/bench-layer.sh
#   ROUTES="bare layer-only metered-memory metered governed" bash scripts/bench-layer.sh
#
# The last form adds the server's diagnostic routes, which split the metered route's cost
# into the layer itself (layer-only), the engine (metered-memory: no disk) and the SQLite
# ledger writer (metered).
#
# Settings (environment): ROUTES (default "bare metered governed"; the ratios need bare,
# metered and governed), DURATION (wrk -d, default 10s), ROUNDS (3), CONNECTIONS (32),
# THREADS (wrk -t, 1), WARMUP (2s per route, not counted), PORT (3901), SERVER_CPU (0),
# CLIENT_CPU (1), BUILD (1; 0 reuses the release binary of an earlier build).
#
# Loopback only; the server is stopped (and its temporary ledger removed) on exit,
# whatever the exit. Needs taskset (util-linux), curl, and wrk (installed with apt-get when
# missing). Takes about routes * (ROUNDS * DURATION + WARMUP) after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
PORT=${PORT:-3901}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ADDR="127.0.0.1:${PORT}"
read -r -a ROUTES <<<"${ROUTES:-bare metered governed}"

seconds() { # "10s" / "2m" / "30" -> seconds
  local d=$1
  case $d in
    *ms) echo 1 ;;
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
  esac
}
WRK_LIMIT=$(($(seconds "$DURATION") + 30)) # hard bound on one wrk run

if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y wrk || { $sudo apt-get update && $sudo apt-get install -y wrk; }
fi
if ! command -v taskset >/dev/null 2>&1; then
  echo "taskset (util-linux) is required" >&2
  exit 1
fi
pin_server=(taskset -c "$SERVER_CPU")
pin_client=(taskset -c "$CLIENT_CPU")
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; server and wrk share the CPU and nothing is pinned" >&2
  pin_server=()
  pin_client=()
fi

server_bin=target/release/examples/layer_bench_server
if [ "${BUILD:-1}" != 0 ]; then
  echo "== building (release)"
  cargo build --release --example layer_bench_server
elif [ ! -x "$server_bin" ]; then
  echo "$server_bin is not built (BUILD=0)" >&2
  exit 1
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wrk reports through this: requests/s, p50 and p99 in microseconds, non-2xx/3xx answers,
# socket errors, and the number of requests.
cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
LUA
ticks_per_second=$(getconf CLK_TCK)

# The machine's load before this script adds its own (about 2 while it measures).
load_idle=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== starting the server on $ADDR (cpu ${SERVER_CPU}); load average $load_idle"
"${pin_server[@]}" "$server_bin" "$ADDR" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  grep -q "listening on" "$work/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "listening on" "$work/server.log" || { echo "the server did not start" >&2; exit 1; }

url() { echo "http://$ADDR/$1/42"; }

# The server's CPU time so far (user + system, every thread), in clock ticks.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }

# One wrk run: prints "rps p50 p99 non2xx errors cpu_us_per_request".
load() { # route duration
  local out before after
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server is gone:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  before=$(server_ticks)
  out=$(timeout "$WRK_LIMIT" "${pin_client[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --timeout 2s \
    -H "x-tenant-id: bench" -s "$work/report.lua" "$(url "$1")")
  after=$(server_ticks)
  awk -v ticks=$((after - before)) -v hz="$ticks_per_second" \
    '$1 == "RESULT" { print $2, $3, $4, $5, $6, ($7 > 0 ? ticks / hz * 1e6 / $7 : 0) }' <<<"$out"
}

for route in "${ROUTES[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-tenant-id: bench' "$(url "$route")")
  if [ "$code" != 200 ]; then
    echo "$route answered $code, not 200" >&2
    exit 1
  fi
done

echo "== warm-up ($WARMUP per route)"
for route in "${ROUTES[@]}"; do load "$route" "$WARMUP" >/dev/null; done

echo "== measuring: $ROUNDS rounds x (${ROUTES[*]}), wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
: >"$work/results"
for round in $(seq "$ROUNDS"); do
  for route in "${ROUTES[@]}"; do
    read -r rps p50 p99 non2xx errors cpu <<<"$(load "$route" "$DURATION")" || true
    if [ -z "${cpu:-}" ]; then
      echo "the wrk run on $route failed" >&2
      exit 1
    fi
    echo "$route $round $rps $p50 $p99 $non2xx $errors $cpu" >>"$work/results"
    busy=$(awk -v c="$cpu" -v r="$rps" 'BEGIN { printf "%.0f", c * r / 1e4 }')
    printf '   round %d %-15s %8.0f req/s  p50 %6d us  p99 %6d us  cpu %5.1f us/req  server core %3d%% busy  errors %s/%s\n' \
      "$round" "$route" "$rps" "$p50" "$p99" "$cpu" "$busy" "$non2xx" "$errors"
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "== results ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
echo "   load average (1, 5, 15 min) before the server started: $load_idle; at the end: $load_end"
echo "   (the benchmark itself keeps about 2 cores busy)"
awk -v rounds="$ROUNDS" -v routes="${ROUTES[*]}" '
  { rps[$1] += $3; p50[$1] += $4; p99[$1] += $5; bad[$1] += $6 + $7; cpu[$1] += $8
    busy[$1] += $3 * $8 / 1e4; r[$1, $2] = $3; c[$1, $2] = $8 }
  function ratio(a, b,    i) {
    if (!(a in rps) || !(b in rps)) return
    printf "   %-25s %6.1f%%  (per round:", a "/" b ":", 100 * rps[a] / rps[b]
    for (i = 1; i <= rounds; i++) printf " %.1f%%", 100 * r[a, i] / r[b, i]
    printf ")\n"
  }
  # The throughput ratio a/b a saturated server core would give: cpu(b) / cpu(a).
  function cratio(a, b,    i) {
    if (!(a in cpu) || !(b in cpu)) return
    printf "   %-25s %6.1f%%  (per round:", a "/" b ":", 100 * cpu[b] / cpu[a]
    for (i = 1; i <= rounds; i++) printf " %.1f%%", 100 * c[b, i] / c[a, i]
    printf ")\n"
  }
  END {
    n = split(routes, names, " ")
    printf "   %-15s %12s %9s %9s %13s %12s %7s\n", "route", "req/s (mean)", "p50 (us)", "p99 (us)", "cpu (us/req)",
      "core busy", "errors"
    for (i = 1; i <= n; i++) {
      k = names[i]
      printf "   %-15s %12.0f %9.0f %9.0f %13.1f %11.0f%% %7d\n", k, rps[k] / rounds, p50[k] / rounds, p99[k] / rounds,
        cpu[k] / rounds, busy[k] / rounds, bad[k]
    }
    printf "\n   from requests/s:\n"
    ratio("metered", "bare")
    ratio("metered", "governed")
    for (i = 1; i <= n; i++) if (names[i] != "bare" && names[i] != "metered") ratio(names[i], "bare")
    printf "\n   from the server CPU time per request (the throughput ratio on a saturated core):\n"
    cratio("metered", "bare")
    cratio("metered", "governed")
    for (i = 1; i <= n; i++) if (names[i] != "bare" && names[i] != "metered") cratio(names[i], "bare")
    ok = rps["metered"] >= 0.9 * rps["bare"] && (!("governed" in rps) || rps["metered"] >= rps["governed"])
    printf "\n   target (metered >= 90%% of bare and >= governed): %s\n", ok ? "met" : "NOT met"
  }' "$work/results"
