#!/usr/bin/env bash
# Runs schemathesis against a live server with the API's OpenAPI document.
#   scripts/schemathesis.sh [MAX_EXAMPLES=25]
# Gate: no server error (5xx) anywhere. Then every check is run and reported; schema-level
# conformance findings that need semantic knowledge (a syntactically valid but unusable age
# recipient, say) are shown but do not fail the run. Needs the debug binaries (cargo build or
# cargo test --workspace) and `pip install schemathesis`.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-25}
BIN=$PWD/target/debug
WORK=$(mktemp -d)
PORT=${ST_PORT:-18333}
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/healthlock-server" --data "$WORK/data" --bind 127.0.0.1:$PORT --login-rate 100000 --open-rate 100000 2>"$WORK/server.log" &
SERVER=$!
until grep -q listening "$WORK/server.log"; do kill -0 $SERVER || { cat "$WORK/server.log"; exit 1; }; sleep 0.1; done
export HEALTHLOCK_SERVER=http://127.0.0.1:$PORT XDG_CONFIG_HOME=$WORK/config
echo 'schemathesis-password' | "$BIN/healthlock" register --username fuzz-patient --password-stdin >/dev/null
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$WORK/config/healthlock/profiles/default/session.json")
URL=http://127.0.0.1:$PORT/openapi.json
# Logging out would end the session the run uses; the event stream stays open by design
# (tests/e2e/notify.rs covers it).
COMMON=(--exclude-path /v1/auth/logout --exclude-path /v1/notifications/stream -H "Authorization: Bearer $TOKEN" --max-examples "$MAX" --seed 1)

echo "== schemathesis: no server errors (gate)"
python3 -m schemathesis.cli run "$URL" --checks not_a_server_error "${COMMON[@]}"

echo "== schemathesis: all checks (report)"
python3 -m schemathesis.cli run "$URL" --checks all "${COMMON[@]}" || echo "(conformance findings above are reported, not gating)"
if grep -qiE "panicked|internal error" "$WORK/server.log"; then
  echo "the server logged a panic or internal error:"; grep -iE "panicked|internal error" "$WORK/server.log"; exit 1
fi
echo "schemathesis: 0 server errors"
