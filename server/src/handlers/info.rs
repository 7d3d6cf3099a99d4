//! `GET /v1/info`: what a client needs to know before anything else.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use healthlock_common::api::{ServerInfo, ServerKey};

/// The server's origin, version and limits.
pub async fn get(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        origin: state.origin.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_upload: state.settings.max_upload,
        max_share_lifetime: state.settings.max_share_lifetime,
    })
}

/// The Ed25519 key that signs audit checkpoints, for clients to pin on first contact.
pub async fn server_key(State(state): State<AppState>) -> Json<ServerKey> {
    Json(ServerKey {
        origin: state.origin.clone(),
        key: healthlock_common::encoding::hex(state.audit_key.verifying_key().as_bytes()),
    })
}
