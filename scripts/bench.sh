#!/usr/bin/env bash
# Upload and fetch throughput of HealthLock next to the reference `age` CLI on the same file,
# alternating rounds, with the peak RSS of each process. Not a test: it prints figures.
#
#   scripts/bench.sh [SIZE_MiB=256] [ROUNDS=3] [PARALLEL=0]
#
# With PARALLEL=N it then runs N uploads at once and N fetches at once (each of its own record)
# and prints the wall time and the server's peak memory across them.
# Needs `age` (Debian package) for the baseline; /usr/bin/time for peak memory.
#
# `age` never syncs what it writes, while HealthLock makes every byte durable (the server before
# it acknowledges an upload, the CLI before it renames a fetched file into place). So each `age`
# run is also timed followed by `sync FILE` on its output ("+ sync"): the same work with the
# durability HealthLock gives, which on a slow disk is most of the time. And each round times a
# plain durable copy of the file (`dd conv=fsync`: no crypto, no network, one fsync at the end),
# what the disk alone costs that minute.
#
# Every timed command starts with the same memory: just before it, the script writes SIZE MiB
# (SIZE × PARALLEL for the parallel runs) to a file in /dev/shm and deletes it. On a VM whose
# balloon reports free memory to its host (Firecracker, and the development VM), a page the
# guest has not touched lately costs a fault on the host the first time it is written — about
# 2 s of system time per GiB there — while a page freed a moment ago is reused at once. Without
# the priming, whichever command follows one that just deleted a large file (the durable copy,
# or an `age` output removed between runs) writes into warm pages and the next into cold ones:
# `age -r` of 2 GiB took 1.8–2.6 s primed and 5.3–6.6 s not, the same hour. BENCH_PRIME=0
# turns it off, to see that effect; without such a balloon it should change nothing.
# Priming does not always win: the kernel hands freed memory to the host in the background, and
# when it does so during a run, that run pays. On the development VM `age -d` took 0.57–1.58 s
# in one run of five rounds (system time 0.25–1.31 s), and 0.53–0.59 s with reporting off, the
# same hour. So the script says when free page reporting is on, and how to turn it off while
# measuring (as root: `echo 11 > /sys/module/page_reporting/parameters/page_reporting_order`,
# i.e. report only blocks larger than the largest there is; the old value back afterwards). It
# changes nothing itself. Every round's figure is printed beside the median, so noise shows.
set -euo pipefail
SIZE=${1:-256}
ROUNDS=${2:-3}
PARALLEL=${3:-0}
for tool in age age-keygen /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool: apt-get install age time" >&2; exit 2; }
done
REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
if ls /sys/bus/virtio/drivers/virtio_balloon/virtio* >/dev/null 2>&1 && [ -r $REPORTING ] \
  && [ "$(cat $REPORTING)" -le 10 ]; then
  echo "note: this VM hands free memory back to its host (free page reporting), which makes" >&2
  echo "  figures vary from round to round; to hold them steady while measuring, as root:" >&2
  echo "  echo 11 > $REPORTING   (and $(cat $REPORTING) back afterwards)" >&2
fi
cd "$(dirname "$0")/.."
cargo build --release -q -p healthlock -p healthlock-server
BIN=$PWD/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/healthlock-bench.XXXXXX")
PORT=${BENCH_PORT:-18090}
PRIME=/dev/shm/healthlock-bench-prime-$$
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK" "$PRIME"' EXIT
cd "$WORK"
export HEALTHLOCK_SERVER=http://127.0.0.1:$PORT
"$BIN/healthlock-server" --data ./data --bind 127.0.0.1:$PORT --max-upload 8GiB --quota 1024GiB 2>server.log &
SERVER=$!
until grep -q listening server.log; do kill -0 $SERVER || { cat server.log; exit 1; }; sleep 0.1; done

as() { local who=$1; shift; XDG_CONFIG_HOME="$WORK/$who" "$@"; }
echo 'bench-patient-password' | as patient "$BIN/healthlock" register --username patient --password-stdin >/dev/null
CODE=$("$BIN/healthlock-server" invite --data ./data --role doctor 2>/dev/null)
echo 'bench-doctor-password' | as doctor "$BIN/healthlock" register --username doctor --role doctor --invite "$CODE" --password-stdin >/dev/null

head -c $((SIZE * 1024 * 1024)) /dev/urandom > input.bin
age-keygen -o key.txt 2>/dev/null
RECIPIENT=$(age-keygen -y key.txt)

# prime MiB: hands the next command recently used memory (see the header); at most half of
# what is available, so that it never pushes the input file out of the page cache.
prime() {
  if [ "${BENCH_PRIME:-1}" = 1 ] && [ -w /dev/shm ]; then
    local half
    half=$(awk '/MemAvailable/ {print int($2 / 2048)}' /proc/meminfo 2>/dev/null || echo 0)
    dd if=/dev/zero of="$PRIME" bs=1M count=$(($1 < half ? $1 : half)) status=none
    rm -f "$PRIME"
  fi
}

# run LABEL CMD...: appends "LABEL seconds peak_kib" to results.txt
run() {
  local label=$1; shift
  sync
  prime "$SIZE"
  /usr/bin/time -f "%e %M" -o t.txt "$@" >/dev/null 2>>cmd.log
  echo "$label $(cat t.txt)" >> results.txt
}
: > results.txt
for r in $(seq "$ROUNDS"); do
  run durable-copy dd if=input.bin of=floor.bin bs=1M conv=fsync status=none
  rm -f floor.bin
  run age-encrypt age -r "$RECIPIENT" -o base.age input.bin
  rm -f base.age
  run age-encrypt+sync sh -c 'age -r "$1" -o base.age input.bin && sync base.age' - "$RECIPIENT"
  run hl-upload env XDG_CONFIG_HOME="$WORK/patient" "$BIN/healthlock" upload input.bin --category imaging
  ID=$(as patient "$BIN/healthlock" --json records | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
  LINK=$(as patient "$BIN/healthlock" --json share "$ID" --role doctor | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])')
  run age-decrypt age -d -i key.txt -o base.out base.age
  rm -f base.out
  run age-decrypt+sync sh -c 'age -d -i key.txt -o base.out base.age && sync base.out'
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
# /usr/bin/time counts hundredths: a tiny file (CI's) can take "0.00".
def ratio(a, b): return f"{a / b:.2f}x" if b else "n/a (too fast to time)"
def rss(label): return max(k for _, k in rows[label]) / 1024
print(f"file: {size} MiB, rounds: {len(rows['hl-upload'])} (medians; peak RSS is the max)")
print(f"{'what':<17} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}  every round, in order")
labels = ["durable-copy", "age-encrypt", "age-encrypt+sync", "hl-upload", "age-decrypt", "age-decrypt+sync", "hl-fetch"]
for label in labels:
    s = med(label)
    each = " ".join(f"{t:.2f}" for t, _ in rows[label])
    print(f"{label:<17} {s:>8.2f} {size / s if s else 0:>8.0f} {rss(label):>13.1f}  {each}")
for hl, base in [("hl-upload", "age-encrypt"), ("hl-fetch", "age-decrypt")]:
    print(f"{hl} / {base}: {ratio(med(hl), med(base))}; / {base}+sync: {ratio(med(hl), med(base + '+sync'))}")
for hl, base in [("hl-upload", "age-encrypt"), ("hl-fetch", "age-decrypt")]:
    copy = med("durable-copy")
    print(f"durable-copy / {base}: {ratio(copy, med(base))}; {hl} / durable-copy: {ratio(med(hl), copy)}")
print(f"server peak RSS: {server_rss / 1024:.1f} MiB")
PY

if [ "$PARALLEL" -gt 0 ]; then
  # Free the disk first: every round's record, and the fetched copies.
  for id in $(as patient "$BIN/healthlock" --json records | python3 -c 'import json,sys; print(" ".join(r["id"] for r in json.load(sys.stdin)))'); do
    as patient "$BIN/healthlock" delete "$id" >/dev/null
  done
  rm -rf fetched
  WANT=$(sha256sum input.bin | cut -d' ' -f1)
  PIDS=()
  sync
  prime $((SIZE * PARALLEL))
  T0=$(date +%s%N)
  for i in $(seq "$PARALLEL"); do
    /usr/bin/time -f "%M" -o "up-$i.rss" env XDG_CONFIG_HOME="$WORK/patient" "$BIN/healthlock" upload input.bin --category imaging --title "copy $i" >/dev/null 2>>cmd.log &
    PIDS+=($!)
  done
  wait "${PIDS[@]}" # not a bare wait: that would wait for the server too
  PIDS=()
  T1=$(date +%s%N)
  LINKS=$(as patient "$BIN/healthlock" --json records | python3 -c 'import json,sys; print(" ".join(r["id"] for r in json.load(sys.stdin)))')
  i=0
  for id in $LINKS; do
    i=$((i + 1))
    as patient "$BIN/healthlock" --json share "$id" --role doctor | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])' > "link-$i"
  done
  sync
  prime $((SIZE * PARALLEL))
  T2=$(date +%s%N)
  for i in $(seq "$PARALLEL"); do
    /usr/bin/time -f "%M" -o "down-$i.rss" env XDG_CONFIG_HOME="$WORK/doctor" "$BIN/healthlock" --json fetch "$(cat "link-$i")" -o "par-$i" > "par-$i.json" 2>>cmd.log &
    PIDS+=($!)
  done
  wait "${PIDS[@]}"
  T3=$(date +%s%N)
  for i in $(seq "$PARALLEL"); do
    python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["files"]; sys.exit(f[0]["sha256"] != sys.argv[2])' "par-$i.json" "$WANT" \
      || { echo "parallel fetch $i differs!"; exit 1; }
    rm -rf "par-$i"
  done
  PAR_RSS=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)
  python3 - "$SIZE" "$PARALLEL" "$T0" "$T1" "$T2" "$T3" "$PAR_RSS" <<'PY'
import sys, glob
size, n, t0, t1, t2, t3, rss = map(int, sys.argv[1:])
up, down = (t1 - t0) / 1e9, (t3 - t2) / 1e9
cli = max(int(open(f).read().split()[-1]) for f in glob.glob("*-*.rss")) / 1024
print(f"{n} uploads at once: {up:.2f} s ({n * size / up:.0f} MiB/s in all); {n} fetches at once: {down:.2f} s ({n * size / down:.0f} MiB/s)")
print(f"peak RSS: server {rss / 1024:.1f} MiB (since start), largest CLI {cli:.1f} MiB")
PY
fi
