# Shared by the `POST /api/track` load scripts (bench-track.sh, bench-distributed.sh):
# sourced, not run. It needs `work` (a temporary directory of the caller's) and the array
# `pids` (processes to stop on exit) set before anything is started.

# Installs wrk when missing; checks the other tools the scripts call.
need_load_tools() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "== installing wrk"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y wrk || { $sudo apt-get update && $sudo apt-get install -y wrk; }
  fi
  local tool
  for tool in taskset curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
  done
}

# Stops every process in `pids` (TERM, then KILL after 10 s) and the MongoDB test server
# start_own_stores started, and removes `work`.
stop_all() {
  local pid
  if [ -n "${own_mongo_port:-}" ]; then scripts/mongodb-test-server.sh stop "$own_mongo_port" || true; fi
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}

# start_own_stores REDIS_PORT MONGO_PORT [MONGO_DIR]: a redis-server without persistence
# and the MongoDB test server (its data in MONGO_DIR, in memory without), both the
# script's own and stopped by stop_all; sets redis_pid, mongo_uri and mongo_pid.
start_own_stores() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  own_mongo_port=$2
  mongo_uri=$(scripts/mongodb-test-server.sh start "$2" ${3:+"$3"})
  mongo_pid=$(cat "${TMPDIR:-/tmp}/metering-mongodb-$2/pid")
}

# wait_for URL LOG PID: waits until URL answers, failing with LOG when PID exits first.
wait_for() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  cat "$2" >&2
  exit 1
}

# json_field NAME: prints one top-level field of the JSON document on stdin.
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# write_track_script ADDR ADMIN_EMAIL ADMIN_PASSWORD TENANTS BATCH OUT: an admin makes the
# bench plan (huge limits) on the server at ADDR, TENANTS tenants sign up on it, and OUT
# becomes the wrk script that tracks calls for them in turn, each with its own access token
# (BATCH > 0: that many events per POST /api/track/batch). Its `done` prints one line:
# RESULT requests/s p50 p99 non-2xx socket-errors requests.
write_track_script() {
  local addr=$1 email=$2 password=$3 tenants=$4 batch=$5 out=$6 admin_token answer i
  admin_token=$(curl -sf -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" "http://$addr/auth/login" | json_field access_token)
  curl -sf -o /dev/null -H 'content-type: application/json' -H "authorization: Bearer $admin_token" \
    -d '{"id":"bench","name":"Bench","monthly_credits":1000000000000,"limits":[{"max":1000000000,"per":"day"}]}' \
    "http://$addr/admin/plans"
  {
    echo "creds = {"
    for i in $(seq "$tenants"); do
      answer=$(curl -sf -H 'content-type: application/json' \
        -d "{\"email\":\"bench$i@example.com\",\"password\":\"bench password $i\",\"plan\":\"bench\"}" \
        "http://$addr/auth/signup")
      printf '  { "%s", "%s" },\n' "$(json_field access_token <<<"$answer")" "$(json_field tenant_id <<<"$answer")"
    done
    echo "}"
    echo "batch = $batch"
    cat <<'LUA'
local i = 0
local bodies, headers = {}, {}
for k, c in ipairs(creds) do
  local one = '{"tenant_id":"' .. c[2] .. '","service_name":"bench","endpoint":"/items/{id}","method":"GET","credits_used":1}'
  if batch > 0 then
    local events = {}
    for j = 1, batch do events[j] = one end
    bodies[k] = '{"events":[' .. table.concat(events, ",") .. ']}'
  else
    bodies[k] = one
  end
  headers[k] = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. c[1] }
end
local path = batch > 0 and "/api/track/batch" or "/api/track"
request = function()
  i = i % #creds + 1
  return wrk.format("POST", path, headers[i], bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
LUA
  } >"$out"
}

# check_tracks SCRIPT ADDR...: each ADDR answers 200 to the first tenant's bench request
# before anything is measured.
check_tracks() {
  local script=$1 first token tenant body addr code
  shift
  first=$(python3 - "$script" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
token, tenant = re.search(r'\{ "([^"]+)", "([^"]+)" \}', text).groups()
print(token, tenant)
PY
  )
  read -r token tenant <<<"$first"
  body="{\"tenant_id\":\"$tenant\",\"service_name\":\"bench\",\"endpoint\":\"/items/{id}\",\"method\":\"GET\",\"credits_used\":1}"
  for addr in "$@"; do
    code=$(curl -s -o "$work/check" -w '%{http_code}' -H 'content-type: application/json' \
      -H "authorization: Bearer $token" -d "$body" "http://$addr/api/track")
    if [ "$code" != 200 ]; then
      echo "http://$addr/api/track answered $code, not 200: $(cat "$work/check")" >&2
      exit 1
    fi
  done
}

# cpu_ticks PID...: user + system clock ticks of all the processes' threads so far.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}
