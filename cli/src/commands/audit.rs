//! `audit` and `notifications`.

use crate::ctx::Ctx;
use anyhow::Result;
use healthlock_common::api::{AckRequest, AuditEvent};
use healthlock_common::time::rfc3339;

/// Page size when reading the log.
const PAGE: usize = 1000;

fn describe(e: &AuditEvent) -> String {
    let who = match (&e.actor_name, e.actor_role) {
        (Some(n), Some(r)) => format!("{n} ({r})"),
        (None, Some(r)) => format!("a {r}"),
        _ => "someone".into(),
    };
    let target = match (&e.share, &e.record) {
        (Some(s), Some(r)) => format!(" share {} record {}", &s.as_str()[..12], &r.as_str()[..12]),
        (Some(s), None) => format!(" share {}", &s.as_str()[..12]),
        (None, Some(r)) => format!(" record {}", &r.as_str()[..12]),
        (None, None) => String::new(),
    };
    let outcome = match (&e.reason, e.allowed) {
        (_, true) => "allowed".to_owned(),
        (Some(r), false) => format!("REFUSED ({r})"),
        (None, false) => "REFUSED".to_owned(),
    };
    format!(
        "{:>5}  {}  {:<28}  {:<16}{}  {}{}",
        e.seq,
        rfc3339(e.time),
        who,
        e.action,
        target,
        outcome,
        e.client
            .as_ref()
            .map(|c| format!("  from {c}"))
            .unwrap_or_default()
    )
}

/// Shows your audit log: every access to your data, allowed or refused.
pub async fn audit(ctx: &Ctx) -> Result<()> {
    let (api, _) = ctx.authed()?;
    let mut events: Vec<AuditEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.seq);
        let page: Vec<AuditEvent> = api
            .get(&format!("/v1/audit?after={after}&limit={PAGE}"))
            .await?;
        let n = page.len();
        events.extend(page);
        if n < PAGE {
            break;
        }
    }
    ctx.output(&events, || {
        events.iter().map(describe).collect::<Vec<_>>().join("\n")
    })
}

/// Shows accesses by others since you last looked, and marks them seen.
pub async fn notifications(ctx: &Ctx) -> Result<()> {
    let (api, _) = ctx.authed()?;
    let events: Vec<AuditEvent> = api.get("/v1/notifications").await?;
    ctx.output(&events, || {
        if events.is_empty() {
            "No new accesses.".into()
        } else {
            events.iter().map(describe).collect::<Vec<_>>().join("\n")
        }
    })?;
    if let Some(last) = events.last() {
        api.post_empty("/v1/notifications/ack", &AckRequest { seq: last.seq })
            .await?;
    }
    Ok(())
}
