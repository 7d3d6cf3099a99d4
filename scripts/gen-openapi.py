#!/usr/bin/env python3
"""Writes server/api/openapi.json, the OpenAPI 3.1 description of the HealthLock API.

The document is checked in and served at /openapi.json; tests/e2e/openapi.rs keeps it true to
the router (every route documented, every documented route served) and CI runs schemathesis
against a live server with it. Edit here, run this script, commit both.
"""
import json, pathlib

S = lambda **kw: {"type": "string", **kw}
INT = {"type": "integer", "minimum": 0}
HEX32 = S(pattern="^[0-9a-f]{32}$")
HEX64 = S(pattern="^[0-9a-f]{64}$")
# A record body's hash: BLAKE3, or bare hex for SHA-256 from before (protocol.md §3.1).
BODY_HASH = S(pattern="^(blake3:)?[0-9a-f]{64}$")
B64 = S(contentEncoding="base64")
BOOL = {"type": "boolean"}
ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
arr = lambda s: {"type": "array", "items": s}

def obj(required, optional=None, extra=True):
    props = dict(required)
    props.update(optional or {})
    o = {"type": "object", "properties": props, "required": list(required)}
    return o

USERNAME = S(pattern="^[A-Za-z0-9._-]{3,64}$")
ROLE = {"type": "string", "enum": ["patient", "doctor", "pharmacist", "diagnostics", "admin"]}
CATEGORY = {"type": "string", "enum": ["lab", "imaging", "prescription", "note", "other"]}
CODES = ["bad_request", "unauthenticated", "invalid_credentials", "forbidden", "wrong_role",
         "not_found", "share_expired", "share_revoked", "share_used_up", "passcode_required",
         "passcode_wrong", "share_locked", "challenge_invalid", "origin_mismatch",
         "invite_invalid", "invite_required", "username_taken", "payload_too_large",
         "insufficient_storage", "upload_incomplete", "rate_limited", "internal"]

schemas = {
    "Role": ROLE,
    "Category": CATEGORY,
    "ErrorResponse": obj({"error": obj({"code": {"type": "string", "enum": CODES}, "message": S()},
                                       {"at": INT, "attempts_left": INT, "retry_after": INT})}),
    "KdfParams": obj({"m_kib": {"type": "integer", "minimum": 65536, "maximum": 4194304},
                      "t": {"type": "integer", "minimum": 3, "maximum": 64},
                      "p": {"type": "integer", "minimum": 4, "maximum": 64}}),
    "ServerInfo": obj({"origin": S(), "version": S(), "max_upload": INT, "max_share_lifetime": INT}),
    "ServerKey": obj({"origin": S(), "key": HEX64}),
    "PreloginRequest": obj({"username": USERNAME}),
    "PreloginResponse": obj({"salt": B64, "kdf": ref("KdfParams")}),
    "RegisterRequest": obj({"username": USERNAME, "role": ROLE, "salt": B64, "kdf": ref("KdfParams"),
                            "auth": B64, "age_recipient": S(), "ed25519_public": S(),
                            "wrapped_keys": B64}, {"invite": S()}),
    "LoginRequest": obj({"username": USERNAME, "auth": B64}),
    "UserInfo": obj({"id": HEX32, "username": S(), "role": ROLE, "created": INT, "age_recipient": S()}),
    "LoginResponse": obj({"session": S(), "session_expires": INT, "user": ref("UserInfo"),
                          "wrapped_keys": B64}),
    "RecordInfo": obj({"id": HEX32, "category": CATEGORY, "size": INT, "hash": BODY_HASH,
                       "created": INT, "envelope": B64, "meta": B64},
                      {"added_by": S(), "seal": {"type": ["string", "null"], "pattern": "^[0-9a-f]{128}$"}}),
    "PendingUpload": obj({"id": HEX32, "size": INT, "expires": INT}),
    "SealRecordRequest": obj({"hash": BODY_HASH, "seal": S(pattern="^[0-9a-f]{128}$")}),
    "SignedDescriptor": obj({"bytes": B64, "signature": B64}),
    "ShareRecordKeys": obj({"id": HEX32, "envelope": B64, "meta": B64}),
    "CreateShareRequest": obj({"descriptor": ref("SignedDescriptor"), "verify_key": S(),
                               "records": arr(ref("ShareRecordKeys"))},
                              {"max_uses": INT, "passcode_proof": B64}),
    "ShareInfo": obj({"id": HEX32, "role": ROLE, "records": arr(HEX32), "created": INT,
                      "expires": INT, "uses": INT, "passcode": BOOL,
                      "status": {"type": "string", "enum": ["active", "expired", "revoked", "used_up", "locked"]}},
                     {"max_uses": INT, "revoked": INT}),
    "Challenge": obj({"nonce": S(), "origin": S(), "expires_in": INT}),
    "OpenRequest": obj({"nonce": S(), "origin": S(), "signature": B64}, {"passcode_proof": B64}),
    "AuditEvent": obj({"entry": S(), "hash": HEX64}, {"actor_name": S()}),
    "Checkpoint": obj({"origin": S(), "log": HEX32, "size": INT, "head": S(), "signature": B64},
                      {"batch": ref("BatchPath")}),
    "BatchPath": obj({"index": INT, "siblings": arr(HEX64)}),
    "AuditPage": obj({"events": arr(ref("AuditEvent")), "checkpoint": ref("Checkpoint")}),
    "AuditProof": obj({"prev": HEX64, "event": ref("AuditEvent"), "checkpoint": ref("Checkpoint")}),
    "OpenResponse": obj({"descriptor": ref("SignedDescriptor"), "records": arr(ref("ShareRecordKeys")),
                         "withheld": arr(HEX32), "missing": arr(HEX32), "grant_expires": INT,
                         "audit": ref("AuditProof")}),
    "AckRequest": obj({"seq": INT}),
    "SetWebhook": obj({"url": S()}),
    "Delivery": obj({"time": INT, "seq": INT, "ok": BOOL, "attempt": INT},
                    {"status": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}}),
    "WebhookStatus": obj({"url": S(), "created": INT, "delivered_through": INT, "failed_attempts": INT,
                          "next_attempt_ms": INT, "deliveries": arr(ref("Delivery"))}),
}

def json_body(name):
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}

def ok(status, name=None, ctype="application/json", desc="OK"):
    if name is None and ctype == "application/json":
        return {str(status): {"description": desc}}
    schema = ref(name) if isinstance(name, str) else (name or {"type": "string", "format": "binary"})
    return {str(status): {"description": desc, "content": {ctype: {"schema": schema}}}}

ERR = {"description": "refused; see error.code", "content": {"application/json": {"schema": ref("ErrorResponse")}}}

def errors(*codes):
    return {str(c): ERR for c in codes}

ID = lambda name, what: {"name": name, "in": "path", "required": True, "schema": HEX32, "description": what}
AUTH = [{"bearer": []}]
COMMON_AUTH = (401, 408, 429, 500, 507)
UPLOAD_HEADERS = [
    {"name": "x-healthlock-category", "in": "header", "required": True, "schema": CATEGORY},
    {"name": "x-healthlock-envelope", "in": "header", "required": True, "schema": B64},
    {"name": "x-healthlock-meta", "in": "header", "required": True, "schema": B64},
]
BINARY_BODY = {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}

def op(summary, responses, *, auth=True, params=None, body=None, errs=()):
    o = {"summary": summary, "responses": {**responses, **errors(*sorted(set(errs) | (set(COMMON_AUTH) if auth else {400, 408, 429, 500, 507})))}}
    o["security"] = AUTH if auth else []
    if params:
        o["parameters"] = params
    if body:
        o["requestBody"] = body
    return o

paths = {
    "/openapi.json": {"get": op("This document", ok(200, {"type": "object"}), auth=False)},
    "/v1/info": {"get": op("Origin, version and limits", ok(200, "ServerInfo"), auth=False)},
    "/v1/server-key": {"get": op("The key that signs audit checkpoints and webhooks", ok(200, "ServerKey"), auth=False)},
    "/.well-known/healthlock/server-key": {"get": op("The same, at a well-known path", ok(200, "ServerKey"), auth=False)},
    "/v1/auth/prelogin": {"post": op("Salt and KDF cost for a username (made up for unknown names)",
                                     ok(200, "PreloginResponse"), auth=False, body=json_body("PreloginRequest"), errs=(400, 413))},
    "/v1/auth/register": {"post": op("Create an account and log in", ok(200, "LoginResponse"), auth=False,
                                     body=json_body("RegisterRequest"), errs=(400, 403, 409, 413))},
    "/v1/auth/login": {"post": op("Log in with the password-derived auth value", ok(200, "LoginResponse"), auth=False,
                                  body=json_body("LoginRequest"), errs=(400, 401, 413))},
    "/v1/auth/logout": {"post": op("End this session", ok(204, desc="logged out"))},
    "/v1/me": {"get": op("The caller's account", ok(200, "UserInfo"))},
    "/v1/records": {
        "get": op("The caller's records", ok(200, arr(ref("RecordInfo"))), errs=(403,)),
        "post": op("Upload a record's body, its age ciphertext, streamed; it waits for its seal",
                   ok(202, "PendingUpload", desc="stored, waiting for its seal"),
                   params=UPLOAD_HEADERS, body=BINARY_BODY, errs=(400, 403, 413)),
    },
    "/v1/records/{id}/seal": {"put": op("Seal an uploaded body with the patient's signature (it becomes a record), "
                                        "or seal a record that has none (an attachment the patient has checked)",
                                        {**ok(201, "RecordInfo", desc="stored"),
                                         **ok(200, "RecordInfo", desc="sealed in place, or sealed already with this seal")},
                                        params=[ID("id", "record")],
                                        body=json_body("SealRecordRequest"), errs=(400, 403, 404, 413))},
    "/v1/records/{id}": {
        "get": op("One record's metadata and envelope", ok(200, "RecordInfo"), params=[ID("id", "record")], errs=(403, 404)),
        "delete": op("Delete a record", ok(204, desc="deleted"), params=[ID("id", "record")], errs=(403, 404)),
    },
    "/v1/records/{id}/body": {"get": op("A record's ciphertext (audited first)", ok(200, ctype="application/octet-stream"),
                                        params=[ID("id", "record")], errs=(403, 404))},
    "/v1/shares": {
        "get": op("The caller's shares", ok(200, arr(ref("ShareInfo"))), errs=(403,)),
        "post": op("Register a share built and signed on the patient's machine", ok(201, "ShareInfo", desc="created"),
                   body=json_body("CreateShareRequest"), errs=(400, 403, 413)),
    },
    "/v1/shares/{id}/revoke": {"post": op("Revoke a share at once", ok(200, "ShareInfo"), params=[ID("id", "share")], errs=(403, 404))},
    "/v1/shares/{id}/challenge": {"post": op("A single-use nonce to sign", ok(200, "Challenge"), params=[ID("id", "share")], errs=(404,))},
    "/v1/shares/{id}/open": {"post": op("Prove possession of the token and open the share", ok(200, "OpenResponse"),
                                        params=[ID("id", "share")], body=json_body("OpenRequest"),
                                        errs=(400, 403, 404, 410, 413, 423))},
    "/v1/shares/{id}/records": {"post": op("A doctor attaches a record through a share", ok(201, "RecordInfo", desc="stored"),
                                           params=[ID("id", "share")] + UPLOAD_HEADERS, body=BINARY_BODY,
                                           errs=(400, 403, 404, 410, 413))},
    "/v1/shares/{id}/records/{record}": {"get": op("A shared record's ciphertext (audited first)",
                                                   ok(200, ctype="application/octet-stream"),
                                                   params=[ID("id", "share"), ID("record", "record")], errs=(403, 404, 410))},
    "/v1/audit": {"get": op("A page of the caller's audit log with a signed checkpoint", ok(200, "AuditPage"),
                            params=[{"name": n, "in": "query", "required": False, "schema": INT} for n in ("after", "since", "limit")],
                            errs=(400,))},
    "/v1/notifications": {"get": op("Accesses by others not yet acknowledged", ok(200, arr(ref("AuditEvent"))))},
    "/v1/notifications/ack": {"post": op("Mark notifications up to a seq as seen", ok(204, desc="acknowledged"),
                                         body=json_body("AckRequest"), errs=(400, 413))},
    "/v1/notifications/stream": {"get": op("Server-sent events, one per access by others; resume with Last-Event-ID",
                                           ok(200, ctype="text/event-stream"),
                                           params=[{"name": "after", "in": "query", "required": False, "schema": INT},
                                                   {"name": "last-event-id", "in": "header", "required": False, "schema": S()}],
                                           errs=(400,))},
    "/v1/webhook": {
        "get": op("The webhook and its delivery log", ok(200, "WebhookStatus"), errs=(404,)),
        "put": op("Send each access to this URL", ok(200, "WebhookStatus"), body=json_body("SetWebhook"), errs=(400, 413)),
        "delete": op("Stop sending", ok(204, desc="removed"), errs=(404,)),
    },
    "/v1/webhook/test": {"post": op("Send a signed test body now", ok(200, "Delivery"), errs=(404,))},
}

doc = {
    "openapi": "3.1.0",
    "info": {"title": "HealthLock API", "version": "1",
             "description": "The server stores only ciphertext; see docs/protocol.md for the cryptography."},
    "paths": paths,
    "components": {"schemas": schemas,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
}
out = pathlib.Path(__file__).resolve().parent.parent / "server" / "api" / "openapi.json"
out.write_text(json.dumps(doc, indent=1) + "\n")
print(f"wrote {out}")
