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

/// Show accesses to your data by others since you last looked (and mark them seen), or watch
/// for them live.
#[derive(Args)]
pub struct Notifications {
    /// Keep watching and print each access as it happens (one JSON line each with --json).
    /// Reconnects by itself and resumes where it left off, with nothing missed or repeated.
    #[arg(long)]
    watch: bool,
    /// With --watch: run this shell command for each access; the event's JSON is on its stdin
    /// and in HEALTHLOCK_EVENT, and its output goes to stderr.
    #[arg(long, requires = "watch")]
    exec: Option<String>,
}

impl Notifications {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        if self.watch {
            return watch(ctx, self.exec.as_deref()).await;
        }
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
}

/// Follows `/v1/notifications/stream`, reconnecting with `Last-Event-ID` after any drop.
async fn watch(ctx: &Ctx, exec: Option<&str>) -> Result<()> {
    use futures_util::StreamExt;
    let (api, session) = ctx.authed()?;
    let mut last = ctx
        .profile
        .watch_cursor()?
        .filter(|c| c.server == session.server && c.log == session.user_id)
        .map(|c| c.seq);
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        let mut rb = api
            .request(reqwest::Method::GET, "/v1/notifications/stream")
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            rb = rb.header("last-event-id", id.to_string());
        }
        let resp = match api.send(rb).await {
            Ok(r) => r,
            Err(e) => {
                if !matches!(
                    e.downcast_ref::<crate::error::CliError>(),
                    Some(crate::error::CliError::Network { .. })
                ) {
                    return Err(e);
                }
                eprintln!(
                    "connection lost ({e:#}); retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(250);
        if !ctx.json {
            eprintln!(
                "watching {} for accesses to your data (Ctrl-C to stop)",
                session.server
            );
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut data = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !data.is_empty() {
                        let event: AuditEvent = serde_json::from_str(&data)
                            .map_err(|_| integrity("the server sent a malformed event"))?;
                        data.clear();
                        let shown = Line::new(&event)?;
                        if last.is_some_and(|l| shown.seq <= l) {
                            continue; // already shown before a reconnect
                        }
                        deliver(ctx, &shown, exec)?;
                        last = Some(shown.seq);
                        ctx.profile
                            .save_watch_cursor(&crate::profile::WatchCursor {
                                server: session.server.clone(),
                                log: session.user_id.clone(),
                                seq: shown.seq,
                            })?;
                        let _ = api
                            .post_empty("/v1/notifications/ack", &AckRequest { seq: shown.seq })
                            .await;
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
        }
        if !ctx.json {
            eprintln!("the server closed the stream; reconnecting");
        }
    }
}

/// Prints one access and runs `--exec` for it.
fn deliver(ctx: &Ctx, line: &Line, exec: Option<&str>) -> Result<()> {
    let json = serde_json::to_string(line)?;
    if let Some(cmd) = exec {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("HEALTHLOCK_EVENT", &json)
            .stdin(std::process::Stdio::piped())
            // Keep stdout for the events themselves (JSON lines stay parseable).
            .stdout(std::io::stderr())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(json.as_bytes());
        }
        let status = child.wait()?;
        if !status.success() {
            ctx.warn(&format!("--exec command exited with {status}"));
        }
    }
    if ctx.json {
        println!("{json}");
    } else {
        println!("{}", line.human());
    }
    Ok(())
}
