//! Who is calling: the session extractor and the client address.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{Account, NewEvent};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use healthlock_common::api::ErrorCode;
use healthlock_common::{RecordId, Role, ShareId};
use std::net::{IpAddr, SocketAddr};

/// A logged-in caller.
pub struct Caller {
    /// The account.
    pub user: Account,
    /// SHA-256 of the session token (the store key; the token itself is never stored).
    pub token_hash: String,
    /// The peer address.
    pub client: Option<String>,
}

/// The peer address of a request, for audit events.
///
/// That is the TCP peer, unless the peer is one of the operator's trusted proxies: then it is
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further
/// left were written by the client and prove nothing).
pub fn client_addr(parts: &Parts, trusted: &[IpAddr]) -> Option<String> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    if !trusted.contains(&peer) {
        return Some(peer.to_string());
    }
    let forwarded: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let client = forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .copied()
        .unwrap_or(peer);
    Some(client.to_string())
}

/// SHA-256 of a session token, hex.
pub fn token_hash(token: &str) -> String {
    healthlock_common::encoding::sha256_hex(token.as_bytes())
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        "not logged in, or the session has ended; run `healthlock login`",
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthenticated)?;
        let hash = token_hash(token.trim());
        let client = client_addr(parts, &state.settings.trusted_proxies);
        let (idle, lifetime) = (state.settings.session_idle, state.settings.session_lifetime);
        let found = state.read(|s| s.session_user(&hash))?;
        let Some((session, user)) = found else {
            return Err(unauthenticated());
        };
        let now = healthlock_common::time::now();
        if now >= session.created + lifetime || now >= session.last_seen + idle {
            let h = hash.clone();
            state.write(move |tx| tx.delete_session(&h)).await?;
            return Err(unauthenticated());
        }
        // Refresh the idle clock at most once a minute: a durable write per request would cost
        // an fsync each.
        if now >= session.last_seen + 60 {
            let h = hash.clone();
            state.write(move |tx| tx.touch_session(&h)).await?;
        }
        Ok(Caller {
            user,
            token_hash: hash,
            client,
        })
    }
}

impl Caller {
    /// Refuses unless the caller owns a vault (is a patient).
    pub fn require_vault_owner(&self) -> ApiResult<()> {
        if self.user.role.owns_vault() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} account has no vault; only patients upload, list and share records",
                self.user.role
            )))
        }
    }

    /// An audit event with this caller as the actor.
    pub fn event(
        &self,
        action: &'static str,
        share: Option<ShareId>,
        record: Option<RecordId>,
        refused: Option<ErrorCode>,
    ) -> NewEvent {
        NewEvent {
            actor: Some((self.user.id.clone(), self.user.role)),
            action,
            share,
            record,
            refused,
            client: self.client.clone(),
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.user.role
    }
}

/// The peer address as an extractor (for handlers without a session).
pub struct ClientAddr(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(
            parts,
            &state.settings.trusted_proxies,
        )))
    }
}
