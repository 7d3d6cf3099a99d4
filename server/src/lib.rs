//! The HealthLock server: stores ciphertext, enforces the role policy, verifies share tokens by
//! proof of possession and appends an audit event for every access. It never sees a plaintext
//! document, a password, a private key or a token's secret.

pub mod auth;
pub mod batcher;
pub mod blobs;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod invite;
pub mod pending;
pub mod proofs;
pub mod ratelimit;
pub mod settings;
pub mod state;
pub mod store;
pub mod webhooks;

use crate::error::ApiError;
use crate::state::{AppState, Inner};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::routing::{get, post, put};
use handlers::{accounts, audit, info, records, shares};
use std::net::SocketAddr;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// Headers on every response: nothing is sniffed, cached, framed or leaks a referrer.
async fn security_headers(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The OpenAPI description of this API (server/api/openapi.json, made by scripts/gen-openapi.py).
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../api/openapi.json"),
    )
}

/// How long a request may take to be answered (uploads excepted: they have an idle timeout).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The API's routes. Upload routes stream their bodies and count bytes themselves, with an idle
/// timeout instead of a total one; everything else is JSON under a small body limit and a
/// request timeout.
pub fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route("/v1/records", post(records::upload))
        .route("/v1/shares/{id}/records", post(shares::attach));
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/info", get(info::get))
        .route("/v1/server-key", get(info::server_key))
        .route("/.well-known/healthlock/server-key", get(info::server_key))
        .route("/v1/auth/prelogin", post(accounts::prelogin))
        .route("/v1/auth/register", post(accounts::register))
        .route("/v1/auth/login", post(accounts::login))
        .route("/v1/auth/logout", post(accounts::logout))
        .route("/v1/me", get(accounts::me))
        .route("/v1/records", get(records::list))
        .route(
            "/v1/records/{id}",
            get(records::get).delete(records::delete),
        )
        .route("/v1/records/{id}/body", get(records::body))
        .route("/v1/records/{id}/seal", put(records::seal))
        .route("/v1/shares", get(shares::list).post(shares::create))
        .route("/v1/shares/{id}/revoke", post(shares::revoke))
        .route("/v1/shares/{id}/challenge", post(shares::challenge))
        .route("/v1/shares/{id}/open", post(shares::open))
        .route("/v1/shares/{id}/records/{record}", get(shares::body))
        .route("/v1/audit", get(audit::list))
        .route("/v1/notifications", get(audit::notifications))
        .route("/v1/notifications/ack", post(audit::ack))
        .route("/v1/notifications/stream", get(audit::stream))
        .route(
            "/v1/webhook",
            get(webhooks::get)
                .put(webhooks::set)
                .delete(webhooks::remove),
        )
        .route("/v1/webhook/test", post(webhooks::test))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(uploads)
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                healthlock_common::api::ErrorCode::BadRequest,
                "this route does not take that method",
            )
            .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
        .layer(axum::middleware::from_fn(security_headers))
        // The span names the route pattern, never the raw path or query.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str());
            tracing::info_span!("request", method = %req.method(), route)
        }))
        .with_state(state)
}

/// Opens the data directory and builds the state, and starts the store's writer thread (group
/// commit, [`state::batch_writer`]), the proof checker ([`proofs::ProofChecker`]) and the
/// signer of open checkpoints.
pub fn open_state(settings: settings::Settings, origin: String) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&settings.data_dir)?;
    let store = store::Store::open(&settings.data_dir.join("healthlock.redb"))?;
    let blobs = blobs::Blobs::open(&settings.data_dir)?;
    let orphans = blobs.sweep_orphans(&store.all_record_ids()?)?;
    if orphans > 0 {
        tracing::info!(orphans, "removed blobs of unacknowledged uploads");
    }
    let prelogin_secret = store.meta_secret("prelogin")?;
    let audit_key = ed25519_dalek::SigningKey::from_bytes(&store.meta_secret("audit_key")?);
    let dummy_phc = accounts::hash_secret(&healthlock_common::random_bytes::<32>())
        .map_err(|e| anyhow::anyhow!("{:?}", e.body))?;
    let (writes, jobs) = std::sync::mpsc::channel();
    let (signer, signed_origin) = (audit_key.clone(), origin.clone());
    let open_checkpoints = batcher::Batcher::start("checkpoint-signer", 256, move |heads| {
        healthlock_common::audit::Checkpoint::sign_batch(&signer, &signed_origin, heads)
    })?;
    let state = AppState(Arc::new(Inner {
        store,
        blobs,
        settings,
        origin,
        challenges: Default::default(),
        limiter: Default::default(),
        grants: Default::default(),
        pending: Default::default(),
        share_keys: Default::default(),
        proofs: proofs::ProofChecker::start()?,
        prelogin_secret,
        audit_key,
        open_checkpoints,
        writes,
        changes: tokio::sync::watch::Sender::new(0),
        closing: tokio::sync::watch::Sender::new(false),
        dummy_phc,
    }));
    let writer = Arc::downgrade(&state.0);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || state::batch_writer(writer, jobs))?;
    Ok(state)
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    settings: settings::Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let origin = match &settings.public_url {
        Some(url) => healthlock_common::token::normalize_origin(url)?,
        None => format!("http://{addr}"),
    };
    let state = open_state(settings, origin.clone())?;
    tracing::info!(%origin, "healthlock-server listening");
    eprintln!("healthlock-server listening on {origin} (bound to {addr})");
    let closing = state.closing.clone();
    tokio::spawn(webhooks::run(state.clone()));
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // End the notification streams, or graceful shutdown would wait for them forever.
        closing.send_replace(true);
    })
    .await?;
    Ok(())
}
