//! `GET /v1/info`: what a client needs to know before anything else.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use healthlock_common::api::ServerInfo;

/// The server's origin, version and limits.
pub async fn get(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        origin: state.origin.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_upload: state.settings.max_upload,
        max_share_lifetime: state.settings.max_share_lifetime,
    })
}
