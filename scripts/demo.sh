#!/usr/bin/env bash
# The README's five-minute walk, run for real: a patient shares a prescription with a pharmacist.
# Usage: scripts/demo.sh   (builds release binaries, uses a throwaway data dir and port 18080)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p healthlock -p healthlock-server
BIN=$PWD/target/release
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
export HEALTHLOCK_SERVER=http://127.0.0.1:18080
"$BIN/healthlock-server" --data ./healthlock-data --bind 127.0.0.1:18080 2>server.log &
SERVER=$!
until grep -q listening server.log; do
  kill -0 $SERVER 2>/dev/null || { cat server.log; exit 1; }
  sleep 0.1
done

say() { printf '\n$ %s\n' "$*"; }
as() { local who=$1; shift; XDG_CONFIG_HOME="$WORK/$who" "$@"; }

printf 'Rx: amoxicillin 500 mg, three times daily for 7 days\n' > amoxicillin.txt
printf 'Full blood count: normal\n' > blood-test.txt

say "healthlock register --username alice          # the patient (password typed at the prompt)"
echo 'alice-correct-horse' | as alice "$BIN/healthlock" register --username alice --password-stdin
say "healthlock upload amoxicillin.txt --category prescription --title 'Amoxicillin'"
as alice "$BIN/healthlock" upload amoxicillin.txt --category prescription --title 'Amoxicillin'
say "healthlock upload blood-test.txt --category lab"
as alice "$BIN/healthlock" upload blood-test.txt --category lab
say "healthlock records"
as alice "$BIN/healthlock" records
IDS=$(as alice "$BIN/healthlock" --json records | python3 -c 'import json,sys; print(" ".join(r["id"][:8] for r in json.load(sys.stdin)))')
say "healthlock share $IDS --role pharmacist --expires 2h --uses 1"
as alice "$BIN/healthlock" share $IDS --role pharmacist --expires 2h --uses 1 2>&1 | tee share.txt
LINK=$(grep '^Link:' share.txt | awk '{print $2}')

say "healthlock-server invite --role pharmacist    # the operator"
CODE=$("$BIN/healthlock-server" invite --data ./healthlock-data --role pharmacist 2>/dev/null)
echo "$CODE"
say "healthlock register --username bob --role pharmacist --invite $CODE"
echo 'bob-pharmacy-secret' | as bob "$BIN/healthlock" register --username bob --role pharmacist --invite "$CODE" --password-stdin
say "healthlock fetch '$LINK' -o received"
as bob "$BIN/healthlock" fetch "$LINK" -o received
say "cat received/amoxicillin.txt"
cat received/amoxicillin.txt
say "healthlock fetch '$LINK' -o again            # --uses 1: the second open is refused"
as bob "$BIN/healthlock" fetch "$LINK" -o again || echo "(exit code $?)"

say "healthlock notifications                      # back to the patient"
as alice "$BIN/healthlock" notifications
say "healthlock shares"
as alice "$BIN/healthlock" shares
