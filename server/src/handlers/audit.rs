//! The caller's own audit log and notifications (accesses by others, not yet shown).

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{AppJson, AppQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use healthlock_common::api::{AckRequest, AuditEvent};
use serde::Deserialize;
use std::collections::HashMap;

/// Paging of the audit log.
#[derive(Deserialize)]
pub struct Page {
    /// Only events with a greater sequence number.
    #[serde(default)]
    after: u64,
    /// At most this many (capped at 10,000).
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// Fills in actor names, looked up once per actor.
fn with_names(state: &AppState, mut events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    let mut names: HashMap<_, Option<String>> = HashMap::new();
    for e in &mut events {
        if let Some(actor) = &e.actor {
            e.actor_name = names
                .entry(actor.clone())
                .or_insert_with(|| {
                    state
                        .store
                        .user_by_id(actor)
                        .ok()
                        .flatten()
                        .map(|u| u.username)
                })
                .clone();
        }
    }
    events
}

/// `GET /v1/audit?after=N&limit=M`: the caller's log, in order.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(page): AppQuery<Page>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let (s, me) = (state.clone(), caller.user.id.clone());
    let limit = page.limit.clamp(1, 10_000);
    let events = state
        .blocking(move |_| -> ApiResult<_> {
            Ok(with_names(&s, s.store.audit(&me, page.after, limit)?))
        })
        .await??;
    Ok(Json(events))
}

/// `GET /v1/notifications`: accesses by others that were not yet acknowledged.
pub async fn notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let (s, me) = (state.clone(), caller.user.id.clone());
    let events = state
        .blocking(move |_| -> ApiResult<_> {
            let cursor = s.store.notify_cursor(&me)?;
            let mut out = Vec::new();
            let mut after = cursor;
            loop {
                let page = s.store.audit(&me, after, 1000)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                out.extend(page.into_iter().filter(|e| e.actor.as_ref() != Some(&me)));
                if out.len() >= 1000 {
                    break;
                }
            }
            Ok(with_names(&s, out))
        })
        .await??;
    Ok(Json(events))
}

/// `POST /v1/notifications/ack`: marks everything up to `seq` as seen.
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<AckRequest>,
) -> ApiResult<StatusCode> {
    let me = caller.user.id.clone();
    state
        .write(move |tx| tx.set_notify_cursor(&me, req.seq))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
