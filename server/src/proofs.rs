//! Proofs of possession: the share keys they are checked against, kept in memory, and a thread
//! that checks the proofs of concurrent opens together.
//!
//! Checking an Ed25519 signature is the largest single cost of an open (about a fifth of the
//! server's CPU per open before this module). Checked in batches of eight or more, each costs
//! about half ([`verify_opens`]); a batch forms by itself under load, the way the store's writer
//! gathers writes ([`Batcher`]), and at low load a proof is checked alone, as soon as it arrives.

use crate::batcher::Batcher;
use crate::error::ApiResult;
use crate::store::{Store, StoreResult};
use ed25519_dalek::VerifyingKey;
use healthlock_common::keys::parse_verifying_key;
use healthlock_common::token::{OpenProof, verify_opens};
use healthlock_common::{ShareId, UserId};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// What an open's proof is checked against, before the share's row is read under the write
/// lock. Neither part ever changes, and shares are never deleted, so both are kept in memory.
#[derive(Clone)]
pub struct ShareKey {
    /// The share's proof key; `None` if the stored one does not parse (no proof holds then).
    pub key: Option<VerifyingKey>,
    /// Whose share: refused proofs go into this patient's log too.
    pub patient: UserId,
}

/// Most share keys kept (about 400 bytes each with the map's slack: 4–5 MB when full); past it
/// the map starts over (a reload costs one read of the row).
const MAX_KEYS: usize = 10_000;

/// Share keys by share id, loaded on first use.
#[derive(Default)]
pub struct ShareKeys(Mutex<HashMap<ShareId, ShareKey>>);

impl ShareKeys {
    /// Share `id`'s key and patient, from memory or else from the store; `None` for an unknown
    /// share (never remembered, so a share created later is found).
    pub fn get(&self, store: &Store, id: &ShareId) -> StoreResult<Option<ShareKey>> {
        // A panic elsewhere while holding the lock cannot leave a wrong key: entries are
        // inserted whole.
        let cached = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(row) = store.share(id)? else {
            return Ok(None);
        };
        let share = ShareKey {
            key: parse_verifying_key(&row.verify_key).ok(),
            patient: row.patient,
        };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_KEYS {
            map.clear();
        }
        map.insert(id.clone(), share.clone());
        Ok(Some(share))
    }
}

/// Most proofs in one batch: past about 32 a larger batch saves little more per signature.
const MAX_BATCH: usize = 64;

/// Checks open proofs on its own thread, all those waiting at once.
pub struct ProofChecker {
    batcher: Batcher<OpenProof, bool>,
    /// A key nobody holds the secret half of: the proof for an unknown share is checked against
    /// it, so that its check costs what a known share's with a wrong proof does.
    decoy: VerifyingKey,
}

impl ProofChecker {
    /// Starts the checking thread; it stops when the checker is dropped.
    pub fn start() -> std::io::Result<Self> {
        let batcher = Batcher::start("proof-checker", MAX_BATCH, verify_opens)?;
        let decoy = ed25519_dalek::SigningKey::from_bytes(&healthlock_common::random_bytes())
            .verifying_key();
        Ok(Self { batcher, decoy })
    }

    /// Whether `signature` proves possession of `share`'s key: the share's key signed the open
    /// message for `origin`, the share and `nonce`. Always false for an unknown share (`None`)
    /// or an unreadable key, after the same work as for a wrong signature.
    pub async fn check(
        &self,
        share: Option<&ShareKey>,
        origin: &str,
        id: &ShareId,
        nonce: &str,
        signature: &[u8],
    ) -> ApiResult<bool> {
        let key = share.and_then(|s| s.key);
        let proof = OpenProof::new(key.unwrap_or(self.decoy), origin, id, nonce, signature);
        Ok(self.batcher.run(proof).await? && key.is_some())
    }
}
