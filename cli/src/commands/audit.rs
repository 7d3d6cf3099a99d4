//! `audit` (list or verify the log) and `notifications`.

use crate::ctx::Ctx;
use crate::error::integrity;
use crate::profile::AuditHead;
use anyhow::Result;
use clap::Args;
use healthlock_common::api::{AckRequest, AuditEvent, AuditPage};
use healthlock_common::audit::{Entry, Verified, Verifier, parse_hash};
use healthlock_common::encoding::hex;
use healthlock_common::time::{parse_duration, rfc3339};
use healthlock_common::{RecordId, Role, ShareId, UserId};
use serde::Serialize;

/// Page size when reading the log.
const PAGE: usize = 1000;

/// Show or verify your audit log: every access to your data, allowed or refused.
#[derive(Args)]
pub struct Audit {
    /// Verify instead of listing: check the hash chain and the server's signature, and that
    /// the log extends the one this device verified last time (catches altered, removed or
    /// reordered events, a rolled-back log and a forked history).
    #[arg(long)]
    verify: bool,
    /// With --verify: check every event from the first, not only the new ones.
    #[arg(long, requires = "verify")]
    full: bool,
    /// Only events from this long ago on, e.g. 24h or 7d.
    #[arg(long, value_parser = parse_duration, conflicts_with = "verify")]
    since: Option<u64>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0, conflicts_with = "verify")]
    after: u64,
}

/// One event as shown (and as one line of `--json` output).
#[derive(Serialize)]
pub struct Line {
    seq: u64,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_role: Option<Role>,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    share: Option<ShareId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<RecordId>,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    hash: String,
}

impl Line {
    fn new(e: &AuditEvent) -> Result<Self> {
        let entry: Entry = e
            .linked()
            .parse()
            .map_err(|_| integrity("the server sent a malformed audit entry"))?;
        Ok(Line {
            seq: entry.seq,
            time: rfc3339(entry.time),
            actor: entry.actor,
            actor_name: e.actor_name.clone(),
            actor_role: entry.actor_role,
            action: entry.action,
            share: entry.share,
            record: entry.record,
            allowed: entry.allowed,
            reason: entry.reason,
            client: entry.client,
            hash: e.hash.clone(),
        })
    }

    fn human(&self) -> String {
        let who = match (&self.actor_name, self.actor_role) {
            (Some(n), Some(r)) => format!("{n} ({r})"),
            (None, Some(r)) => format!("a {r}"),
            _ => "someone".into(),
        };
        let target = match (&self.share, &self.record) {
            (Some(s), Some(r)) => {
                format!(" share {} record {}", &s.as_str()[..12], &r.as_str()[..12])
            }
            (Some(s), None) => format!(" share {}", &s.as_str()[..12]),
            (None, Some(r)) => format!(" record {}", &r.as_str()[..12]),
            (None, None) => String::new(),
        };
        let outcome = match (&self.reason, self.allowed) {
            (_, true) => "allowed".to_owned(),
            (Some(r), false) => format!("REFUSED ({r})"),
            (None, false) => "REFUSED".to_owned(),
        };
        format!(
            "{:>5}  {}  {:<28}  {:<16}{}  {}{}",
            self.seq,
            self.time,
            who,
            self.action,
            target,
            outcome,
            self.client
                .as_ref()
                .map(|c| format!("  from {c}"))
                .unwrap_or_default()
        )
    }
}

impl Audit {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        if self.verify {
            return verify(ctx, self.full).await;
        }
        let (api, _) = ctx.authed()?;
        let since = self
            .since
            .map(|s| {
                format!(
                    "&since={}",
                    healthlock_common::time::now().saturating_sub(s)
                )
            })
            .unwrap_or_default();
        let mut after = self.after;
        let mut any = false;
        // Page by page, printing as it goes: a long log is never held whole.
        loop {
            let page: AuditPage = api
                .get(&format!("/v1/audit?after={after}&limit={PAGE}{since}"))
                .await?;
            for e in &page.events {
                let line = Line::new(e)?;
                after = line.seq;
                any = true;
                if ctx.json {
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    println!("{}", line.human());
                }
            }
            if page.events.len() < PAGE {
                break;
            }
        }
        if !any && !ctx.json {
            println!("No events.");
        }
        Ok(())
    }
}

/// `audit --verify`.
async fn verify(ctx: &Ctx, full: bool) -> Result<()> {
    let (api, session) = ctx.authed()?;
    let key = crate::pin::server_key(ctx, &api).await?;
    let saved = ctx
        .profile
        .audit_head()?
        .filter(|h| h.server == session.server && h.log == session.user_id);
    let remembered = match &saved {
        Some(h) => Verified {
            size: h.size,
            head: parse_hash(&h.head)?,
        },
        None => Verified::default(),
    };
    let start = if full {
        Verified::default()
    } else {
        remembered
    };
    let mut verifier = Verifier::new(start);
    let fail = |e: healthlock_common::audit::AuditError| integrity(format!("audit log: {e}"));
    let checkpoint = loop {
        let after = verifier.state().size;
        let page: AuditPage = api
            .get(&format!("/v1/audit?after={after}&limit={PAGE}"))
            .await?;
        for e in &page.events {
            verifier.feed(&e.linked()).map_err(fail)?;
            // A full check must pass through the head remembered from last time.
            if full && verifier.state().size == remembered.size && verifier.state() != remembered {
                return Err(fail(healthlock_common::audit::AuditError::Forked {
                    at: remembered.size,
                }));
            }
        }
        if page.events.len() < PAGE {
            break page.checkpoint;
        }
    };
    let state = verifier
        .finish(&checkpoint, &key, &session.server, &session.user_id)
        .map_err(fail)?;
    if state.size < remembered.size {
        return Err(fail(healthlock_common::audit::AuditError::RolledBack {
            had: remembered.size,
            now: state.size,
        }));
    }
    ctx.profile.save_audit_head(&AuditHead {
        server: session.server.clone(),
        log: session.user_id.clone(),
        size: state.size,
        head: hex(&state.head),
    })?;
    let new = state.size - remembered.size;
    let out = serde_json::json!({
        "verified": true,
        "size": state.size,
        "new": new,
        "head": hex(&state.head),
        "server_key": hex(key.as_bytes()),
    });
    ctx.output(&out, || {
        format!(
            "audit log verified: {} events ({new} new since this device last checked), head {}…, \
             signed by the pinned server key {}…",
            state.size,
            &hex(&state.head)[..16],
            crate::pin::short(&hex(key.as_bytes()))
        )
    })
}

/// Shows accesses by others since you last looked, and marks them seen.
pub async fn notifications(ctx: &Ctx) -> Result<()> {
    let (api, _) = ctx.authed()?;
    let events: Vec<AuditEvent> = api.get("/v1/notifications").await?;
    let lines = events.iter().map(Line::new).collect::<Result<Vec<_>>>()?;
    ctx.output(&lines, || {
        if lines.is_empty() {
            "No new accesses.".into()
        } else {
            lines.iter().map(Line::human).collect::<Vec<_>>().join("\n")
        }
    })?;
    if let Some(last) = lines.last() {
        api.post_empty("/v1/notifications/ack", &AckRequest { seq: last.seq })
            .await?;
    }
    Ok(())
}
