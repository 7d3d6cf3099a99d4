//! A patient's vault: upload, list, read and delete records.

use crate::auth::Caller;
use crate::blobs::Received;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, path_id};
use crate::pending::{MAX_PER_OWNER, Pending, Refused, SEAL_WAIT};
use crate::state::AppState;
use crate::store::RecordRow;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use healthlock_common::api::{
    ErrorCode, HEADER_CATEGORY, HEADER_ENVELOPE, HEADER_META, PendingUpload, RecordInfo,
    SealRecordRequest,
};
use healthlock_common::body_hash;
use healthlock_common::envelope::MAX_SMALL_AGE_FILE;
use healthlock_common::keys;
use healthlock_common::record_seal::RecordSeal;
use healthlock_common::{Category, RecordId, UserId};

/// The category, envelope and sealed metadata that travel as headers beside an upload's body.
pub struct UploadHeaders {
    /// The record's category.
    pub category: Category,
    /// The record key sealed to the patient.
    pub envelope: Vec<u8>,
    /// Title and file name sealed to the record key.
    pub meta: Vec<u8>,
}

impl UploadHeaders {
    /// Reads and checks the headers.
    pub fn parse(headers: &HeaderMap) -> ApiResult<Self> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ApiError::bad_request(format!("missing header {name}")))
        };
        let binary = |name: &str| -> ApiResult<Vec<u8>> {
            let bytes = healthlock_common::encoding::unb64(text(name)?, "header")
                .map_err(|_| ApiError::bad_request(format!("header {name} is not base64")))?;
            if bytes.is_empty() || bytes.len() > MAX_SMALL_AGE_FILE {
                return Err(ApiError::bad_request(format!(
                    "header {name} has a bad size"
                )));
            }
            Ok(bytes)
        };
        Ok(Self {
            category: text(HEADER_CATEGORY)?.parse().map_err(
                |e: healthlock_common::policy::UnknownName| ApiError::bad_request(e.to_string()),
            )?,
            envelope: binary(HEADER_ENVELOPE)?,
            meta: binary(HEADER_META)?,
        })
    }
}

/// What the patient (and only the patient) sees of a record.
pub fn record_info(state: &AppState, r: RecordRow) -> RecordInfo {
    let added_by = r.added_by.as_ref().and_then(|id| {
        state
            .store
            .user_by_id(id)
            .ok()
            .flatten()
            .map(|u| u.username)
    });
    RecordInfo {
        id: r.id,
        category: r.category,
        size: r.size,
        hash: r.hash,
        seal: r.seal,
        created: r.created,
        envelope: r.envelope,
        meta: r.meta,
        added_by,
    }
}

/// The refusal when an upload does not fit in `owner`'s vault.
fn quota_full(state: &AppState, caller: &Caller, owner: &UserId) -> ApiError {
    let whose = if &caller.user.id == owner {
        "your"
    } else {
        "the patient's"
    };
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "{whose} vault is full (quota {} MiB); records must be deleted first",
            state.settings.quota >> 20
        ),
    )
}

/// Reads an upload's headers and streams its body into a synced temp file, within what
/// `owner`'s quota leaves (bodies waiting for their seal count too). `hash`: see
/// [`crate::blobs::Blobs::receive`].
async fn receive_upload(
    state: &AppState,
    caller: &Caller,
    owner: &UserId,
    headers: &HeaderMap,
    body: Body,
    hash: bool,
) -> ApiResult<(UploadHeaders, Received)> {
    let (h, body) = crate::blobs::or_drain(UploadHeaders::parse(headers), body).await?;
    let used = state.read(|s| s.usage(owner))? + state.pending.waiting(owner).1;
    let room = state.settings.quota.saturating_sub(used);
    let limit = state.settings.max_upload.min(room);
    match state.blobs.receive(body, limit, hash).await {
        Err(e) if e.body.code == ErrorCode::PayloadTooLarge && room < state.settings.max_upload => {
            Err(quota_full(state, caller, owner))
        }
        other => Ok((h, other?)),
    }
}

/// Makes a received body the record `row` — blob renamed into place, then row and audit event
/// committed together — and answers with what the patient sees of it.
async fn commit_record(
    state: &AppState,
    caller: &Caller,
    row: RecordRow,
    received: Received,
    action: &'static str,
    share: Option<healthlock_common::ShareId>,
) -> ApiResult<RecordInfo> {
    let id = row.id.clone();
    state.blobs.commit(received, &id).await?;
    let ev = caller.event(action, share, Some(id.clone()), None);
    let stored = row.clone();
    let quota = state.settings.quota;
    let full = quota_full(state, caller, &row.owner);
    if let Err(e) = state
        .write(move |tx| {
            // Concurrent uploads may have filled the vault meanwhile.
            if tx.usage(&stored.owner)? + stored.size > quota {
                return Ok(Err(full));
            }
            tx.put_record(&stored)?;
            tx.append_audit(&stored.owner, ev)?;
            Ok(Ok(()))
        })
        .await
        .and_then(|r| r)
    {
        state.blobs.remove(&id).await;
        return Err(e);
    }
    let s = state.clone();
    state.blocking(move |_| record_info(&s, row)).await
}

/// Streams a doctor's attachment to disk and adds it to `owner`'s vault with its audit event.
/// The caller has checked the right to write. The server hashes the body itself: the patient
/// did not send it, so there is no seal, and the hash is the server's word (see
/// docs/threat-model.md).
pub async fn store_attachment(
    state: &AppState,
    caller: &Caller,
    owner: UserId,
    headers: &HeaderMap,
    body: Body,
    share: healthlock_common::ShareId,
) -> ApiResult<RecordInfo> {
    let (h, received) = receive_upload(state, caller, &owner, headers, body, true).await?;
    let row = RecordRow {
        id: RecordId::random(),
        owner,
        category: h.category,
        size: received.size,
        hash: received.hash.clone().unwrap_or_default(),
        seal: None,
        created: healthlock_common::time::now(),
        envelope: h.envelope,
        meta: h.meta,
        added_by: Some(caller.user.id.clone()),
    };
    commit_record(state, caller, row, received, "record.attach", Some(share)).await
}

/// `POST /v1/records`: the body is the record's age ciphertext, streamed. It is stored and
/// synced, and waits (see [`crate::pending`]) for `PUT /v1/records/{id}/seal`; only then is it a
/// record.
pub async fn upload(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<PendingUpload>)> {
    let too_many = || {
        ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "{MAX_PER_OWNER} uploads are already waiting for their seal; \
                 seal them or let them expire (after {} minutes), then upload again",
                SEAL_WAIT.as_secs() / 60
            ),
        )
        .retry_after(60)
    };
    let allowed = caller.and_then(|c| {
        c.require_vault_owner()?;
        // Refused before the body when it is plain; concurrent uploads are checked again below.
        if state.pending.waiting(&c.user.id).0 >= MAX_PER_OWNER {
            return Err(too_many());
        }
        Ok(c)
    });
    let (caller, body) = crate::blobs::or_drain(allowed, body).await?;
    let owner = caller.user.id.clone();
    let (h, received) = receive_upload(&state, &caller, &owner, &headers, body, false).await?;
    let id = RecordId::random();
    let pending = Pending::new(owner.clone(), h.category, h.envelope, h.meta, received);
    let answer = PendingUpload {
        id: id.clone(),
        size: pending.received.size,
        expires: pending.expires_unix(),
    };
    let room = state
        .settings
        .quota
        .saturating_sub(state.read(|s| s.usage(&owner))?);
    state
        .pending
        .insert(id, pending, room)
        .map_err(|why| match why {
            Refused::TooMany => too_many(),
            Refused::Full => quota_full(&state, &caller, &owner),
        })?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Whether `seal` is the caller's valid seal over the record as described, with a well-formed hash.
fn seal_verifies(caller: &Caller, statement: &RecordSeal<'_>, seal: &str) -> bool {
    body_hash::Algorithm::of(statement.hash).is_ok()
        && keys::parse_verifying_key(&caller.user.ed25519_public)
            .and_then(|vk| statement.verify(&vk, seal))
            .is_ok()
}

/// Audits a seal that did not verify and answers with the refusal.
async fn refuse_seal(
    state: &AppState,
    caller: &Caller,
    action: &'static str,
    id: RecordId,
    what: &str,
) -> ApiError {
    let ev = caller.event(action, None, Some(id), Some(ErrorCode::BadRequest));
    let owner = caller.user.id.clone();
    if let Err(e) = state.write(move |tx| tx.append_audit(&owner, ev)).await {
        return e;
    }
    ApiError::bad_request(format!(
        "the seal does not verify with your signing key; {what}"
    ))
}

/// `PUT /v1/records/{id}/seal`: the patient's signature over a stored upload makes it a record.
/// The seal must verify with the caller's own signing key; the server does not check the hash
/// against the body (the patient's CLI does, at every download), which spares it a full pass.
///
/// For a record that exists without a seal (a doctor's attachment the patient has checked, or
/// one stored before seals), the same request seals it in place (`record.seal`). Sealing again
/// with the same seal answers the record, so a client whose answer was lost can ask again.
pub async fn seal(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    AppJson(req): AppJson<SealRecordRequest>,
) -> ApiResult<(StatusCode, Json<RecordInfo>)> {
    caller.require_vault_owner()?;
    let id: RecordId = path_id(&raw, "record")?;
    let owner = caller.user.id.clone();
    let Some(pending) = state.pending.take(&owner, &id) else {
        return seal_existing(state, caller, id, req).await;
    };
    let statement = RecordSeal {
        owner: &owner,
        id: &id,
        category: pending.category,
        size: pending.received.size,
        hash: &req.hash,
        envelope: &pending.envelope,
        meta: &pending.meta,
    };
    if !seal_verifies(&caller, &statement, &req.seal) {
        // Dropping `pending` removes the body: a client that cannot seal its upload is broken
        // or is not the patient, and either way it starts again.
        crate::pending::discard(pending);
        let what = "nothing was stored";
        return Err(refuse_seal(&state, &caller, "record.upload", id, what).await);
    }
    let row = RecordRow {
        id,
        owner,
        category: pending.category,
        size: pending.received.size,
        hash: req.hash,
        seal: Some(req.seal),
        created: healthlock_common::time::now(),
        envelope: pending.envelope,
        meta: pending.meta,
        added_by: None,
    };
    // On its own task, so that a request cut off by its timeout (a slow disk) cannot leave a
    // blob renamed but its record uncommitted; the client may then ask again (above).
    let s = state.clone();
    let commit = tokio::spawn(async move {
        commit_record(&s, &caller, row, pending.received, "record.upload", None).await
    });
    let info = commit.await.map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The second case of [`seal`]: a record already in the caller's vault.
async fn seal_existing(
    state: AppState,
    caller: Caller,
    id: RecordId,
    req: SealRecordRequest,
) -> ApiResult<(StatusCode, Json<RecordInfo>)> {
    let owner = caller.user.id.clone();
    let (o, i) = (owner.clone(), id.clone());
    let row = state
        .blocking(move |s| s.store.record(&o, &i))
        .await??
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no upload is waiting for a seal under this id, and no record has it: the \
                     upload expired ({} minutes) or the server restarted, or its seal is still \
                     being committed; list your records, then upload the file again if need be",
                    SEAL_WAIT.as_secs() / 60
                ),
            )
        })?;
    if let Some(existing) = &row.seal {
        if *existing == req.seal && row.hash == req.hash {
            let s = state.clone();
            let info = state.blocking(move |_| record_info(&s, row)).await?;
            return Ok((StatusCode::OK, Json(info)));
        }
        return Err(ApiError::bad_request("this record is sealed already"));
    }
    // The server hashed every unsealed record itself (an attachment, or a record from before
    // seals): a patient whose hash differs did not download what is stored, and a seal over it
    // would make the record unusable.
    if !row.hash.is_empty() && row.hash != req.hash {
        return Err(ApiError::bad_request(
            "the hash does not match the stored record's; download it again before sealing it",
        ));
    }
    let statement = RecordSeal {
        owner: &owner,
        id: &id,
        category: row.category,
        size: row.size,
        hash: &req.hash,
        envelope: &row.envelope,
        meta: &row.meta,
    };
    if !seal_verifies(&caller, &statement, &req.seal) {
        let what = "the record is unchanged";
        return Err(refuse_seal(&state, &caller, "record.seal", id, what).await);
    }
    let ev = caller.event("record.seal", None, Some(id.clone()), None);
    let sealed = RecordRow {
        hash: req.hash,
        seal: Some(req.seal),
        ..row
    };
    let stored = sealed.clone();
    state
        .write(move |tx| {
            // Unchanged since it was checked above? (A delete or another seal may have won.)
            let now = tx.record(&stored.owner, &stored.id)?;
            // An identical seal committed meanwhile (the same request sent twice) is success.
            if now
                .as_ref()
                .is_some_and(|r| r.seal == stored.seal && r.hash == stored.hash)
            {
                return Ok(Ok(()));
            }
            let same = |r: &RecordRow| {
                r.seal.is_none()
                    && (r.category, r.size, &r.envelope, &r.meta)
                        == (stored.category, stored.size, &stored.envelope, &stored.meta)
            };
            if !now.is_some_and(|r| same(&r)) {
                return Ok(Err(ApiError::bad_request(
                    "the record changed while it was being sealed; list your records again",
                )));
            }
            tx.put_record(&stored)?;
            tx.append_audit(&stored.owner, ev)?;
            Ok(Ok(()))
        })
        .await??;
    let s = state.clone();
    let info = state.blocking(move |_| record_info(&s, sealed)).await?;
    Ok((StatusCode::OK, Json(info)))
}

/// `GET /v1/records`: the caller's records, oldest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RecordInfo>>> {
    caller.require_vault_owner()?;
    let s = state.clone();
    let owner = caller.user.id.clone();
    let rows = state
        .blocking(move |_| -> ApiResult<Vec<RecordInfo>> {
            Ok(s.store
                .records(&owner)?
                .into_iter()
                .map(|r| record_info(&s, r))
                .collect())
        })
        .await??;
    Ok(Json(rows))
}

async fn own_record(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<RecordRow> {
    caller.require_vault_owner()?;
    let id: RecordId = path_id(raw, "record")?;
    let owner = caller.user.id.clone();
    state
        .blocking(move |s| s.store.record(&owner, &id))
        .await??
        .ok_or_else(|| ApiError::not_found("record"))
}

/// `GET /v1/records/{id}`: one record's metadata and envelope.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<RecordInfo>> {
    let row = own_record(&state, &caller, &raw).await?;
    let s = state.clone();
    Ok(Json(state.blocking(move |_| record_info(&s, row)).await?))
}

/// Bytes per read of a blob being sent. Each read is a hop to a blocking thread and back: at
/// 64 KiB, sending 512 MiB cost the server 1.4 core-seconds, most of it switching threads.
const SEND_READ: u64 = 1 << 20;

/// Reads of a blob in flight at once: the next piece is read while the last one is sent, so
/// the socket does not wait for the read. With the positional reads below, 512 MiB fetches took
/// 0.77 s against 0.79, and 25.5 ticks of server CPU against 27 (docs/performance.md).
const READ_AHEAD: usize = 2;

/// Streams a blob file as the response body, exactly as long as the file was when opened.
///
/// Each read runs on a blocking thread, straight into the buffer that is sent: a
/// `tokio::fs::File` reads into a buffer of its own and copies it out on the async thread, a
/// memmove of the whole body. And no thread is held between reads, so a client that reads
/// slowly ties up nothing but its connection: at most [`READ_AHEAD`] pieces wait for it.
pub async fn stream_blob(state: &AppState, id: &RecordId) -> ApiResult<Response> {
    let path = state.blobs.path(id);
    let (file, len) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok((std::sync::Arc::new(file), len))
    })
    .await
    .map_err(ApiError::internal)??;
    let pieces = futures_util::stream::iter((0..len).step_by(SEND_READ as usize))
        .map(move |at| {
            let file = file.clone();
            let n = (len - at).min(SEND_READ);
            // Allocated here, where it is freed once sent: allocated on the blocking threads,
            // the buffers spread over those threads' malloc arenas, and 8 downloads at once
            // took the server's peak memory to 183 MiB (98 MiB allocated here).
            let piece = Vec::with_capacity(n as usize);
            async move {
                tokio::task::spawn_blocking(move || read_piece(&file, piece, at, n))
                    .await
                    .map_err(std::io::Error::other)?
            }
        })
        .buffered(READ_AHEAD);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(pieces))
        .map_err(ApiError::internal)
}

/// Reads bytes `at..at + n` of `file` into `piece` (empty), without zeroing it first. A file cut
/// short since it was opened fails the response, which then ends short of its length.
fn read_piece(
    file: &std::fs::File,
    mut piece: Vec<u8>,
    at: u64,
    n: u64,
) -> std::io::Result<Vec<u8>> {
    let n = usize::try_from(n).map_err(std::io::Error::other)?;
    piece.reserve_exact(n);
    while piece.len() < n {
        let from = at + piece.len() as u64;
        if read_at(file, &mut piece, from)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    // The spare room may have been larger than asked for.
    piece.truncate(n);
    Ok(piece)
}

/// Reads from `at` into the spare room of `piece` and returns how many bytes came. Positional,
/// so reads ahead share no file offset; one system call per piece, where `read_to_end` started
/// at 8 KiB and doubled (eight calls per MiB, and 3.5 ticks of server CPU per 512 MiB sent).
#[cfg(unix)]
fn read_at(file: &std::fs::File, piece: &mut Vec<u8>, at: u64) -> std::io::Result<usize> {
    loop {
        match rustix::io::pread(file, rustix::buffer::spare_capacity(piece), at) {
            Err(rustix::io::Errno::INTR) => {}
            got => return got.map_err(Into::into),
        }
    }
}

/// [`read_at`] where there is no `pread`: the room is zeroed first.
#[cfg(windows)]
fn read_at(file: &std::fs::File, piece: &mut Vec<u8>, at: u64) -> std::io::Result<usize> {
    use std::os::windows::fs::FileExt;
    let filled = piece.len();
    piece.resize(piece.capacity(), 0);
    let got = file.seek_read(&mut piece[filled..], at);
    piece.truncate(filled + got.as_ref().map_or(0, |n| *n));
    got
}

/// `GET /v1/records/{id}/body`: the ciphertext, after the access is durably audited.
pub async fn body(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let row = own_record(&state, &caller, &raw).await?;
    let ev = caller.event("record.download", None, Some(row.id.clone()), None);
    let owner = row.owner.clone();
    state.write(move |tx| tx.append_audit(&owner, ev)).await?;
    stream_blob(&state, &row.id).await
}

/// `DELETE /v1/records/{id}`: removes the record, its body file and every copy of its key in
/// shares. (A plain delete, not a secure erase: see docs/threat-model.md.) The audit log keeps
/// its id.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let row = own_record(&state, &caller, &raw).await?;
    let ev = caller.event("record.delete", None, Some(row.id.clone()), None);
    let (owner, id) = (row.owner.clone(), row.id.clone());
    state
        .write(move |tx| {
            tx.delete_record(&owner, &id)?;
            tx.forget_record_in_shares(&owner, &id)?;
            tx.append_audit(&owner, ev)
        })
        .await?;
    state.blobs.remove(&row.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_blob_is_read_where_asked_and_a_short_one_is_refused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        // Out of order, as reads ahead may run, and into more room than asked for.
        assert_eq!(read_piece(&f, Vec::new(), 4, 4).unwrap(), b"4567");
        assert_eq!(
            read_piece(&f, Vec::with_capacity(64), 0, 4).unwrap(),
            b"0123"
        );
        // Two bytes left where four were promised: the response must fail, not end short.
        let e = read_piece(&f, Vec::with_capacity(4), 8, 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
