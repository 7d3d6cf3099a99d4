#!/usr/bin/env bash
# Upload and fetch throughput of HealthLock next to the reference `age` CLI on the same file,
# alternating rounds, with the peak RSS of each process. Not a test: it prints figures.
#
#   scripts/bench.sh [SIZE_MiB=256] [ROUNDS=3]
#
# Needs `age` (Debian package) for the baseline; /usr/bin/time for peak memory.
set -euo pipefail
SIZE=${1:-256}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p healthlock -p healthlock-server
BIN=$PWD/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/healthlock-bench.XXXXXX")
PORT=${BENCH_PORT:-18090}
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
export HEALTHLOCK_SERVER=http://127.0.0.1:$PORT
"$BIN/healthlock-server" --data ./data --bind 127.0.0.1:$PORT --max-upload 8GiB 2>server.log &
SERVER=$!
until grep -q listening server.log; do kill -0 $SERVER || { cat server.log; exit 1; }; sleep 0.1; done

as() { local who=$1; shift; XDG_CONFIG_HOME="$WORK/$who" "$@"; }
echo 'bench-patient-password' | as patient "$BIN/healthlock" register --username patient --password-stdin >/dev/null
CODE=$("$BIN/healthlock-server" invite --data ./data --role doctor 2>/dev/null)
echo 'bench-doctor-password' | as doctor "$BIN/healthlock" register --username doctor --role doctor --invite "$CODE" --password-stdin >/dev/null

head -c $((SIZE * 1024 * 1024)) /dev/urandom > input.bin
age-keygen -o key.txt 2>/dev/null
RECIPIENT=$(age-keygen -y key.txt)

# run LABEL CMD...: appends "LABEL seconds peak_kib" to results.txt
run() {
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o t.txt "$@" >/dev/null 2>>cmd.log
  echo "$label $(cat t.txt)" >> results.txt
}
: > results.txt
for r in $(seq "$ROUNDS"); do
  run age-encrypt age -r "$RECIPIENT" -o base.age input.bin
  run hl-upload env XDG_CONFIG_HOME="$WORK/patient" "$BIN/healthlock" upload input.bin --category imaging
  ID=$(as patient "$BIN/healthlock" --json records | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
  LINK=$(as patient "$BIN/healthlock" --json share "$ID" --role doctor | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])')
  run age-decrypt age -d -i key.txt -o base.out base.age
  rm -rf fetched
  run hl-fetch env XDG_CONFIG_HOME="$WORK/doctor" "$BIN/healthlock" fetch "$LINK" -o fetched
  cmp -s fetched/input.bin input.bin || { echo "fetched file differs!"; exit 1; }
  rm -f base.age base.out
done
SERVER_RSS=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)

python3 - "$SIZE" "$SERVER_RSS" <<'PY'
import sys, statistics, collections
size, server_rss = int(sys.argv[1]), int(sys.argv[2])
rows = collections.defaultdict(list)
for line in open("results.txt"):
    label, secs, kib = line.split()
    rows[label].append((float(secs), int(kib)))
def med(label): return statistics.median(s for s, _ in rows[label])
def rss(label): return max(k for _, k in rows[label]) / 1024
print(f"file: {size} MiB, rounds: {len(rows['hl-upload'])} (medians; peak RSS is the max)")
print(f"{'what':<14} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
for label in ["age-encrypt", "hl-upload", "age-decrypt", "hl-fetch"]:
    s = med(label)
    print(f"{label:<14} {s:>8.2f} {size / s if s else 0:>8.0f} {rss(label):>13.1f}")
print(f"upload / age encrypt: {med('hl-upload') / med('age-encrypt'):.2f}x")
print(f"fetch / age decrypt:  {med('hl-fetch') / med('age-decrypt'):.2f}x")
print(f"server peak RSS: {server_rss / 1024:.1f} MiB")
PY
