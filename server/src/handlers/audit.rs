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

/// Where a notification stream starts.
#[derive(Deserialize)]
pub struct StreamFrom {
    /// Resume after this seq (the `Last-Event-ID` header wins if both are given).
    #[serde(default)]
    after: Option<u64>,
}

/// What a stream carries between polls.
struct Watch {
    state: AppState,
    me: UserId,
    cursor: u64,
    changes: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    pending: std::collections::VecDeque<AuditEvent>,
}

impl Watch {
    /// The next access by someone else, waiting for one if needed; `None` when the server closes.
    async fn next(&mut self) -> Option<AuditEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if *self.closing.borrow() {
                return None;
            }
            // Mark the change seen before reading, so a commit after the read wakes us.
            self.changes.borrow_and_update();
            let (s, me, after) = (self.state.clone(), self.me.clone(), self.cursor);
            let page = self
                .state
                .blocking(move |_| -> ApiResult<Vec<AuditEvent>> {
                    let (page, _) = s.store.audit(&me, after, 100)?;
                    let linked = page.into_iter().map(|l| {
                        let a = actor_of(&l);
                        (l, a)
                    });
                    Ok(with_names(&s, linked.collect()))
                })
                .await
                .ok()?
                .ok()?;
            if let Some(last) = page.last() {
                self.cursor = last.linked().parse().map(|e| e.seq).ok()?;
                let me = self.me.clone();
                self.pending.extend(
                    page.into_iter().filter(|e| {
                        e.linked().parse().ok().and_then(|x| x.actor) != Some(me.clone())
                    }),
                );
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => changed.ok()?,
                _ = self.closing.changed() => return None,
            }
        }
    }
}

/// `GET /v1/notifications/stream`: server-sent events, one per access by someone else, with the
/// event's seq as its id. A client resumes after a drop with `Last-Event-ID` (or `?after=`) and
/// misses nothing; without either, it starts after the last acknowledged notification.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    AppQuery(from): AppQuery<StreamFrom>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let me = caller.user.id.clone();
    let header_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let cursor = match header_id.or(from.after) {
        Some(c) => c,
        None => {
            let m = me.clone();
            state.blocking(move |s| s.store.notify_cursor(&m)).await??
        }
    };
    let watch = Watch {
        changes: state.changes.subscribe(),
        closing: state.closing.subscribe(),
        state,
        me,
        cursor,
        pending: Default::default(),
    };
    let events = futures_util::stream::unfold(watch, |mut w| async move {
        let e = w.next().await?;
        let seq = e.linked().parse().map(|x| x.seq).unwrap_or(0);
        let data = serde_json::to_string(&e).unwrap_or_default();
        let event = Event::default()
            .id(seq.to_string())
            .event("access")
            .data(data);
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}
