//! A patient's vault: upload, list, read and delete records.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::path_id;
use crate::state::AppState;
use crate::store::RecordRow;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use healthlock_common::api::{
    ErrorCode, HEADER_CATEGORY, HEADER_ENVELOPE, HEADER_META, RecordInfo,
};
use healthlock_common::envelope::MAX_SMALL_AGE_FILE;
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
        sha256: r.sha256,
        created: r.created,
        envelope: r.envelope,
        meta: r.meta,
        added_by,
    }
}

/// Streams a body to disk and adds it to `owner`'s vault with its audit event. Shared by the
/// patient's upload and a doctor's attach; the caller has checked the right to write.
pub async fn store_upload(
    state: &AppState,
    caller: &Caller,
    owner: UserId,
    headers: &HeaderMap,
    body: Body,
    action: &'static str,
    share: Option<healthlock_common::ShareId>,
) -> ApiResult<RecordInfo> {
    let (h, body) = crate::blobs::or_drain(UploadHeaders::parse(headers), body).await?;
    let quota = state.settings.quota;
    let room = quota.saturating_sub(state.read(|s| s.usage(&owner))?);
    let whose = if caller.user.id == owner {
        "your"
    } else {
        "the patient's"
    };
    let quota_full = move || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{whose} vault is full (quota {} MiB); records must be deleted first",
                quota >> 20
            ),
        )
    };
    let limit = state.settings.max_upload.min(room);
    let received = match state.blobs.receive(body, limit).await {
        Err(e) if e.body.code == ErrorCode::PayloadTooLarge && room < state.settings.max_upload => {
            return Err(quota_full());
        }
        other => other?,
    };
    let id = RecordId::random();
    let row = RecordRow {
        id: id.clone(),
        owner: owner.clone(),
        category: h.category,
        size: received.size,
        sha256: received.sha256.clone(),
        created: healthlock_common::time::now(),
        envelope: h.envelope,
        meta: h.meta,
        added_by: (caller.user.id != owner).then(|| caller.user.id.clone()),
    };
    state.blobs.commit(received, &id).await?;
    let ev = caller.event(action, share, Some(id.clone()), None);
    let stored = row.clone();
    if let Err(e) = state
        .write(move |tx| {
            // Concurrent uploads may have filled the vault meanwhile.
            if tx.usage(&stored.owner)? + stored.size > quota {
                return Ok(Err(quota_full()));
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

/// `POST /v1/records`: the body is the record's age ciphertext, streamed.
pub async fn upload(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<RecordInfo>)> {
    let allowed = caller.and_then(|c| c.require_vault_owner().map(|()| c));
    let (caller, body) = crate::blobs::or_drain(allowed, body).await?;
    let owner = caller.user.id.clone();
    let info = store_upload(
        &state,
        &caller,
        owner,
        &headers,
        body,
        "record.upload",
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
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

/// Bytes per read of a blob being sent. Each read of a `tokio::fs::File` is a hop to a blocking
/// thread and back: at 64 KiB, sending 512 MiB cost the server 1.4 core-seconds, most of it
/// switching threads.
const SEND_READ: usize = 1 << 20;

/// Streams a blob file as the response body.
pub async fn stream_blob(state: &AppState, id: &RecordId) -> ApiResult<Response> {
    let file = tokio::fs::File::open(state.blobs.path(id)).await?;
    let len = file.metadata().await?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, SEND_READ);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
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
