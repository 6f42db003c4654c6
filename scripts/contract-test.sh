#!/usr/bin/env bash
# Contract tests: a real metering-server (fresh data directory, free port, a test admin) is
# tested by schemathesis against its own /openapi.json, without a token, with a user's
# token and with an admin's, with the checks: no 5xx, response schema conformance, status
# code conformance, content-type conformance. Routes that end the session or change a
# tenant (POST /auth/logout, PATCH /admin/tenants/{id}) would change the callers under
# test, so they run last, in a phase of their own against a freshly signed-up tenant:
# its user logs out, and the admin changes that tenant only (the path's `id` is fixed to
# it), while the callers of the other phases are left as they were.
#
#   scripts/contract-test.sh            # EXAMPLES per operation (default 25)
#   EXAMPLES=100 scripts/contract-test.sh
#
# Needs python3 (with venv) and access to PyPI the first time; the virtual environment is
# kept under the target directory.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
examples="${EXAMPLES:-25}"
venv="$target/contract-venv"

echo "== build"
cargo build -q -p metering-server
server="$target/debug/metering-server"

if [ ! -x "$venv/bin/st" ]; then
  echo "== schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis>=4,<5"
fi
"$venv/bin/st" --version

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
log="$data/server.log"
admin_email="contract-admin@example.com"
admin_password="a contract-test admin password"

METERING_LISTEN="127.0.0.1:$port" \
METERING_DATA_DIR="$data/store" \
METERING_JWT_SECRET="a contract-test secret of at least thirty-two bytes" \
METERING_ADMIN_EMAIL="$admin_email" \
METERING_ADMIN_PASSWORD="$admin_password" \
METERING_SIGNUP_LIMIT="1000000/hour" \
  "$server" >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { cat "$log" >&2; exit 1; }

token_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'; }
user_token="$(curl -fsS -H 'content-type: application/json' \
  -d '{"email":"contract-user@example.com","password":"a contract-test user password"}' \
  "$base/auth/signup" | token_of)"
admin_token="$(curl -fsS -H 'content-type: application/json' \
  -d "{\"email\":\"$admin_email\",\"password\":\"$admin_password\"}" "$base/auth/login" | token_of)"

checks="not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
status=0
# run WHO [ST-OPTIONS...]: one schemathesis run; a config file in $config applies to it.
config=""
run() {
  local who="$1"; shift
  echo "== schemathesis as $who"
  local with_config=()
  [ -n "$config" ] && with_config=(--config-file "$config")
  # Run from the temporary directory, so schemathesis's cache stays out of the tree. One
  # worker: with two, Python 3.11's parser, shared by the worker threads, now and then
  # fails inside hypothesis ("AST constructor recursion depth mismatch").
  (cd "$data" && "$venv/bin/st" "${with_config[@]}" run "$base/openapi.json" \
    --checks "$checks" \
    --max-examples "$examples" \
    --seed 1 \
    --workers 1 \
    --report junit --report-dir "$target/contract-report/$who" \
    "$@") || status=1
}
session_routes=(--exclude-path /auth/logout --exclude-name 'PATCH /admin/tenants/{id}')
run anonymous "${session_routes[@]}"
run user "${session_routes[@]}" -H "Authorization: Bearer $user_token"
run admin "${session_routes[@]}" -H "Authorization: Bearer $admin_token"

# Last, the routes that end a session or change a tenant, on a tenant of their own.
own="$(curl -fsS -H 'content-type: application/json' \
  -d '{"email":"contract-own@example.com","password":"a contract-test own password"}' "$base/auth/signup")"
own_token="$(printf '%s' "$own" | token_of)"
own_tenant="$(printf '%s' "$own" | python3 -c 'import json, sys; print(json.load(sys.stdin)["tenant_id"])')"
config="$data/own-tenant.toml"
cat >"$config" <<TOML
[[operations]]
include-name = "PATCH /admin/tenants/{id}"
parameters = { "path.id" = "$own_tenant" }
TOML
run own-user --include-path /auth/logout -H "Authorization: Bearer $own_token"
run own-admin --include-name 'PATCH /admin/tenants/{id}' -H "Authorization: Bearer $admin_token"

if [ "$status" -ne 0 ]; then
  echo "contract tests failed; server log: " >&2
  tail -n 50 "$log" >&2
fi
exit "$status"
