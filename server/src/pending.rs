//! Uploads waiting for their seal.
//!
//! A patient's upload takes two requests: the body, then the seal (the patient's signature over the
//! record and the hash of what they sent; see `healthlock_common::record_seal`). Between the two,
//! the body is a synced temp file held here, in memory. It becomes a record — blob renamed into
//! place, row and audit event committed — only when a valid seal arrives, so an upload whose seal
//! never comes leaves nothing behind: its entry expires, and a restart sweeps `tmp/`.

use crate::blobs::Received;
use healthlock_common::{Category, RecordId, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a stored body waits for its seal. The CLI sends it right after the body.
pub const SEAL_WAIT: Duration = Duration::from_secs(600);

/// Bodies one patient may have waiting at once (each counts against their quota meanwhile).
pub const MAX_PER_OWNER: usize = 16;

/// A stored body and the headers that came with it.
pub struct Pending {
    /// Whose vault it goes to.
    pub owner: UserId,
    /// The record's category.
    pub category: Category,
    /// The record key sealed to the patient.
    pub envelope: Vec<u8>,
    /// Title and file name sealed to the record key.
    pub meta: Vec<u8>,
    /// The body, synced; removed when this is dropped uncommitted.
    pub received: Received,
    expires: Instant,
}

impl Pending {
    /// A body that waits [`SEAL_WAIT`] from now.
    pub fn new(
        owner: UserId,
        category: Category,
        envelope: Vec<u8>,
        meta: Vec<u8>,
        received: Received,
    ) -> Self {
        Self {
            owner,
            category,
            envelope,
            meta,
            received,
            expires: Instant::now() + SEAL_WAIT,
        }
    }

    /// Unix time at which it expires.
    pub fn expires_unix(&self) -> u64 {
        let left = self.expires.saturating_duration_since(Instant::now());
        healthlock_common::time::now() + left.as_secs()
    }
}

/// The waiting bodies, by the record id they will have.
#[derive(Default)]
pub struct PendingUploads {
    map: Mutex<HashMap<RecordId, Pending>>,
}

/// Why a body could not be kept waiting.
#[derive(Debug)]
pub struct TooMany;

impl PendingUploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecordId, Pending>> {
        // A panic elsewhere while holding the lock cannot leave the map inconsistent: every
        // operation is a single insert, remove or retain.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes expired entries, returning them so their files are removed outside the lock.
    fn expire(map: &mut HashMap<RecordId, Pending>) -> Vec<Pending> {
        let now = Instant::now();
        let gone: Vec<RecordId> = map
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        gone.iter().filter_map(|id| map.remove(id)).collect()
    }

    /// Bytes `owner` has waiting, which count against their quota until sealed or expired.
    pub fn bytes(&self, owner: &UserId) -> u64 {
        let mut map = self.lock();
        let expired = Self::expire(&mut map);
        let total = map
            .values()
            .filter(|p| &p.owner == owner)
            .map(|p| p.received.size)
            .sum();
        drop(map);
        drop(expired);
        total
    }

    /// Keeps `pending` under `id`, unless its owner already has [`MAX_PER_OWNER`] waiting.
    pub fn insert(&self, id: RecordId, pending: Pending) -> Result<(), TooMany> {
        let mut map = self.lock();
        let expired = Self::expire(&mut map);
        let waiting = map.values().filter(|p| p.owner == pending.owner).count();
        let result = if waiting >= MAX_PER_OWNER {
            Err(TooMany)
        } else {
            map.insert(id, pending);
            Ok(())
        };
        drop(map);
        drop(expired);
        result
    }

    /// Takes `owner`'s waiting body `id`, if it is there and has not expired.
    pub fn take(&self, owner: &UserId, id: &RecordId) -> Option<Pending> {
        let mut map = self.lock();
        let expired = Self::expire(&mut map);
        let found = match map.get(id) {
            Some(p) if &p.owner == owner => map.remove(id),
            _ => None,
        };
        drop(map);
        drop(expired);
        found
    }
}
