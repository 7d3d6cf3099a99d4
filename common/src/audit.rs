//! The audit log's tamper evidence.
//!
//! Each account's log is a hash chain: event `n` is stored as its canonical JSON bytes `E_n`
//! (an [`Entry`]) and `h_n = SHA-256("healthlock/v1/audit-link\n" ‖ h_{n-1} ‖ E_n)`, with
//! `h_0` = 32 zero bytes. The server signs the head as a checkpoint with its Ed25519 key:
//!
//! ```text
//! healthlock/v1/audit-checkpoint
//! <origin>
//! <log: the account id>
//! <size: number of events>
//! <head: h_size in hex>
//! ```
//!
//! Checkpoints made together (the answers to opens committed in one batch) share one signature:
//! the server signs the root of a Merkle tree over their texts, and each checkpoint carries its
//! path to that root ([`BatchPath`]). Leaves are `SHA-256(0x00 ‖ text)`, inner nodes
//! `SHA-256(0x01 ‖ left ‖ right)`, the tree is padded to a power of two with 32 zero bytes, and
//! the signed message is
//!
//! ```text
//! healthlock/v1/audit-checkpoint-batch
//! <root in hex>
//! ```
//!
//! A client that pinned the server's key and remembers the last head it verified accepts a new
//! checkpoint only if the new events link from that head to the new one ([`verify_extension`]),
//! so an altered, removed or reordered event, a rolled-back log and a forked history all fail.
//! Verifiers hash the entry bytes exactly as received: no re-serialization is involved.

use crate::encoding::{hex, serde_b64, unhex};
use crate::{CryptoError, RecordId, Role, ShareId, UserId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The head of an empty log.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// What one event records. Ids only — never titles or file names — so deleting a record keeps
/// the chain verifiable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When (Unix seconds).
    pub time: u64,
    /// Who acted (absent when unknown, e.g. a failed login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// The actor's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_role: Option<Role>,
    /// What was done, e.g. `share.open`.
    pub action: String,
    /// The share involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<ShareId>,
    /// The record involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordId>,
    /// Whether it was allowed.
    pub allowed: bool,
    /// Why it was refused (an error code name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl Entry {
    /// The canonical bytes that are hashed and stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entries serialize")
    }
}

/// `h_n` from `h_{n-1}` and the entry's bytes.
pub fn link(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"healthlock/v1/audit-link\n");
    h.update(prev);
    h.update(entry);
    h.finalize().into()
}

/// Parses a 32-byte hash from hex.
pub fn parse_hash(s: &str) -> Result<[u8; 32], CryptoError> {
    unhex(s, "hash")?
        .try_into()
        .map_err(|_| CryptoError::Encoding("hash"))
}

/// A signed statement of a log's size and head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The server's origin.
    pub origin: String,
    /// Whose log.
    pub log: UserId,
    /// How many events it holds.
    pub size: u64,
    /// `h_size`, hex.
    pub head: String,
    /// Ed25519 signature by the server over [`Checkpoint::text`], or, with `batch`, over the
    /// root of the batch it was signed in.
    #[serde(with = "serde_b64")]
    pub signature: Vec<u8>,
    /// Where this checkpoint's text sits in a batch signed once; absent when it was signed alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPath>,
}

/// A checkpoint's place in a batch signed once: from its leaf, the sibling hashes lead to the
/// signed root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPath {
    /// The leaf's position, counted from 0 at the left.
    pub index: u32,
    /// The sibling of each node on the way up, from the leaf's, hex.
    pub siblings: Vec<String>,
}

/// Deepest batch path accepted: 2^20 checkpoints under one signature is far more than any batch.
const MAX_BATCH_DEPTH: usize = 20;

fn leaf_hash(text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(text.as_bytes());
    h.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn batch_message(root: &[u8; 32]) -> String {
    format!("healthlock/v1/audit-checkpoint-batch\n{}\n", hex(root))
}

impl BatchPath {
    /// The root this path leads to from `leaf`, if it is well-formed.
    fn root(&self, leaf: [u8; 32]) -> Result<[u8; 32], CryptoError> {
        let bad = || CryptoError::Encoding("checkpoint batch path");
        if self.siblings.len() > MAX_BATCH_DEPTH
            || u64::from(self.index) >> self.siblings.len() != 0
        {
            return Err(bad());
        }
        self.siblings
            .iter()
            .enumerate()
            .try_fold(leaf, |node, (level, sibling)| {
                let sibling = parse_hash(sibling).map_err(|_| bad())?;
                Ok(if self.index >> level & 1 == 0 {
                    node_hash(&node, &sibling)
                } else {
                    node_hash(&sibling, &node)
                })
            })
    }
}

impl Checkpoint {
    /// The signed text.
    pub fn text(origin: &str, log: &UserId, size: u64, head: &str) -> String {
        format!("healthlock/v1/audit-checkpoint\n{origin}\n{log}\n{size}\n{head}\n")
    }

    /// Signs a checkpoint.
    pub fn sign(key: &SigningKey, origin: &str, log: &UserId, size: u64, head: &[u8; 32]) -> Self {
        let head = hex(head);
        let signature = key
            .sign(Self::text(origin, log, size, &head).as_bytes())
            .to_bytes()
            .to_vec();
        Self {
            origin: origin.to_owned(),
            log: log.clone(),
            size,
            head,
            signature,
            batch: None,
        }
    }

    /// Signs checkpoints of `(log, size, head)` with one signature over their Merkle root, each
    /// with its path; a single one is signed alone ([`Checkpoint::sign`]).
    pub fn sign_batch(
        key: &SigningKey,
        origin: &str,
        heads: &[(UserId, u64, [u8; 32])],
    ) -> Vec<Self> {
        assert!(
            heads.len() <= 1 << MAX_BATCH_DEPTH,
            "a batch too large for its paths to verify"
        );
        match heads {
            [] => return Vec::new(),
            [(log, size, head)] => return vec![Self::sign(key, origin, log, *size, head)],
            _ => {}
        }
        let heads: Vec<(&UserId, u64, String)> =
            heads.iter().map(|(l, s, h)| (l, *s, hex(h))).collect();
        let mut level: Vec<[u8; 32]> = heads
            .iter()
            .map(|(log, size, head)| leaf_hash(&Self::text(origin, log, *size, head)))
            .collect();
        level.resize(level.len().next_power_of_two(), [0; 32]);
        let mut siblings: Vec<Vec<String>> = vec![Vec::new(); heads.len()];
        while level.len() > 1 {
            for (i, path) in siblings.iter_mut().enumerate() {
                path.push(hex(&level[(i >> path.len()) ^ 1]));
            }
            level = level
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
        }
        let signature = key.sign(batch_message(&level[0]).as_bytes()).to_bytes();
        heads
            .into_iter()
            .zip(siblings)
            .enumerate()
            .map(|(index, ((log, size, head), siblings))| Self {
                origin: origin.to_owned(),
                log: log.clone(),
                size,
                head,
                signature: signature.to_vec(),
                batch: Some(BatchPath {
                    index: index as u32,
                    siblings,
                }),
            })
            .collect()
    }

    /// Checks the signature with the pinned server key: over this checkpoint's text, or over
    /// the root its batch path leads to from that text.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CryptoError> {
        let sig = Signature::from_slice(&self.signature).map_err(|_| CryptoError::BadSignature)?;
        let text = Self::text(&self.origin, &self.log, self.size, &self.head);
        let message = match &self.batch {
            None => text,
            Some(path) => batch_message(&path.root(leaf_hash(&text))?),
        };
        key.verify_strict(message.as_bytes(), &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// One event as the server sends it: the entry's exact bytes and the chain value after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkedEntry {
    /// The canonical JSON of an [`Entry`], as hashed.
    pub entry: String,
    /// `h_seq`, hex.
    pub hash: String,
}

impl LinkedEntry {
    /// Parses the entry.
    pub fn parse(&self) -> Result<Entry, CryptoError> {
        serde_json::from_str(&self.entry).map_err(|_| CryptoError::Encoding("audit entry"))
    }
}

/// What a verifier remembers: the size and head it last accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Events verified.
    pub size: u64,
    /// Their head.
    pub head: [u8; 32],
}

impl Default for Verified {
    fn default() -> Self {
        Self {
            size: 0,
            head: GENESIS,
        }
    }
}

/// Why a log does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The checkpoint's signature is not the pinned server's.
    #[error("the checkpoint is not signed by this server's pinned key")]
    BadSignature,
    /// The checkpoint is for another server or log.
    #[error("the checkpoint is for another server or account")]
    WrongLog,
    /// The log is shorter than one already verified.
    #[error(
        "the log was rolled back: {had} events were verified before, the server now shows {now}"
    )]
    RolledBack {
        /// Size verified before.
        had: u64,
        /// Size now.
        now: u64,
    },
    /// An event is missing or out of order.
    #[error("event {got} came where event {expected} belongs: events were removed or reordered")]
    Gap {
        /// The expected seq.
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// An event's bytes do not produce its hash.
    #[error("event {seq} was altered: it does not hash to its chain value")]
    Altered {
        /// Which.
        seq: u64,
    },
    /// The new events do not extend the history verified before.
    #[error(
        "the log forked: it no longer extends the history this device verified (at event {at})"
    )]
    Forked {
        /// The verified size where the histories part.
        at: u64,
    },
    /// The events do not add up to the signed checkpoint.
    #[error("the events do not match the signed checkpoint")]
    Mismatch,
    /// An entry is not readable.
    #[error("an audit entry is malformed")]
    Malformed,
}

/// Checks, event by event, that a log extends what was verified before; memory stays constant
/// however long the log is.
pub struct Verifier {
    from: Verified,
    state: Verified,
}

impl Verifier {
    /// Starts from what was verified before ([`Verified::default`] the first time).
    pub fn new(from: Verified) -> Self {
        Self { from, state: from }
    }

    /// Where verification stands.
    pub fn state(&self) -> Verified {
        self.state
    }

    /// Checks the next event (they must come in order, starting after `from.size`).
    pub fn feed(&mut self, e: &LinkedEntry) -> Result<Entry, AuditError> {
        let entry = e.parse().map_err(|_| AuditError::Malformed)?;
        if entry.seq != self.state.size + 1 {
            return Err(AuditError::Gap {
                expected: self.state.size + 1,
                got: entry.seq,
            });
        }
        let claimed = parse_hash(&e.hash).map_err(|_| AuditError::Malformed)?;
        let h = link(&self.state.head, e.entry.as_bytes());
        if h != claimed {
            // The first new event not linking to the remembered head means another history.
            return Err(if self.state == self.from && self.from.size > 0 {
                AuditError::Forked { at: self.from.size }
            } else {
                AuditError::Altered { seq: entry.seq }
            });
        }
        self.state = Verified {
            size: entry.seq,
            head: h,
        };
        Ok(entry)
    }

    /// Checks that the events fed add up to `checkpoint`, signed by `key` for `origin` and `log`.
    pub fn finish(
        self,
        checkpoint: &Checkpoint,
        key: &VerifyingKey,
        origin: &str,
        log: &UserId,
    ) -> Result<Verified, AuditError> {
        checkpoint
            .verify(key)
            .map_err(|_| AuditError::BadSignature)?;
        if checkpoint.origin != origin || &checkpoint.log != log {
            return Err(AuditError::WrongLog);
        }
        if checkpoint.size < self.from.size {
            return Err(AuditError::RolledBack {
                had: self.from.size,
                now: checkpoint.size,
            });
        }
        let head = parse_hash(&checkpoint.head).map_err(|_| AuditError::Malformed)?;
        if self.state.size != checkpoint.size {
            return Err(AuditError::Mismatch);
        }
        if self.state.head != head {
            return Err(if self.state == self.from && self.from.size > 0 {
                AuditError::Forked { at: self.from.size }
            } else {
                AuditError::Mismatch
            });
        }
        Ok(self.state)
    }
}

/// Checks that `events` (those after `from.size`, in order) extend `from` to `checkpoint`,
/// signed by `key` for `origin` and `log`. Returns the new verified state.
pub fn verify_extension(
    from: Verified,
    events: &[LinkedEntry],
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
    origin: &str,
    log: &UserId,
) -> Result<Verified, AuditError> {
    let mut v = Verifier::new(from);
    for e in events {
        v.feed(e)?;
    }
    v.finish(checkpoint, key, origin, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> (Vec<LinkedEntry>, [u8; 32]) {
        let mut head = GENESIS;
        let mut out = Vec::new();
        for seq in 1..=n {
            let entry = Entry {
                seq,
                time: 1_000 + seq,
                actor: None,
                actor_role: Some(Role::Doctor),
                action: "share.open".into(),
                share: None,
                record: None,
                allowed: seq % 2 == 0,
                reason: None,
                client: None,
            }
            .to_bytes();
            head = link(&head, &entry);
            out.push(LinkedEntry {
                entry: String::from_utf8(entry).unwrap(),
                hash: hex(&head),
            });
        }
        (out, head)
    }

    struct Fixture {
        key: SigningKey,
        log: UserId,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                key: SigningKey::from_bytes(&[9u8; 32]),
                log: UserId::from_bytes(&[1u8; 16]),
            }
        }
        fn cp(&self, size: u64, head: &[u8; 32]) -> Checkpoint {
            Checkpoint::sign(&self.key, "http://h", &self.log, size, head)
        }
        fn verify(
            &self,
            from: Verified,
            ev: &[LinkedEntry],
            cp: &Checkpoint,
        ) -> Result<Verified, AuditError> {
            verify_extension(
                from,
                ev,
                cp,
                &self.key.verifying_key(),
                "http://h",
                &self.log,
            )
        }
    }

    /// Every checkpoint of a batch verifies on its own, with its path; changing anything it
    /// states, its place, a sibling, or dropping the path makes it fail.
    #[test]
    fn batched_checkpoints_verify_each_and_refuse_every_change() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let origin = "https://hl.example";
        for n in [2usize, 3, 5, 8, 13] {
            let heads: Vec<(UserId, u64, [u8; 32])> = (0..n)
                .map(|i| (UserId::random(), i as u64 + 1, [i as u8; 32]))
                .collect();
            let signed = Checkpoint::sign_batch(&key, origin, &heads);
            assert_eq!(signed.len(), n);
            for (cp, (log, size, head)) in signed.iter().zip(&heads) {
                assert_eq!((&cp.log, cp.size, &cp.head), (log, *size, &hex(head)));
                assert!(cp.verify(&public).is_ok(), "n = {n}: {cp:?}");
                assert_eq!(cp.signature, signed[0].signature, "one signature per batch");
                let refused = |change: &dyn Fn(&mut Checkpoint)| {
                    let mut c = cp.clone();
                    change(&mut c);
                    c.verify(&public).is_err()
                };
                assert!(refused(&|c| c.size += 1));
                assert!(refused(&|c| c.head = hex(&[0xee; 32])));
                assert!(refused(&|c| c.log = UserId::random()));
                assert!(refused(&|c| c.origin = "https://evil.example".into()));
                assert!(refused(&|c| c.batch = None));
                assert!(refused(&|c| {
                    let b = c.batch.as_mut().unwrap();
                    b.index ^= 1;
                }));
                assert!(refused(&|c| {
                    let b = c.batch.as_mut().unwrap();
                    b.siblings[0] = hex(&[0x55; 32]);
                }));
                assert!(refused(&|c| {
                    let b = c.batch.as_mut().unwrap();
                    b.index += 1 << b.siblings.len();
                }));
                assert!(refused(&|c| {
                    let b = c.batch.as_mut().unwrap();
                    b.siblings.push(hex(&[0; 32]));
                }));
            }
            // A path cannot lift one checkpoint's signature onto another's text.
            let mut other = signed[1].clone();
            other.batch = signed[0].batch.clone();
            assert!(other.verify(&public).is_err());
        }
        // Alone, a checkpoint is signed as before, with no path.
        let one = Checkpoint::sign_batch(&key, origin, &[(UserId::random(), 1, [1; 32])]);
        assert_eq!(one.len(), 1);
        assert!(one[0].batch.is_none() && one[0].verify(&public).is_ok());
        assert!(Checkpoint::sign_batch(&key, origin, &[]).is_empty());
    }

    /// The batch construction pinned by an independent computation (Python hashlib and
    /// `cryptography`, in protocol.md §8.3): three checkpoints, a padding leaf, one signature.
    #[test]
    fn batched_checkpoints_known_answer() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let heads: Vec<(UserId, u64, [u8; 32])> = ["1", "2", "3"]
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.repeat(32).parse().unwrap(),
                    i as u64 + 1,
                    [i as u8 + 1; 32],
                )
            })
            .collect();
        let signed = Checkpoint::sign_batch(&key, "https://hl.example", &heads);
        let paths: Vec<(u32, Vec<&str>)> = signed
            .iter()
            .map(|c| {
                let b = c.batch.as_ref().unwrap();
                (b.index, b.siblings.iter().map(String::as_str).collect())
            })
            .collect();
        let (l0, l1, l3) = (
            "eb9989ff364bbf65706062524cc33791a0f899070e5b78ec787dd5adfca44eb8",
            "a2184887b81724cff0de7e0d5de0525bc06c4c51593d4ad6c69fb8a79cb2dcb5",
            "0000000000000000000000000000000000000000000000000000000000000000",
        );
        let (n01, n23) = (
            "ab203000267f3d88d4be83c324eca1c242d710f6294b31c570bf381f98ac8138",
            "16bd2ec165237d43c20294b9f8827ee95d06aaf57ba6fcb9bf96668408b3fe55",
        );
        assert_eq!(
            paths,
            vec![(0, vec![l1, n23]), (1, vec![l0, n23]), (2, vec![l3, n01])]
        );
        // Over "healthlock/v1/audit-checkpoint-batch\n" + the root be1786bc…d39f + "\n".
        assert_eq!(
            hex(&signed[0].signature),
            "8ac24b30e589c3aba40dff38ebca94b69ae9fbaab1ac2560dfad94cedbb7a7cf\
             51846871d5295e19bdb7134fd52e4bce476c236b36f5542b4fd6a9e9d0b2ce07"
        );
    }

    #[test]
    fn honest_logs_verify_in_steps() {
        let f = Fixture::new();
        let (events, head) = log_of(5);
        let (_, head3) = log_of(3);
        let mid = f
            .verify(Verified::default(), &events[..3], &f.cp(3, &head3))
            .unwrap();
        let end = f.verify(mid, &events[3..], &f.cp(5, &head)).unwrap();
        assert_eq!(end, Verified { size: 5, head });
        assert_eq!(f.verify(end, &[], &f.cp(5, &head)).unwrap(), end);
    }

    #[test]
    fn every_tamper_is_named() {
        let f = Fixture::new();
        let (events, head) = log_of(4);
        let cp = f.cp(4, &head);

        let mut altered = events.clone();
        altered[1].entry = altered[1]
            .entry
            .replace("\"allowed\":true", "\"allowed\":false");
        assert_eq!(
            f.verify(Verified::default(), &altered, &cp),
            Err(AuditError::Altered { seq: 2 })
        );

        let mut removed = events.clone();
        removed.remove(1);
        assert_eq!(
            f.verify(Verified::default(), &removed, &cp),
            Err(AuditError::Gap {
                expected: 2,
                got: 3
            })
        );

        let mut reordered = events.clone();
        reordered.swap(1, 2);
        assert!(matches!(
            f.verify(Verified::default(), &reordered, &cp),
            Err(AuditError::Gap { .. })
        ));

        let verified = Verified { size: 4, head };
        let (_, head2) = log_of(2);
        assert_eq!(
            f.verify(verified, &[], &f.cp(2, &head2)),
            Err(AuditError::RolledBack { had: 4, now: 2 })
        );

        // Another history of the same length, or longer, is a fork.
        let other = Verified {
            size: 4,
            head: [7u8; 32],
        };
        assert_eq!(f.verify(other, &[], &cp), Err(AuditError::Forked { at: 4 }));
        let (longer, head6) = log_of(6);
        assert_eq!(
            f.verify(other, &longer[4..], &f.cp(6, &head6)),
            Err(AuditError::Forked { at: 4 })
        );

        let forged = Checkpoint::sign(
            &SigningKey::from_bytes(&[8u8; 32]),
            "http://h",
            &f.log,
            4,
            &head,
        );
        assert_eq!(
            f.verify(Verified::default(), &events, &forged),
            Err(AuditError::BadSignature)
        );
        assert_eq!(
            f.verify(Verified::default(), &events[..3], &cp),
            Err(AuditError::Mismatch)
        );
    }
}
