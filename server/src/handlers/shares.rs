//! Shares: creation and revocation by the patient; challenge, open, body download and attach by
//! the provider who holds the token.
//!
//! Opening proves possession of the token's secret with a signature over a single-use nonce, the
//! origin and the share id (design property 4). Until that proof verifies, every failure is the
//! same "no such share"; after it, the caller learns the specific reason. Each decision —
//! allowed or refused — is committed to the patient's audit log before the response is sent.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, path_id};
use crate::handlers::accounts::{hash_secret, verify_secret};
use crate::handlers::records::{store_attachment, stream_blob};
use crate::state::AppState;
use crate::store::{Appended, AuditHead, PASSCODE_LOCK_AT, ShareRecord, ShareRow, Tx};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use healthlock_common::api::{
    AuditEvent, AuditProof, Challenge, CreateShareRequest, ErrorCode, OpenRequest, OpenResponse,
    RecordInfo, ShareInfo, ShareStatus,
};
use healthlock_common::encoding::sha256_hex;
use healthlock_common::envelope::MAX_SMALL_AGE_FILE;
use healthlock_common::{RecordId, Role, ShareId};
use std::collections::HashSet;

/// How long an open challenge stays valid.
const CHALLENGE_TTL: u64 = 60;
/// The most records one share may hold.
const MAX_SHARE_RECORDS: usize = 1000;

fn share_info(row: &ShareRow, now: u64) -> ShareInfo {
    ShareInfo {
        id: row.id.clone(),
        role: row.role,
        records: row.records.iter().map(|r| r.keys.id.clone()).collect(),
        created: row.created,
        expires: row.expires,
        uses: row.uses,
        max_uses: row.max_uses,
        passcode: row.passcode_phc.is_some(),
        revoked: row.revoked,
        status: row.status(now),
    }
}

fn no_such_share() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such share: the link or token is wrong, or the share no longer exists",
    )
}

/// The refusal a token holder of `role` gets for this share now, if any.
fn refusal(row: &ShareRow, role: Role, now: u64) -> Option<ApiError> {
    Some(match row.status(now) {
        ShareStatus::Revoked => ApiError::new(
            ErrorCode::ShareRevoked,
            "the patient revoked this share; ask them for a new one",
        )
        .at(row.revoked.unwrap_or(now)),
        ShareStatus::Expired => ApiError::new(
            ErrorCode::ShareExpired,
            "this share has expired; ask the patient for a new one",
        )
        .at(row.expires),
        ShareStatus::Locked => ApiError::new(
            ErrorCode::ShareLocked,
            "this share is locked after too many wrong passcodes; ask the patient for a new one",
        ),
        ShareStatus::UsedUp => ApiError::new(
            ErrorCode::ShareUsedUp,
            "this share was opened as many times as the patient allowed; ask them for a new one",
        ),
        ShareStatus::Active if role != row.role => ApiError::new(
            ErrorCode::WrongRole,
            format!(
                "this share was made for a {}, and you are logged in as a {}; \
                 ask the patient to share with your role",
                row.role, role
            ),
        ),
        ShareStatus::Active => return None,
    })
}

/// `POST /v1/shares`: the patient registers a share they built and signed on their machine.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<CreateShareRequest>,
) -> ApiResult<(StatusCode, Json<ShareInfo>)> {
    caller.require_vault_owner()?;
    let bad = |m: &str| ApiError::bad_request(m);
    let d = req
        .descriptor
        .verify_with_hex(&req.verify_key)
        .map_err(|_| bad("the share descriptor's signature does not verify"))?;
    let now = healthlock_common::time::now();
    if d.patient != caller.user.id || d.patient_recipient != caller.user.age_recipient {
        return Err(bad("the descriptor names another patient"));
    }
    if !d.role.is_provider() {
        return Err(bad(
            "a share is made for a doctor, pharmacist or diagnostics role",
        ));
    }
    if d.origin != state.origin {
        return Err(ApiError::new(
            ErrorCode::OriginMismatch,
            format!(
                "this server's address is {}, not {}",
                state.origin, d.origin
            ),
        ));
    }
    if d.expires <= now || d.expires > now + state.settings.max_share_lifetime + 300 {
        return Err(bad(&format!(
            "a share must expire in the future and within {} of now",
            healthlock_common::time::human_span(state.settings.max_share_lifetime)
        )));
    }
    if d.records.is_empty() || d.records.len() > MAX_SHARE_RECORDS {
        return Err(bad(&format!(
            "a share holds 1 to {MAX_SHARE_RECORDS} records"
        )));
    }
    if d.records.len() != req.records.len() {
        return Err(bad("every record in the descriptor needs its envelope"));
    }
    if req.max_uses == Some(0) {
        return Err(bad("--uses must be at least 1"));
    }
    let mut seen = HashSet::new();
    for (entry, keys) in d.records.iter().zip(&req.records) {
        // A record the role may not read travels without its key or title: even a copy of this
        // server's disk plus the token cannot open it.
        let sizes_ok = if d.role.may_read(entry.category) {
            (1..=MAX_SMALL_AGE_FILE).contains(&keys.envelope.len())
                && (1..=MAX_SMALL_AGE_FILE).contains(&keys.meta.len())
        } else {
            keys.envelope.is_empty() && keys.meta.is_empty()
        };
        if entry.id != keys.id
            || !seen.insert(entry.id.clone())
            || !sizes_ok
            || sha256_hex(&keys.envelope) != entry.envelope_sha256
            || sha256_hex(&keys.meta) != entry.meta_sha256
        {
            return Err(bad("the envelopes do not match the descriptor"));
        }
    }
    let passcode_phc = match &req.passcode_proof {
        Some(p) if p.len() == 32 => {
            let p = p.clone();
            Some(state.blocking(move |_| hash_secret(&p)).await??)
        }
        Some(_) => return Err(bad("malformed passcode proof")),
        None => None,
    };
    let row = ShareRow {
        id: d.share_id.clone(),
        patient: caller.user.id.clone(),
        role: d.role,
        verify_key: req.verify_key.clone(),
        created: now,
        expires: d.expires,
        max_uses: req.max_uses,
        uses: 0,
        revoked: None,
        passcode_phc,
        passcode_failures: 0,
        descriptor: req.descriptor.clone(),
        records: d
            .records
            .iter()
            .zip(req.records)
            .map(|(e, keys)| ShareRecord {
                category: e.category,
                keys,
            })
            .collect(),
    };
    let ev = caller.event("share.create", Some(row.id.clone()), None, None);
    let stored = row.clone();
    state
        .write(move |tx| {
            // The patient vouches for each record's ciphertext; check it is what we hold.
            for e in &d.records {
                let ok = tx.record(&stored.patient, &e.id)?.is_some_and(|r| {
                    r.category == e.category && r.size == e.size && r.hash == e.hash
                });
                if !ok {
                    return Ok(Err(ApiError::bad_request(format!(
                        "record {} is not in your vault as described",
                        e.id
                    ))));
                }
            }
            if tx.share(&stored.id)?.is_some() {
                return Ok(Err(ApiError::bad_request("a share with this id exists")));
            }
            tx.put_share(&stored)?;
            tx.append_audit(&stored.patient, ev)?;
            Ok(Ok(()))
        })
        .await??;
    Ok((StatusCode::CREATED, Json(share_info(&row, now))))
}

/// `GET /v1/shares`: the caller's shares with their status.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ShareInfo>>> {
    caller.require_vault_owner()?;
    let id = caller.user.id.clone();
    let rows = state.blocking(move |s| s.store.shares(&id)).await??;
    let now = healthlock_common::time::now();
    Ok(Json(rows.iter().map(|r| share_info(r, now)).collect()))
}

/// `POST /v1/shares/{id}/revoke`: ends a share at once.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<ShareInfo>> {
    caller.require_vault_owner()?;
    let id: ShareId = path_id(&raw, "share")?;
    let ev = caller.event("share.revoke", Some(id.clone()), None, None);
    let me = caller.user.id.clone();
    let row = state
        .write(move |tx| {
            let Some(mut row) = tx.share(&id)?.filter(|r| r.patient == me) else {
                return Ok(None);
            };
            if row.revoked.is_none() {
                row.revoked = Some(tx.now);
                tx.put_share(&row)?;
                tx.append_audit(&row.patient, ev)?;
            }
            Ok(Some(row))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    Ok(Json(share_info(&row, healthlock_common::time::now())))
}

/// `POST /v1/shares/{id}/challenge`: a single-use nonce to sign. Issued for any id, so it says
/// nothing about whether the share exists.
pub async fn challenge(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Challenge>> {
    let o = state.settings.limits.open_per_min;
    state
        .limiter
        .check(&format!("challenge-user:{}", caller.user.id), 2 * o)?;
    let id: ShareId = path_id(&raw, "share")?;
    let nonce = healthlock_common::encoding::hex(&healthlock_common::random_bytes::<16>());
    let now = healthlock_common::time::now();
    {
        let mut map = state.challenges.lock().map_err(ApiError::internal)?;
        map.retain(|_, (_, exp)| *exp > now);
        map.insert(nonce.clone(), (id, now + CHALLENGE_TTL));
    }
    Ok(Json(Challenge {
        nonce,
        origin: state.origin.clone(),
        expires_in: CHALLENGE_TTL,
    }))
}

/// The outcome of the first open transaction.
enum Step {
    /// Opened: the use is counted and audited; which of the share's records still exist.
    Opened(Box<(ShareRow, Appended, Vec<bool>)>),
    /// A passcode attempt was reserved (counted as wrong until proven right); verify it.
    Verify(String),
}

/// Records a refusal in the patient's log and returns it, so the transaction commits it.
fn refuse(
    tx: &Tx,
    row: &ShareRow,
    caller: &Caller,
    err: ApiError,
) -> crate::store::StoreResult<ApiResult<Step>> {
    tx.append_audit(
        &row.patient,
        caller.event(
            "share.open",
            Some(row.id.clone()),
            None,
            Some(err.body.code),
        ),
    )?;
    Ok(Err(err))
}

/// Counts a successful open and audits it, and sees which records still exist (in the same
/// transaction, so the answer matches the audited state).
fn grant(
    tx: &Tx,
    mut row: ShareRow,
    caller: &Caller,
) -> crate::store::StoreResult<ApiResult<Step>> {
    row.uses += 1;
    tx.put_share(&row)?;
    let appended = tx.append_audit(
        &row.patient,
        caller.event("share.open", Some(row.id.clone()), None, None),
    )?;
    let existing = row
        .records
        .iter()
        .map(|r| tx.has_record(&row.patient, &r.keys.id))
        .collect::<crate::store::StoreResult<_>>()?;
    Ok(Ok(Step::Opened(Box::new((row, appended, existing)))))
}

/// `POST /v1/shares/{id}/open`: proves possession and, if everything allows it, counts a use
/// and returns the descriptor with the keys of the records the caller's role may read.
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    AppJson(req): AppJson<OpenRequest>,
) -> ApiResult<Json<OpenResponse>> {
    let o = state.settings.limits.open_per_min;
    state
        .limiter
        .check(&format!("open-ip:{:?}", caller.client), 2 * o)?;
    state
        .limiter
        .check(&format!("open-user:{}", caller.user.id), o)?;
    let id: ShareId = path_id(&raw, "share")?;
    let now = healthlock_common::time::now();
    let fresh = state
        .challenges
        .lock()
        .map_err(ApiError::internal)?
        .remove(&req.nonce)
        .is_some_and(|(sid, exp)| sid == id && exp >= now);
    if !fresh {
        return Err(ApiError::new(
            ErrorCode::ChallengeInvalid,
            "the open challenge expired or was already used; try again",
        ));
    }
    if req.origin != state.origin {
        return Err(ApiError::new(
            ErrorCode::OriginMismatch,
            format!(
                "this server's address is {}, but the link names {}; use the link as the patient gave it",
                state.origin, req.origin
            ),
        ));
    }
    // The nonce is spent, and from here on every outcome but an internal error is audited:
    // finish even if the client hangs up meanwhile (axum drops a handler's future when its
    // connection closes), so that a refused proof or a passcode attempt never skips its event.
    use tracing::Instrument;
    let checked = open_checked(state, caller, id, req, now).instrument(tracing::Span::current());
    tokio::spawn(checked).await.map_err(ApiError::internal)?
}

/// The rest of an open once its nonce is spent: the proof, the share's state and passcode, and
/// the grant with its checkpoint.
async fn open_checked(
    state: AppState,
    caller: Caller,
    id: ShareId,
    req: OpenRequest,
    now: u64,
) -> ApiResult<Json<OpenResponse>> {
    let share = state.read(|s| state.share_keys.get(s, &id))?;
    let proven = state
        .proofs
        .check(share.as_ref(), &req.origin, &id, &req.nonce, &req.signature)
        .await?;
    if !proven {
        // Unknown and unproven look the same in the answer, in the caller's own log (which gets
        // the attempt either way) and in the signature check (against a decoy key for an
        // unknown share). The patient's log gets it too, in the same commit.
        let patient = share.map(|s| s.patient);
        let me = caller.user.id.clone();
        let event = || {
            caller.event(
                "share.open",
                Some(id.clone()),
                None,
                Some(ErrorCode::NotFound),
            )
        };
        let (mine, theirs) = (event(), event());
        state
            .write(move |tx| {
                tx.append_audit(&me, mine)?;
                if let Some(p) = patient {
                    tx.append_audit(&p, theirs)?;
                }
                Ok(())
            })
            .await?;
        return Err(no_such_share());
    }

    let caller = std::sync::Arc::new(caller);
    let (c, sid, proof_given) = (caller.clone(), id.clone(), req.passcode_proof.is_some());
    let step = state
        .write(move |tx| {
            // (Shares are never deleted, and reads see only durable commits: this is a guard.)
            let Some(row) = tx.share(&sid)? else {
                return Ok(Err(no_such_share()));
            };
            if let Some(err) = refusal(&row, c.role(), tx.now) {
                return refuse(tx, &row, &c, err);
            }
            match (&row.passcode_phc, proof_given) {
                (None, _) => grant(tx, row, &c),
                (Some(_), false) => refuse(
                    tx,
                    &row,
                    &c,
                    ApiError::new(
                        ErrorCode::PasscodeRequired,
                        "this share needs the passcode the patient gave you; \
                         pass it with --passcode-stdin or HEALTHLOCK_PASSCODE",
                    ),
                ),
                (Some(phc), true) => {
                    // Reserve the attempt before evaluating it, so concurrent guesses can never
                    // evaluate more than the lock allows.
                    let phc = phc.clone();
                    let mut row = row;
                    row.passcode_failures += 1;
                    tx.put_share(&row)?;
                    Ok(Ok(Step::Verify(phc)))
                }
            }
        })
        .await??;

    let (row, appended, existing) = match step {
        Step::Opened(opened) => *opened,
        Step::Verify(phc) => {
            let proof = req.passcode_proof.unwrap_or_default();
            let correct = state.blocking(move |_| verify_secret(&proof, &phc)).await?;
            let (c, sid) = (caller.clone(), id.clone());
            let step = state
                .write(move |tx| {
                    let Some(mut row) = tx.share(&sid)? else {
                        return Ok(Err(no_such_share()));
                    };
                    if !correct {
                        let left = PASSCODE_LOCK_AT.saturating_sub(row.passcode_failures);
                        let msg = if left == 0 {
                            "wrong passcode; the share is now locked — ask the patient for a new one".to_owned()
                        } else {
                            format!("wrong passcode; {left} attempt(s) left before the share locks")
                        };
                        let err = ApiError::new(ErrorCode::PasscodeWrong, msg).attempts_left(left);
                        return refuse(tx, &row, &c, err);
                    }
                    row.passcode_failures = row.passcode_failures.saturating_sub(1);
                    if let Some(err) = refusal(&row, c.role(), tx.now) {
                        tx.put_share(&row)?;
                        return refuse(tx, &row, &c, err);
                    }
                    grant(tx, row, &c)
                })
                .await??;
            match step {
                Step::Opened(opened) => *opened,
                Step::Verify(_) => unreachable!("the second step never asks to verify"),
            }
        }
    };

    // The provider's CLI checks this before writing anything: the open is durably in the
    // patient's log, under a checkpoint signed by this server. Signed before the grant, so an
    // open that fails here leaves no grant behind.
    let head = AuditHead {
        seq: appended.seq,
        hash: appended.linked.hash.clone(),
        time: 0,
    }
    .hash()?;
    let checkpoint = state
        .open_checkpoints
        .run((row.patient.clone(), appended.seq, head))
        .await?;
    let grant_expires = (now + state.settings.grant_lifetime).min(row.expires);
    {
        let mut grants = state.grants.lock().map_err(ApiError::internal)?;
        grants.retain(|_, exp| *exp > now);
        grants.insert((row.id.clone(), caller.user.id.clone()), grant_expires);
    }
    let role = caller.role();
    let mut resp = OpenResponse {
        descriptor: row.descriptor.clone(),
        records: Vec::new(),
        withheld: Vec::new(),
        missing: Vec::new(),
        grant_expires,
        audit: AuditProof {
            prev: healthlock_common::encoding::hex(&appended.prev),
            event: AuditEvent {
                entry: appended.linked.entry,
                hash: appended.linked.hash,
                actor_name: Some(caller.user.username.clone()),
            },
            checkpoint,
        },
    };
    for (r, exists) in row.records.into_iter().zip(existing) {
        if !role.may_read(r.category) {
            resp.withheld.push(r.keys.id);
        } else if !exists {
            resp.missing.push(r.keys.id);
        } else {
            resp.records.push(r.keys);
        }
    }
    Ok(Json(resp))
}

/// Checks that the caller opened this share recently and that it is still live; returns it.
async fn granted_share(
    state: &AppState,
    caller: &Caller,
    id: &ShareId,
    action: &'static str,
) -> ApiResult<ShareRow> {
    let now = healthlock_common::time::now();
    let granted = state
        .grants
        .lock()
        .map_err(ApiError::internal)?
        .get(&(id.clone(), caller.user.id.clone()))
        .is_some_and(|&exp| exp > now);
    if !granted {
        return Err(ApiError::forbidden(
            "open the share first (`healthlock fetch` does); the last open was too long ago",
        ));
    }
    let row = state.read(|s| s.share(id))?.ok_or_else(no_such_share)?;
    // Revocation and expiry end downloads at once, even within an open's grant.
    if matches!(row.status(now), ShareStatus::Revoked | ShareStatus::Expired)
        || caller.role() != row.role
    {
        let err = refusal(&row, caller.role(), now).unwrap_or_else(no_such_share);
        let ev = caller.event(action, Some(id.clone()), None, Some(err.body.code));
        let owner = row.patient.clone();
        state.write(move |tx| tx.append_audit(&owner, ev)).await?;
        return Err(err);
    }
    Ok(row)
}

/// `GET /v1/shares/{id}/records/{record}`: a record's ciphertext, for a token holder whose role
/// may read it, after the access is durably audited.
pub async fn body(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw_share, raw_record)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id: ShareId = path_id(&raw_share, "share")?;
    let rid: RecordId = path_id(&raw_record, "record")?;
    let row = granted_share(&state, &caller, &id, "share.fetch").await?;
    let readable = row
        .records
        .iter()
        .find(|r| r.keys.id == rid)
        .map(|r| caller.role().may_read(r.category));
    let refused = match readable {
        None => Some(ApiError::not_found("record in this share")),
        Some(false) => Some(ApiError::new(
            ErrorCode::WrongRole,
            format!("a {} may not read this record", caller.role()),
        )),
        Some(true) => None,
    };
    let exists = state.read(|s| s.record(&row.patient, &rid))?.is_some();
    let refused = refused
        .or_else(|| (!exists).then(|| ApiError::not_found("record: the patient deleted it")));
    let ev = caller.event(
        "share.fetch",
        Some(id),
        Some(rid.clone()),
        refused.as_ref().map(|e| e.body.code),
    );
    let owner = row.patient.clone();
    state.write(move |tx| tx.append_audit(&owner, ev)).await?;
    if let Some(err) = refused {
        return Err(err);
    }
    stream_blob(&state, &rid).await
}

/// `POST /v1/shares/{id}/records`: a doctor attaches a record (sealed to the patient on the
/// doctor's machine) to the patient's vault.
pub async fn attach(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<RecordInfo>)> {
    let allowed = async {
        let caller = caller?;
        let id: ShareId = path_id(&raw, "share")?;
        let row = granted_share(&state, &caller, &id, "record.attach").await?;
        if !caller.role().may_attach() {
            let ev = caller.event("record.attach", Some(id), None, Some(ErrorCode::Forbidden));
            let owner = row.patient.clone();
            state.write(move |tx| tx.append_audit(&owner, ev)).await?;
            return Err(ApiError::forbidden(format!(
                "a {} may not attach records; only doctors can",
                caller.role()
            )));
        }
        Ok((caller, id, row))
    }
    .await;
    let ((caller, id, row), body) = crate::blobs::or_drain(allowed, body).await?;
    let info = store_attachment(&state, &caller, row.patient.clone(), &headers, body, id).await?;
    Ok((StatusCode::CREATED, Json(info)))
}
