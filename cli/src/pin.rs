//! The server's audit key, pinned on first contact (trust on first use) and checked ever after:
//! a server that later shows another key, or signs a checkpoint with one, is caught.

use crate::client::Api;
use crate::ctx::Ctx;
use crate::error::integrity;
use anyhow::Result;
use ed25519_dalek::VerifyingKey;
use healthlock_common::api::ServerKey;
use healthlock_common::keys::parse_verifying_key;

/// The pinned key of `api`'s server, pinning it now if this profile has none for that server.
pub async fn server_key(ctx: &Ctx, api: &Api) -> Result<VerifyingKey> {
    let mut config = ctx.profile.config()?;
    let same_server = config.server.as_deref() == Some(api.base.as_str());
    if same_server && let Some(pinned) = &config.server_key {
        let offered: ServerKey = api.get("/v1/server-key").await?;
        if &offered.key != pinned {
            return Err(integrity(format!(
                "the server's audit key changed: pinned {}, now {}. If the operator confirms a new \
                 key out of band, remove \"server_key\" from {}",
                short(pinned),
                short(&offered.key),
                ctx.profile.dir.join("profile.json").display()
            )));
        }
        return Ok(parse_verifying_key(pinned)?);
    }
    let offered: ServerKey = api.get("/v1/server-key").await?;
    if offered.origin != api.base {
        return Err(integrity(format!(
            "the server says its address is {}, not {}",
            offered.origin, api.base
        )));
    }
    let key = parse_verifying_key(&offered.key)?;
    config.server = Some(api.base.clone());
    config.server_key = Some(offered.key);
    ctx.profile.save_config(&config)?;
    Ok(key)
}

/// The first 16 hex digits of a key, for people to compare.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(16)]
}
