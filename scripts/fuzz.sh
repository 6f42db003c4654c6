#!/usr/bin/env bash
# Fuzzing at scale: the track event parser, the batch parser, JWT verification, the
# credential header fields (a bearer token, an API key, both) and the cursor decoder,
# each fed CASES generated and mutated inputs (default 10^6) by proptest; prints the count
# per target and fails on the first input that panics or is mishandled.
#
#   scripts/fuzz.sh                  # 10^6 inputs per target
#   CASES=10000 scripts/fuzz.sh      # a short pass
set -euo pipefail
cd "$(dirname "$0")/.."
export METERING_FUZZ_CASES="${CASES:-1000000}"
cargo test -q -p metering-server --lib fuzz_ -- --nocapture 2>&1 | grep -oE 'fuzz [a-z ]+: [0-9]+ inputs, [0-9]+ failures|test result.*|panicked.*|FAILED.*'
