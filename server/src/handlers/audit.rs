//! The caller's own audit log with a signed checkpoint, and notifications (accesses by others,
//! not yet acknowledged).

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{AppJson, AppQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use healthlock_common::UserId;
use healthlock_common::api::{AckRequest, AuditEvent, AuditPage};
use healthlock_common::audit::LinkedEntry;
use serde::Deserialize;
use std::collections::HashMap;

/// Paging of the audit log.
#[derive(Deserialize)]
pub struct Page {
    /// Only events with a greater sequence number.
    #[serde(default)]
    after: u64,
    /// Only events at or after this time (Unix seconds); found by binary search.
    #[serde(default)]
    since: Option<u64>,
    /// At most this many (capped at 10,000).
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// Adds actor names (looked up once per actor; names are outside the hashed entry).
fn with_names(state: &AppState, linked: Vec<(LinkedEntry, Option<UserId>)>) -> Vec<AuditEvent> {
    let mut names: HashMap<UserId, Option<String>> = HashMap::new();
    linked
        .into_iter()
        .map(|(l, actor)| {
            let actor_name = actor.and_then(|a| {
                names
                    .entry(a.clone())
                    .or_insert_with(|| {
                        state
                            .store
                            .user_by_id(&a)
                            .ok()
                            .flatten()
                            .map(|u| u.username)
                    })
                    .clone()
            });
            AuditEvent {
                entry: l.entry,
                hash: l.hash,
                actor_name,
            }
        })
        .collect()
}

fn actor_of(l: &LinkedEntry) -> Option<UserId> {
    l.parse().ok().and_then(|e| e.actor)
}

/// `GET /v1/audit?after=N&since=T&limit=M`: a page of the caller's log and a signed checkpoint.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(page): AppQuery<Page>,
) -> ApiResult<Json<AuditPage>> {
    let (s, me) = (state.clone(), caller.user.id.clone());
    let limit = page.limit.clamp(1, 10_000);
    let out = state
        .blocking(move |_| -> ApiResult<AuditPage> {
            let after = match page.since {
                Some(t) => page.after.max(s.store.audit_seq_before(&me, t)?),
                None => page.after,
            };
            let (events, head) = s.store.audit(&me, after, limit)?;
            let checkpoint = s.checkpoint(&me, &head)?;
            let events = events.into_iter().map(|l| {
                let a = actor_of(&l);
                (l, a)
            });
            Ok(AuditPage {
                events: with_names(&s, events.collect()),
                checkpoint,
            })
        })
        .await??;
    Ok(Json(out))
}

/// `GET /v1/notifications`: accesses by others that were not yet acknowledged.
pub async fn notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let (s, me) = (state.clone(), caller.user.id.clone());
    let events = state
        .blocking(move |_| -> ApiResult<_> {
            let mut after = s.store.notify_cursor(&me)?;
            let mut out = Vec::new();
            loop {
                let (page, _) = s.store.audit(&me, after, 1000)?;
                let Some(last) = page.last() else { break };
                after = last.parse().map(|e| e.seq).unwrap_or(u64::MAX);
                out.extend(page.into_iter().filter_map(|l| {
                    let actor = actor_of(&l);
                    (actor.as_ref() != Some(&me)).then_some((l, actor))
                }));
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
