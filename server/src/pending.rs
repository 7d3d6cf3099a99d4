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

/// Bodies one patient may have waiting at once. Their bytes count against the patient's quota
/// meanwhile: a body is kept only if it fits beside the vault and the others waiting.
pub const MAX_PER_OWNER: usize = 16;

/// Drops `v` on a blocking thread: dropping a [`Pending`] removes its file, which for a large one
/// can take a while.
pub fn discard<T: Send + 'static>(v: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(v))),
        Err(_) => drop(v),
    }
}

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
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The owner has [`MAX_PER_OWNER`] waiting.
    TooMany,
    /// It does not fit in the room the owner's quota leaves beside the bodies waiting.
    Full,
}

impl PendingUploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecordId, Pending>> {
        // A panic elsewhere while holding the lock cannot leave the map inconsistent: every
        // operation is a single insert, remove or retain.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the map with expired entries removed; their files are removed afterwards,
    /// outside the lock.
    fn with_live<R>(&self, f: impl FnOnce(&mut HashMap<RecordId, Pending>) -> R) -> R {
        let mut map = self.lock();
        let now = Instant::now();
        let gone: Vec<RecordId> = map
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let expired: Vec<Pending> = gone.iter().filter_map(|id| map.remove(id)).collect();
        let result = f(&mut map);
        drop(map);
        discard(expired);
        result
    }

    /// How many bodies `owner` has in `map`, and their bytes.
    fn tally(map: &HashMap<RecordId, Pending>, owner: &UserId) -> (usize, u64) {
        map.values()
            .filter(|p| &p.owner == owner)
            .fold((0, 0), |(n, b), p| (n + 1, b + p.received.size))
    }

    /// How many bodies `owner` has waiting, and their bytes.
    pub fn waiting(&self, owner: &UserId) -> (usize, u64) {
        self.with_live(|map| Self::tally(map, owner))
    }

    /// Keeps `pending` under `id`, unless its owner already has [`MAX_PER_OWNER`] waiting or it
    /// does not fit with theirs in `room` (the quota less the vault's usage). Checked here,
    /// under the lock, because uploads stream concurrently; a refused body is removed.
    pub fn insert(&self, id: RecordId, pending: Pending, room: u64) -> Result<(), Refused> {
        let refused = self.with_live(|map| {
            let (n, bytes) = Self::tally(map, &pending.owner);
            if n >= MAX_PER_OWNER {
                Some((Refused::TooMany, pending))
            } else if bytes.saturating_add(pending.received.size) > room {
                Some((Refused::Full, pending))
            } else {
                map.insert(id, pending);
                None
            }
        });
        match refused {
            None => Ok(()),
            Some((why, pending)) => {
                discard(pending);
                Err(why)
            }
        }
    }

    /// Takes `owner`'s waiting body `id`, if it is there and has not expired.
    pub fn take(&self, owner: &UserId, id: &RecordId) -> Option<Pending> {
        self.with_live(|map| match map.get(id) {
            Some(p) if &p.owner == owner => map.remove(id),
            _ => None,
        })
    }
}
