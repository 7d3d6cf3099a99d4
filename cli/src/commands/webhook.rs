//! `webhook set URL | remove | test | status`.

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Subcommand;
use healthlock_common::time::rfc3339;
use reqwest::Method;
use serde_json::Value;

/// Have the server POST each access to your data, signed, to a URL of yours.
#[derive(Subcommand)]
pub enum Webhook {
    /// Send events from now on to URL (https://…; the server refuses internal addresses unless
    /// its operator allows them). Verify bodies with the key `healthlock whoami` shows.
    Set {
        /// Where to POST.
        url: String,
    },
    /// Stop sending events.
    Remove,
    /// Send a signed test body now and show what the receiver answered.
    Test,
    /// Show the webhook and its recent deliveries.
    Status,
}

fn delivery_line(d: &Value) -> String {
    format!(
        "{}  event {:>5}  attempt {}  {}{}",
        rfc3339(d["time"].as_u64().unwrap_or(0)),
        d["seq"],
        d["attempt"],
        if d["ok"] == true {
            "delivered"
        } else {
            "FAILED"
        },
        d["status"]
            .as_u64()
            .map(|s| format!(" (HTTP {s})"))
            .unwrap_or_default()
            + &d["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
    )
}

impl Webhook {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, _) = ctx.authed()?;
        match self {
            Webhook::Set { url } => {
                let resp = api
                    .send(
                        api.request(Method::PUT, "/v1/webhook")
                            .json(&serde_json::json!({ "url": url })),
                    )
                    .await?;
                let v: Value = api.decode(resp).await?;
                ctx.output(&v, || {
                    format!(
                        "webhook set: each access to your data is now POSTed to {}\n\
                         check deliveries with `healthlock webhook status`",
                        v["url"].as_str().unwrap_or_default()
                    )
                })
            }
            Webhook::Remove => {
                api.send(api.request(Method::DELETE, "/v1/webhook")).await?;
                ctx.output(&serde_json::json!({ "removed": true }), || {
                    "webhook removed".into()
                })
            }
            Webhook::Test => {
                let d: Value = api.post("/v1/webhook/test", &serde_json::json!({})).await?;
                let ok = d["ok"] == true;
                ctx.output(&d, || format!("test {}", delivery_line(&d)))?;
                if ok {
                    Ok(())
                } else {
                    Err(crate::error::input(
                        "the test delivery failed; see the line above",
                    ))
                }
            }
            Webhook::Status => {
                let v: Value = api.get("/v1/webhook").await?;
                ctx.output(&v, || {
                    let mut s = format!(
                        "webhook {}\ndelivered through event {}",
                        v["url"].as_str().unwrap_or_default(),
                        v["delivered_through"]
                    );
                    if v["failed_attempts"].as_u64().unwrap_or(0) > 0 {
                        s.push_str(&format!(
                            ", {} failed attempt(s) at the next one; retrying with backoff",
                            v["failed_attempts"]
                        ));
                    }
                    for d in v["deliveries"].as_array().into_iter().flatten() {
                        s.push('\n');
                        s.push_str(&delivery_line(d));
                    }
                    s
                })
            }
        }
    }
}
