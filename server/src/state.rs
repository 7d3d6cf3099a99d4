//! Shared server state.

use crate::blobs::Blobs;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use crate::store::{Store, StoreResult, Tx};
use healthlock_common::{ShareId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// The state itself.
pub struct Inner {
    /// Metadata, sessions, shares, audit.
    pub store: Store,
    /// Record bodies.
    pub blobs: Blobs,
    /// Configuration.
    pub settings: Settings,
    /// The origin clients sign for.
    pub origin: String,
    /// Open challenges: nonce → (share, expiry). Single-use, at most 60 s old.
    pub challenges: Mutex<HashMap<String, (ShareId, u64)>>,
    /// Throttles logins, registrations and share opens.
    pub limiter: crate::ratelimit::RateLimiter,
    /// Download grants after a successful open: (share, provider) → expiry.
    pub grants: Mutex<HashMap<(ShareId, UserId), u64>>,
    /// Makes the stable made-up salts that prelogin gives for unknown usernames.
    pub prelogin_secret: [u8; 32],
    /// Bumped after every committed write, so notification streams wake up and re-read the log.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Set when the server shuts down, so long-lived streams end and shutdown can finish.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Requests for the group commit's next sync.
    pub syncs: tokio::sync::mpsc::UnboundedSender<SyncWaiter>,
    /// Signs audit checkpoints; its public half is published at `/v1/server-key`.
    pub audit_key: ed25519_dalek::SigningKey,
    /// A real Argon2id hash to verify against when the username is unknown, so a wrong username
    /// costs the same time as a wrong password.
    pub dummy_phc: String,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    /// A signed checkpoint of `log` at `head`.
    pub fn checkpoint(
        &self,
        log: &UserId,
        head: &crate::store::AuditHead,
    ) -> ApiResult<healthlock_common::audit::Checkpoint> {
        Ok(healthlock_common::audit::Checkpoint::sign(
            &self.audit_key,
            &self.origin,
            log,
            head.seq,
            &head.hash()?,
        ))
    }
}

impl AppState {
    /// Runs blocking store work off the async threads.
    pub async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> ApiResult<R> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(ApiError::internal)
    }

    /// Runs point reads (a session, a share, a record) right here on the async thread: they are
    /// served from redb's cache in microseconds, less than a hop to a blocking thread and back
    /// costs under load. Scans and anything that may touch the disk for long use
    /// [`AppState::blocking`]. (While the store reopens after a failed commit these reads wait
    /// for it on the async threads; the store cannot answer meanwhile anyway.)
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> StoreResult<R>) -> ApiResult<R> {
        Ok(f(&self.store)?)
    }

    /// Runs `f` in one write transaction and returns once it is durable. Commits from
    /// concurrent requests share one fsync (group commit): each commits without waiting for the
    /// disk, then waits for the next sync, which covers every commit made before it.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> StoreResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let out = self.blocking(move |s| s.store.write_deferred(f)).await??;
        self.durable().await?;
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        Ok(out)
    }

    /// [`AppState::write`] with its own fsync, for commits tied to files on disk (uploads), so a
    /// failed sync can never later make durable a record whose blob was removed.
    pub async fn write_durable<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> StoreResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let out = self.blocking(move |s| s.store.write(f)).await??;
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        Ok(out)
    }

    /// Waits until every commit made so far is durable.
    async fn durable(&self) -> ApiResult<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.syncs
            .send(tx)
            .map_err(|_| ApiError::internal("the group commit stopped"))?;
        rx.await
            .map_err(|_| ApiError::internal("the group commit stopped"))??;
        Ok(())
    }
}

/// A waiter for the next group sync.
pub type SyncWaiter = tokio::sync::oneshot::Sender<StoreResult<()>>;

/// The group commit: waits for a waiter, takes every waiter queued by then, makes all earlier
/// commits durable with one fsync, and answers them all.
pub async fn group_commit(
    state: AppState,
    mut waiters: tokio::sync::mpsc::UnboundedReceiver<SyncWaiter>,
) {
    while let Some(first) = waiters.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = waiters.try_recv() {
            batch.push(w);
        }
        let s = state.clone();
        let result = tokio::task::spawn_blocking(move || s.store.sync())
            .await
            .unwrap_or_else(|e| Err(crate::store::StoreError::Db(e.to_string())));
        for w in batch {
            let _ = w.send(result.clone());
        }
    }
}
