#!/usr/bin/env python3
"""Verify a HealthLock audit log independently of the healthlock CLI.

    HEALTHLOCK_TOKEN=hls_... scripts/verify-audit.py http://127.0.0.1:8080 SERVER_KEY_HEX

The token is a session token (the "token" field of the profile's session.json); the key is the
server's audit key as your CLI pinned it (`healthlock whoami`). Needs the `cryptography` package.
Checks every event's chain value and the server's signature on the checkpoint; prints the size
and head to compare with what you verified before. See docs/audit.md.
"""
import hashlib, json, os, sys, urllib.request
from base64 import b64decode
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

server, key_hex = sys.argv[1].rstrip("/"), sys.argv[2]
token = os.environ["HEALTHLOCK_TOKEN"]

def get(path):
    req = urllib.request.Request(server + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req) as r:
        return json.load(r)

head, size = bytes(32), 0
while True:
    page = get(f"/v1/audit?after={size}&limit=1000")
    for e in page["events"]:
        entry = json.loads(e["entry"])
        assert entry["seq"] == size + 1, f"event {entry['seq']} where {size + 1} belongs"
        head = hashlib.sha256(b"healthlock/v1/audit-link\n" + head + e["entry"].encode()).digest()
        assert head.hex() == e["hash"], f"event {entry['seq']} does not hash to its chain value"
        size = entry["seq"]
    if len(page["events"]) < 1000:
        break
cp = page["checkpoint"]
text = f"healthlock/v1/audit-checkpoint\n{cp['origin']}\n{cp['log']}\n{cp['size']}\n{cp['head']}\n"
Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(b64decode(cp["signature"]), text.encode())
assert (cp["size"], cp["head"]) == (size, head.hex()), "the events do not match the signed checkpoint"
assert cp["origin"] == server, f"the checkpoint is for {cp['origin']}, not {server}"
print(f"ok: {size} events, head {head.hex()}, signed by {key_hex[:16]}…")
