#!/usr/bin/env bash
# The charged-once model test (tests/charged_once_model.rs) at scale: CASES random
# sequences (default 100,000) per record store, each of 1-59 operations (tracks with and
# without ids and timestamps, ids sent back, clock moves across day and month edges,
# restarts graceful and not, hot-store wipes, grants, plan changes), checked against a
# model that charges each event_id once.
#
#   bash scripts/charged-once-model.sh
#   CASES=2000 STORES="sqlite" bash scripts/charged-once-model.sh
#
# Settings (environment): CASES (100000), STORES ("memory sqlite"), DATA (the directory
# the SQLite files go to, default a fresh one under /dev/shm, so syncs cost little and the
# run measures our code). The stores run one after the other, in a release build; it
# prints, per store, the sequences run, the seconds taken and sequences per second.
# A failure prints proptest's smallest failing sequence and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-100000}
STORES=${STORES:-memory sqlite}
DATA=${DATA:-$(mktemp -d /dev/shm/metering-model.XXXXXX)}
trap 'rm -rf "$DATA"' EXIT

cargo test --release --test charged_once_model --no-run >/dev/null 2>&1 || cargo test --release --test charged_once_model --no-run

printf '%-8s %10s %10s %14s\n' store sequences seconds sequences/s
for store in $STORES; do
    start=$(date +%s.%N)
    TMPDIR=$DATA METERING_MODEL_CASES=$CASES \
        cargo test --release --test charged_once_model -q -- --exact "the_${store}_store_charges_each_event_id_once" \
        >"$DATA/$store.log" 2>&1 || { cat "$DATA/$store.log"; exit 1; }
    end=$(date +%s.%N)
    awk -v s="$store" -v n="$CASES" -v a="$start" -v b="$end" \
        'BEGIN { printf "%-8s %10d %10.1f %14.1f\n", s, n, b - a, n / (b - a) }'
done
