//! Webhooks: each access to an account's data is POSTed, signed, to the URL the account set.
//!
//! Delivery state (the last event delivered, failed attempts, the next attempt time) lives in
//! the store, so retries with exponential backoff carry on across restarts, and every attempt is
//! logged where the owner can read it. Bodies are signed with the server's audit key (published
//! at `/v1/server-key`): header `x-healthlock-timestamp: T` and `x-healthlock-signature:
//! base64(Ed25519("healthlock/v1/webhook\n" ‖ T ‖ "\n" ‖ body))`.
//!
//! Only http(s) URLs are accepted, no credentials in them, no redirects are followed, and the
//! address is resolved and checked at every delivery: loopback, private, link-local and similar
//! targets are refused unless the operator allows them (`--allow-private-webhooks`), so a
//! webhook cannot be used to reach the server's own network (SSRF).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppJson;
use crate::state::AppState;
use crate::store::{Delivery, WebhookRow};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ed25519_dalek::Signer;
use healthlock_common::UserId;
use healthlock_common::api::AuditEvent;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Header carrying the signing time (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-healthlock-timestamp";
/// Header carrying the base64 Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "x-healthlock-signature";
/// Entries shown in the delivery log.
const LOG_SHOWN: usize = 50;

/// `PUT /v1/webhook`.
#[derive(Deserialize)]
pub struct SetWebhook {
    url: String,
}

/// `GET /v1/webhook` (and the answer to set).
#[derive(Serialize, Deserialize)]
pub struct WebhookStatus {
    url: String,
    created: u64,
    delivered_through: u64,
    failed_attempts: u32,
    next_attempt_ms: u64,
    deliveries: Vec<Delivery>,
}

/// What a webhook body holds.
#[derive(Serialize)]
struct Body<'a> {
    origin: &'a str,
    log: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a AuditEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<bool>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether an address is one a webhook must not reach without the operator's leave.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240 // reserved
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
                // NAT64 and 6to4 carry an IPv4 address inside: judge that one.
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && is_internal(IpAddr::V4(std::net::Ipv4Addr::new(
                        (s[6] >> 8) as u8,
                        s[6] as u8,
                        (s[7] >> 8) as u8,
                        s[7] as u8,
                    ))))
                || (s[0] == 0x2002
                    && is_internal(IpAddr::V4(std::net::Ipv4Addr::new(
                        (s[1] >> 8) as u8,
                        s[1] as u8,
                        (s[2] >> 8) as u8,
                        s[2] as u8,
                    ))))
        }
    }
}

/// Checks a webhook URL and resolves it to an address it may be delivered to.
pub async fn resolve(
    url: &str,
    allow_internal: bool,
) -> Result<(reqwest::Url, String, SocketAddr), String> {
    let u = reqwest::Url::parse(url).map_err(|_| "not a valid URL".to_owned())?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err("a webhook URL starts with https:// or http://".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("a webhook URL may not carry credentials".into());
    }
    let host = u.host_str().ok_or("the URL has no host")?.to_owned();
    let port = u.port_or_known_default().ok_or("the URL has no port")?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|_| format!("{host} does not resolve"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} does not resolve"))?;
    if !allow_internal && addrs.iter().any(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} is a loopback, private or link-local address; the operator must allow such \
             webhooks (--allow-private-webhooks)"
        ));
    }
    Ok((u, host, first))
}

/// POSTs a signed body; `Ok(status)` if the receiver answered.
async fn post(state: &AppState, url: &str, body: Vec<u8>) -> Result<u16, String> {
    let (u, host, addr) = resolve(url, state.settings.allow_private_webhooks).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would connect somewhere other than the address that was checked.
        .no_proxy()
        .timeout(Duration::from_secs(10))
        // Connect to the address that was checked, not whatever DNS says a moment later.
        .resolve(host.trim_matches(['[', ']']), addr)
        .build()
        .map_err(|e| e.to_string())?;
    let t = healthlock_common::time::now().to_string();
    let mut signed = format!("healthlock/v1/webhook\n{t}\n").into_bytes();
    signed.extend_from_slice(&body);
    let sig = healthlock_common::encoding::b64(&state.audit_key.sign(&signed).to_bytes());
    let resp = client
        .post(u)
        .header("content-type", "application/json")
        .header(HEADER_TIMESTAMP, t)
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                "connection refused or unreachable".to_owned()
            } else if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "request failed".to_owned()
            }
        })?;
    Ok(resp.status().as_u16())
}

/// Backoff after `attempts` failures: 0.5 s, 1 s, 2 s … at most a minute.
fn backoff_ms(attempts: u32) -> u64 {
    (500u64 << attempts.saturating_sub(1).min(7)).min(60_000)
}

async fn status(state: &AppState, me: &UserId) -> ApiResult<Json<WebhookStatus>> {
    let m = me.clone();
    let (row, deliveries) = state
        .blocking(move |s| -> ApiResult<_> {
            Ok((s.store.webhook(&m)?, s.store.deliveries(&m, LOG_SHOWN)?))
        })
        .await??;
    let row = row
        .ok_or_else(|| ApiError::not_found("webhook; set one with `healthlock webhook set URL`"))?;
    Ok(Json(WebhookStatus {
        url: row.url,
        created: row.created,
        delivered_through: row.cursor,
        failed_attempts: row.attempts,
        next_attempt_ms: row.next_attempt_ms,
        deliveries,
    }))
}

/// `PUT /v1/webhook`: events from now on go to `url`.
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<SetWebhook>,
) -> ApiResult<Json<WebhookStatus>> {
    resolve(&req.url, state.settings.allow_private_webhooks)
        .await
        .map_err(|e| ApiError::bad_request(format!("webhook refused: {e}")))?;
    let me = caller.user.id.clone();
    let ev = caller.event("webhook.set", None, None, None);
    let (m, url) = (me.clone(), req.url.clone());
    state
        .write(move |tx| {
            let log = tx.append_audit(&m, ev)?;
            let logged = tx.webhook(&m)?.map_or(0, |w| w.logged);
            tx.put_webhook(
                &m,
                &WebhookRow {
                    url,
                    created: tx.now,
                    // Only what happens from now on: the setting itself is already delivered.
                    cursor: log.seq,
                    attempts: 0,
                    next_attempt_ms: 0,
                    logged,
                },
            )
        })
        .await?;
    status(&state, &me).await
}

/// `DELETE /v1/webhook`.
pub async fn remove(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let me = caller.user.id.clone();
    let ev = caller.event("webhook.remove", None, None, None);
    let removed = state
        .write(move |tx| {
            let removed = tx.delete_webhook(&me)?;
            if removed {
                tx.append_audit(&me, ev)?;
            }
            Ok(removed)
        })
        .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

/// `GET /v1/webhook`: the webhook and its delivery log.
pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<WebhookStatus>> {
    status(&state, &caller.user.id).await
}

/// `POST /v1/webhook/test`: sends a signed test body now and says what the receiver answered.
pub async fn test(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Delivery>> {
    let me = caller.user.id.clone();
    let m = me.clone();
    let row = state
        .blocking(move |s| s.store.webhook(&m))
        .await??
        .ok_or_else(|| ApiError::not_found("webhook; set one with `healthlock webhook set URL`"))?;
    let body = serde_json::to_vec(&Body {
        origin: &state.origin,
        log: &me,
        event: None,
        test: Some(true),
    })
    .map_err(ApiError::internal)?;
    let result = post(&state, &row.url, body).await;
    Ok(Json(Delivery {
        time: healthlock_common::time::now(),
        seq: 0,
        status: result.as_ref().ok().copied(),
        ok: result.as_ref().is_ok_and(|s| (200..300).contains(s)),
        error: result.err(),
        attempt: 1,
    }))
}

/// The delivery loop: wakes on every committed write and twice a second for retries.
pub async fn run(state: AppState) {
    let mut changes = state.changes.subscribe();
    let mut closing = state.closing.subscribe();
    loop {
        if *closing.borrow() {
            return;
        }
        let hooks = state.blocking(|s| s.store.webhooks()).await;
        if let Ok(Ok(hooks)) = hooks {
            for (owner, row) in hooks {
                if now_ms() >= row.next_attempt_ms
                    && let Err(e) = deliver_next(&state, owner, row).await
                {
                    tracing::warn!(error = ?e.body.code, "webhook delivery bookkeeping failed");
                }
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = closing.changed() => return,
        }
    }
}

/// Delivers the owner's next event (by someone else) and records the attempt.
async fn deliver_next(state: &AppState, owner: UserId, row: WebhookRow) -> ApiResult<()> {
    let (o, after) = (owner.clone(), row.cursor);
    let (events, _) = state
        .blocking(move |s| s.store.audit(&o, after, 100))
        .await??;
    let mut skip_to = row.cursor;
    let mut target = None;
    for l in events {
        let e = l.parse().map_err(ApiError::internal)?;
        if e.actor.as_ref() == Some(&owner) {
            skip_to = e.seq;
        } else {
            target = Some((e.seq, l));
            break;
        }
    }
    let Some((seq, linked)) = target else {
        if skip_to > row.cursor {
            let url = row.url.clone();
            state
                .write(move |tx| match tx.webhook(&owner)? {
                    Some(mut w) if w.url == url && w.cursor < skip_to => {
                        w.cursor = skip_to;
                        tx.put_webhook(&owner, &w)
                    }
                    _ => Ok(()),
                })
                .await?;
        }
        return Ok(());
    };
    let actor_name = {
        let actor = linked.parse().ok().and_then(|e| e.actor);
        let s = state.clone();
        state
            .blocking(move |_| {
                actor
                    .and_then(|a| s.store.user_by_id(&a).ok().flatten())
                    .map(|u| u.username)
            })
            .await?
    };
    let event = AuditEvent {
        entry: linked.entry,
        hash: linked.hash,
        actor_name,
    };
    let body = serde_json::to_vec(&Body {
        origin: &state.origin,
        log: &owner,
        event: Some(&event),
        test: None,
    })
    .map_err(ApiError::internal)?;
    let result = post(state, &row.url, body).await;
    let ok = result.as_ref().is_ok_and(|s| (200..300).contains(s));
    let url = row.url.clone();
    state
        .write(move |tx| {
            let Some(mut w) = tx
                .webhook(&owner)?
                .filter(|w| w.url == url && w.cursor < seq)
            else {
                return Ok(()); // removed or replaced meanwhile
            };
            w.logged += 1;
            let delivery = Delivery {
                time: tx.now,
                seq,
                status: result.as_ref().ok().copied(),
                ok,
                error: match &result {
                    Ok(s) if !ok => Some(format!("the receiver answered {s}")),
                    Ok(_) => None,
                    Err(e) => Some(e.clone()),
                },
                attempt: w.attempts + 1,
            };
            tx.log_delivery(&owner, w.logged, &delivery)?;
            if ok {
                w.cursor = seq;
                w.attempts = 0;
                w.next_attempt_ms = 0;
            } else {
                w.attempts += 1;
                w.next_attempt_ms = now_ms() + backoff_ms(w.attempts);
            }
            tx.put_webhook(&owner, &w)
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(1), 500);
        assert_eq!(backoff_ms(2), 1000);
        assert_eq!(backoff_ms(30), 60_000);
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(resolve("ftp://example.com/x", true).await.is_err());
        assert!(resolve("http://user:pw@127.0.0.1/x", true).await.is_err());
        assert!(resolve("http://127.0.0.1:9/x", false).await.is_err());
        assert!(resolve("http://127.0.0.1:9/x", true).await.is_ok());
        assert!(resolve("http://[::1]:9/x", false).await.is_err());
    }
}
