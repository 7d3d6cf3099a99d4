#!/usr/bin/env bash
# A patient's everyday commands and the server's start on a store holding a large history:
# by default 100,000 records and 1,000,000 audit events over 1,000 patients (issue 5). Not a
# test: it prints medians. See docs/performance.md.
#
#   scripts/bench-large-store.sh [RECORDS=100000] [EVENTS=1000000] [OWN_RECORDS=100] [OWN_EVENTS=1000] [ROUNDS=5]
#
# OWN_* is what the timed patient holds; the rest is spread over 999 other patients.
# OWN_EVENTS=EVENTS puts the whole log in the timed patient's account.
set -euo pipefail
RECORDS=${1:-100000}
EVENTS=${2:-1000000}
OWN_RECORDS=${3:-100}
OWN_EVENTS=${4:-1000}
ROUNDS=${5:-5}
cd "$(dirname "$0")/.."
cargo build --release -q -p healthlock -p healthlock-server -p largestore
BIN=$PWD/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/healthlock-large.XXXXXX")
PORT=${BENCH_PORT:-18091}
SERVER=
stop() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; SERVER=; }
trap 'stop; rm -rf "$WORK"' EXIT
cd "$WORK"
export HEALTHLOCK_SERVER=http://127.0.0.1:$PORT XDG_CONFIG_HOME=$WORK/patient

# start [LABEL]: runs the server; with LABEL, appends "LABEL nanoseconds until it answers".
start() {
  local t0
  t0=$(date +%s%N)
  "$BIN/healthlock-server" --data ./data --bind 127.0.0.1:$PORT >/dev/null 2>>server.log &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/v1/server-key" >/dev/null; do
    kill -0 $SERVER 2>/dev/null || { cat server.log; exit 1; }
    sleep 0.005
  done
  [ -z "${1:-}" ] || echo "$1 $(( $(date +%s%N) - t0 ))" >> results.txt
}

start
# The timed patient reuses this account's keys and password (see tools/largestore).
echo 'large-store-patient-password' | XDG_CONFIG_HOME=$WORK/template "$BIN/healthlock" register --username template --password-stdin >/dev/null
stop
echo "loading $RECORDS records and $EVENTS events ($OWN_RECORDS and $OWN_EVENTS for the timed patient)..."
/usr/bin/time -f "loaded in %e s" "$BIN/largestore" --data ./data --template template --patient patient \
  --records "$RECORDS" --events "$EVENTS" --own-records "$OWN_RECORDS" --own-events "$OWN_EVENTS" 2>&1 | grep -v '%:'
echo "store file: $(du -h data/healthlock.redb | cut -f1)"

: > results.txt
for r in $(seq "$ROUNDS"); do
  start start
  [ "$r" -lt "$ROUNDS" ] && stop
done
echo 'large-store-patient-password' | "$BIN/healthlock" login --username patient --password-stdin >/dev/null
# timed LABEL CMD...: appends "LABEL nanoseconds" to results.txt
timed() {
  local label=$1; shift
  local t0
  t0=$(date +%s%N)
  "$@" >/dev/null
  echo "$label $(( $(date +%s%N) - t0 ))" >> results.txt
}
# The device's first check reads the whole log; later checks read only what is new.
timed verify-first "$BIN/healthlock" audit --verify
echo "a new record" > note.txt
for r in $(seq "$ROUNDS"); do
  timed records "$BIN/healthlock" --json records
  timed audit-since-2d "$BIN/healthlock" --json audit --since 2d
  "$BIN/healthlock" upload note.txt --category other >/dev/null # one new event
  timed verify-new "$BIN/healthlock" audit --verify
done
echo "audit --since 2d returned $("$BIN/healthlock" --json audit --since 2d | wc -l) of the timed patient's events"
python3 - "$RECORDS" "$EVENTS" "$OWN_RECORDS" "$OWN_EVENTS" <<'PY'
import sys, statistics, collections
records, events, own_records, own_events = map(int, sys.argv[1:])
rows = collections.defaultdict(list)
for line in open("results.txt"):
    label, ns = line.split()
    rows[label].append(int(ns) / 1e9)
print(f"store: {records:,} records, {events:,} events; timed patient: {own_records:,} records, {own_events:,} events")
print(f"{'what':<40} {'median ms':>10} {'max ms':>8} {'runs':>5}")
names = {
    "start": "server start (until it answers)",
    "records": "healthlock records",
    "audit-since-2d": "healthlock audit --since 2d",
    "verify-new": "healthlock audit --verify (1 new)",
    "verify-first": "healthlock audit --verify (first: all)",
}
for label, name in names.items():
    v = rows[label]
    print(f"{name:<40} {statistics.median(v) * 1000:>10.0f} {max(v) * 1000:>8.0f} {len(v):>5}")
PY
