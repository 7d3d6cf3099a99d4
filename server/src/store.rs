//! The embedded store (redb): accounts, sessions, records, shares and the audit log.
//!
//! Every action and its audit event commit in one write transaction ([`Store::write`]), and redb
//! fsyncs each commit, so what the server acknowledged survives a crash and no data is released
//! before its audit event is durable. Blobs live beside it in files (see `blobs`).
//! The design card names sled; docs/decisions/0001-redb-over-sled.md says why redb holds the data instead.

use healthlock_common::api::{ErrorCode, ShareRecordKeys, ShareStatus};
use healthlock_common::audit::{self, Entry, LinkedEntry};
use healthlock_common::descriptor::SignedDescriptor;
use healthlock_common::encoding::serde_b64;
use healthlock_common::kdf::KdfParams;
use healthlock_common::{Category, RecordId, Role, ShareId, UserId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

type JsonTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// username → [`UserRow`]
const USERS: JsonTable = TableDefinition::new("users");
/// user id → username
const USER_IDS: TableDefinition<&str, &str> = TableDefinition::new("user_ids");
/// SHA-256(session token) → [`SessionRow`]
const SESSIONS: JsonTable = TableDefinition::new("sessions");
/// "owner/record" → [`RecordRow`]
const RECORDS: JsonTable = TableDefinition::new("records");
/// share id → [`ShareRow`]
const SHARES: JsonTable = TableDefinition::new("shares");
/// "patient/share" → empty: the patient's shares, in key order
const PATIENT_SHARES: JsonTable = TableDefinition::new("patient_shares");
/// (owner, seq) → [`LinkedEntry`]
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// owner → [`AuditHead`]
const AUDIT_HEADS: JsonTable = TableDefinition::new("audit_heads");
/// owner → highest audit seq shown as a notification
const NOTIFY_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("notify_cursors");
/// SHA-256(invite code) → time used
const INVITES_USED: TableDefinition<&str, u64> = TableDefinition::new("invites_used");
/// owner → bytes of ciphertext in the vault (for the quota)
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
/// owner → [`WebhookRow`]
const WEBHOOKS: JsonTable = TableDefinition::new("webhooks");
/// (owner, n) → [`Delivery`]: the delivery log the owner can read
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("webhook_deliveries");
/// server-wide values (e.g. the secret behind made-up prelogin salts)
const META: JsonTable = TableDefinition::new("meta");

/// Why the store failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing was committed.
    #[error("disk full")]
    DiskFull,
    /// Anything else; the text goes to the log only.
    #[error("store: {0}")]
    Db(String),
}

/// Whether an I/O error means "no space left on device".
pub fn io_is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        let full = match &e {
            redb::Error::Io(io) => io_is_disk_full(io),
            other => other.to_string().contains("No space left"),
        };
        if full {
            StoreError::DiskFull
        } else {
            StoreError::Db(e.to_string())
        }
    }
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Db(format!("corrupt row: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("rows serialize")
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> StoreResult<Option<T>> {
    table.get(key)?.map(|v| decode(v.value())).transpose()
}

/// An account.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRow {
    /// Who it is and the keys it is known by: stored inline, so that [`Account`] decodes from
    /// the same row alone.
    #[serde(flatten)]
    pub account: Account,
    /// The client's Argon2id salt.
    #[serde(with = "serde_b64")]
    pub salt: Vec<u8>,
    /// The client's Argon2id parameters.
    pub kdf: KdfParams,
    /// PHC string of Argon2id(auth value).
    pub auth_phc: String,
    /// The private keys, encrypted on the client.
    #[serde(with = "serde_b64")]
    pub wrapped_keys: Vec<u8>,
}

/// The public part of an account: who it is and the keys it is known by. Authenticated requests
/// and lookups by id decode only this from a [`UserRow`]'s row, so the credentials (salt,
/// password hash, wrapped keys) stay undecoded and out of their memory.
#[derive(Clone, Serialize, Deserialize)]
pub struct Account {
    /// Its id.
    pub id: UserId,
    /// Its name (lowercase).
    pub username: String,
    /// Its role.
    pub role: Role,
    /// Creation time.
    pub created: u64,
    /// age recipient.
    pub age_recipient: String,
    /// Ed25519 public key, hex.
    pub ed25519_public: String,
}

/// A login session, stored under the hash of its token.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRow {
    /// Whose.
    pub user: UserId,
    /// Login time.
    pub created: u64,
    /// Last request.
    pub last_seen: u64,
}

/// A record's metadata; its body is the blob file named by its id.
#[derive(Clone, Serialize, Deserialize)]
pub struct RecordRow {
    /// The record.
    pub id: RecordId,
    /// The patient whose vault holds it.
    pub owner: UserId,
    /// Its category.
    pub category: Category,
    /// Ciphertext size.
    pub size: u64,
    /// The ciphertext's hash ([`healthlock_common::body_hash`]): the patient's word in `seal`, or
    /// for an attachment the server's own. Rows stored before BLAKE3 name it `sha256`.
    #[serde(alias = "sha256")]
    pub hash: String,
    /// The patient's seal (`healthlock_common::record_seal`), hex; `None` for an attachment
    /// and for records stored before seals existed.
    #[serde(default)]
    pub seal: Option<String>,
    /// Upload time.
    pub created: u64,
    /// Record key sealed to the owner.
    #[serde(with = "serde_b64")]
    pub envelope: Vec<u8>,
    /// Title and file name sealed to the record key.
    #[serde(with = "serde_b64")]
    pub meta: Vec<u8>,
    /// The doctor who attached it.
    #[serde(default)]
    pub added_by: Option<UserId>,
}

/// A share.
#[derive(Clone, Serialize, Deserialize)]
pub struct ShareRow {
    /// The share.
    pub id: ShareId,
    /// Whose records.
    pub patient: UserId,
    /// For which role.
    pub role: Role,
    /// Ed25519 key that checks open proofs, hex.
    pub verify_key: String,
    /// Creation time.
    pub created: u64,
    /// Expiry.
    pub expires: u64,
    /// Open limit.
    pub max_uses: Option<u32>,
    /// Successful opens.
    pub uses: u32,
    /// Revocation time.
    pub revoked: Option<u64>,
    /// PHC string of Argon2id(passcode proof).
    pub passcode_phc: Option<String>,
    /// Wrong passcodes so far (lifetime).
    pub passcode_failures: u32,
    /// As the patient signed it.
    pub descriptor: SignedDescriptor,
    /// Per record: category (from the descriptor), envelope and sealed metadata.
    pub records: Vec<ShareRecord>,
}

/// A record in a share.
#[derive(Clone, Serialize, Deserialize)]
pub struct ShareRecord {
    /// Category, to apply the role policy.
    pub category: Category,
    /// Key and metadata for the token holder.
    pub keys: ShareRecordKeys,
}

/// Wrong passcodes that lock a share for good.
pub const PASSCODE_LOCK_AT: u32 = 5;

impl ShareRow {
    /// The share's state at `now`. Revocation wins over expiry, expiry over exhaustion.
    pub fn status(&self, now: u64) -> ShareStatus {
        if self.revoked.is_some() {
            ShareStatus::Revoked
        } else if now >= self.expires {
            ShareStatus::Expired
        } else if self.passcode_failures >= PASSCODE_LOCK_AT {
            ShareStatus::Locked
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            ShareStatus::UsedUp
        } else {
            ShareStatus::Active
        }
    }
}

/// An account's webhook and where its delivery stands. Kept in the store, so retries carry on
/// across restarts.
#[derive(Clone, Serialize, Deserialize)]
pub struct WebhookRow {
    /// Where events are POSTed.
    pub url: String,
    /// When it was set.
    pub created: u64,
    /// The last audit seq delivered (or skipped as the owner's own action).
    pub cursor: u64,
    /// Failed attempts at the next event.
    pub attempts: u32,
    /// Not before this time (Unix milliseconds).
    pub next_attempt_ms: u64,
    /// Deliveries logged so far.
    pub logged: u64,
}

/// One delivery attempt, as the owner reads it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// When (Unix seconds).
    pub time: u64,
    /// The audit event.
    pub seq: u64,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// Whether it counts as delivered (2xx).
    pub ok: bool,
    /// What went wrong.
    pub error: Option<String>,
    /// Which attempt at this event.
    pub attempt: u32,
}

/// The newest event of an owner's audit chain.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct AuditHead {
    /// Events in the log.
    pub seq: u64,
    /// The chain value after the last one, hex (empty for an empty log).
    pub hash: String,
    /// The last event's time.
    #[serde(default)]
    pub time: u64,
}

impl AuditHead {
    /// The chain value as bytes ([`audit::GENESIS`] for an empty log).
    pub fn hash(&self) -> StoreResult<[u8; 32]> {
        if self.seq == 0 {
            return Ok(audit::GENESIS);
        }
        audit::parse_hash(&self.hash).map_err(|_| StoreError::Db("corrupt audit head".into()))
    }
}

/// An audit event about to be appended.
pub struct NewEvent {
    /// Who acted, and as what.
    pub actor: Option<(UserId, Role)>,
    /// What, e.g. `share.open`.
    pub action: &'static str,
    /// Which share.
    pub share: Option<ShareId>,
    /// Which record.
    pub record: Option<RecordId>,
    /// Refusal code, or `None` if allowed.
    pub refused: Option<ErrorCode>,
    /// The client's address.
    pub client: Option<String>,
}

/// A write transaction with typed helpers. Committed by [`Store::write`] if the closure returns `Ok`.
pub struct Tx {
    txn: WriteTransaction,
    /// The transaction's clock.
    pub now: u64,
}

impl Tx {
    fn get<T: DeserializeOwned>(&self, table: JsonTable, key: &str) -> StoreResult<Option<T>> {
        get_json(&self.txn.open_table(table)?, key)
    }

    fn put<T: Serialize>(&self, table: JsonTable, key: &str, value: &T) -> StoreResult<()> {
        self.txn
            .open_table(table)?
            .insert(key, encode(value).as_slice())?;
        Ok(())
    }

    fn remove(&self, table: JsonTable, key: &str) -> StoreResult<bool> {
        Ok(self.txn.open_table(table)?.remove(key)?.is_some())
    }

    /// The user with this (lowercase) name.
    pub fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRow>> {
        self.get(USERS, username)
    }

    /// Creates an account; `false` if the name is taken.
    pub fn insert_user(&self, user: &UserRow) -> StoreResult<bool> {
        if self.user_by_name(&user.account.username)?.is_some() {
            return Ok(false);
        }
        self.put(USERS, &user.account.username, user)?;
        self.txn
            .open_table(USER_IDS)?
            .insert(user.account.id.as_str(), user.account.username.as_str())?;
        Ok(true)
    }

    /// Marks an invite used; `false` if it already was.
    pub fn use_invite(&self, code_hash: &str) -> StoreResult<bool> {
        let mut t = self.txn.open_table(INVITES_USED)?;
        if t.get(code_hash)?.is_some() {
            return Ok(false);
        }
        t.insert(code_hash, self.now)?;
        Ok(true)
    }

    /// Stores a session under the hash of its token.
    pub fn put_session(&self, token_hash: &str, row: &SessionRow) -> StoreResult<()> {
        self.put(SESSIONS, token_hash, row)
    }

    /// Moves a session's idle clock to now, if the session still exists (a logout in between
    /// must not bring it back).
    pub fn touch_session(&self, token_hash: &str) -> StoreResult<()> {
        let Some(row) = self.get::<SessionRow>(SESSIONS, token_hash)? else {
            return Ok(());
        };
        self.put_session(
            token_hash,
            &SessionRow {
                last_seen: self.now,
                ..row
            },
        )
    }

    /// Ends a session.
    pub fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        self.remove(SESSIONS, token_hash)
    }

    /// Stores a record's metadata (its blob must already be durable).
    pub fn put_record(&self, row: &RecordRow) -> StoreResult<()> {
        if self.record(&row.owner, &row.id)?.is_none() {
            self.add_usage(&row.owner, row.size as i128)?;
        }
        self.put(RECORDS, &record_key(&row.owner, &row.id), row)
    }

    /// Bytes in `owner`'s vault.
    pub fn usage(&self, owner: &UserId) -> StoreResult<u64> {
        Ok(self
            .txn
            .open_table(USAGE)?
            .get(owner.as_str())?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn add_usage(&self, owner: &UserId, delta: i128) -> StoreResult<()> {
        let now = self.usage(owner)? as i128;
        let new = (now + delta).clamp(0, u64::MAX as i128) as u64;
        self.txn.open_table(USAGE)?.insert(owner.as_str(), new)?;
        Ok(())
    }

    /// A record of `owner`.
    pub fn record(&self, owner: &UserId, id: &RecordId) -> StoreResult<Option<RecordRow>> {
        self.get(RECORDS, &record_key(owner, id))
    }

    /// Whether `owner` has this record, without decoding it.
    pub fn has_record(&self, owner: &UserId, id: &RecordId) -> StoreResult<bool> {
        let t = self.txn.open_table(RECORDS)?;
        Ok(t.get(record_key(owner, id).as_str())?.is_some())
    }

    /// Deletes a record's metadata; `false` if there was none.
    pub fn delete_record(&self, owner: &UserId, id: &RecordId) -> StoreResult<bool> {
        match self.record(owner, id)? {
            Some(row) => {
                self.add_usage(owner, -(row.size as i128))?;
                self.remove(RECORDS, &record_key(owner, id))
            }
            None => Ok(false),
        }
    }

    /// A share.
    pub fn share(&self, id: &ShareId) -> StoreResult<Option<ShareRow>> {
        self.get(SHARES, id.as_str())
    }

    /// Creates or updates a share.
    pub fn put_share(&self, row: &ShareRow) -> StoreResult<()> {
        let created = self
            .txn
            .open_table(SHARES)?
            .insert(row.id.as_str(), encode(row).as_slice())?
            .is_none();
        // Only a new share needs its index entry: rewriting it on every open would dirty one
        // more page per commit for nothing.
        if created {
            self.put(PATIENT_SHARES, &format!("{}/{}", row.patient, row.id), &())?;
        }
        Ok(())
    }

    /// The owner's webhook.
    pub fn webhook(&self, owner: &UserId) -> StoreResult<Option<WebhookRow>> {
        self.get(WEBHOOKS, owner.as_str())
    }

    /// Sets or updates the owner's webhook.
    pub fn put_webhook(&self, owner: &UserId, row: &WebhookRow) -> StoreResult<()> {
        self.put(WEBHOOKS, owner.as_str(), row)
    }

    /// Removes the owner's webhook.
    pub fn delete_webhook(&self, owner: &UserId) -> StoreResult<bool> {
        self.remove(WEBHOOKS, owner.as_str())
    }

    /// Appends to the owner's delivery log (the row's `logged` counter numbers it).
    pub fn log_delivery(&self, owner: &UserId, n: u64, d: &Delivery) -> StoreResult<()> {
        self.txn
            .open_table(DELIVERIES)?
            .insert((owner.as_str(), n), encode(d).as_slice())?;
        Ok(())
    }

    /// Removes every copy of a record's key and title from `patient`'s shares (on delete).
    pub fn forget_record_in_shares(&self, patient: &UserId, id: &RecordId) -> StoreResult<()> {
        let (lo, hi) = (format!("{patient}/"), format!("{patient}0"));
        let ids: Vec<String> = {
            let index = self.txn.open_table(PATIENT_SHARES)?;
            let mut ids = Vec::new();
            for item in index.range(lo.as_str()..hi.as_str())? {
                let key = item?.0.value().to_owned();
                ids.push(key.rsplit('/').next().unwrap_or_default().to_owned());
            }
            ids
        };
        for sid in ids {
            let Some(mut row) = self.get::<ShareRow>(SHARES, &sid)? else {
                continue;
            };
            let mut changed = false;
            for r in row.records.iter_mut().filter(|r| &r.keys.id == id) {
                changed |= !r.keys.envelope.is_empty();
                r.keys.envelope.clear();
                r.keys.meta.clear();
            }
            if changed {
                self.put(SHARES, &sid, &row)?;
            }
        }
        Ok(())
    }

    /// Sets the highest audit seq shown as a notification.
    pub fn set_notify_cursor(&self, owner: &UserId, seq: u64) -> StoreResult<()> {
        let mut t = self.txn.open_table(NOTIFY_CURSORS)?;
        let old = t.get(owner.as_str())?.map(|v| v.value()).unwrap_or(0);
        t.insert(owner.as_str(), seq.max(old))?;
        Ok(())
    }

    /// Appends an event to `owner`'s hash-chained log, in this transaction.
    pub fn append_audit(&self, owner: &UserId, ev: NewEvent) -> StoreResult<Appended> {
        let head: AuditHead = self.get(AUDIT_HEADS, owner.as_str())?.unwrap_or_default();
        let prev = head.hash()?;
        let entry = Entry {
            seq: head.seq + 1,
            // Never earlier than the previous event, even if the system clock steps back:
            // `audit --since` relies on times that never decrease.
            time: self.now.max(head.time),
            actor: ev.actor.as_ref().map(|(id, _)| id.clone()),
            actor_role: ev.actor.map(|(_, r)| r),
            action: ev.action.to_owned(),
            share: ev.share,
            record: ev.record,
            allowed: ev.refused.is_none(),
            reason: ev.refused.map(|c| c.as_str().to_owned()),
            client: ev.client,
        };
        let bytes = entry.to_bytes();
        let hash = audit::link(&prev, &bytes);
        let linked = LinkedEntry {
            entry: String::from_utf8(bytes).expect("JSON is UTF-8"),
            hash: healthlock_common::encoding::hex(&hash),
        };
        self.txn
            .open_table(AUDIT)?
            .insert((owner.as_str(), entry.seq), encode(&linked).as_slice())?;
        self.put(
            AUDIT_HEADS,
            owner.as_str(),
            &AuditHead {
                seq: entry.seq,
                hash: linked.hash.clone(),
                time: entry.time,
            },
        )?;
        Ok(Appended {
            prev,
            seq: entry.seq,
            linked,
        })
    }
}

/// An event just appended.
pub struct Appended {
    /// The chain value before it.
    pub prev: [u8; 32],
    /// Its position.
    pub seq: u64,
    /// Its entry and chain value.
    pub linked: LinkedEntry,
}

/// The log of events that concern no account (e.g. logins with unknown usernames).
pub fn server_log() -> UserId {
    UserId::from_bytes(&[0u8; 16])
}

fn user_by_id<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    id: &UserId,
) -> StoreResult<Option<T>> {
    let name = txn
        .open_table(USER_IDS)?
        .get(id.as_str())?
        .map(|v| v.value().to_owned());
    match name {
        Some(n) => get_json(&txn.open_table(USERS)?, &n),
        None => Ok(None),
    }
}

fn record_key(owner: &UserId, id: &RecordId) -> String {
    format!("{owner}/{id}")
}

/// The redb database. After a failed commit (a full disk, an I/O error) redb refuses further
/// writes until it is reopened, so the store reopens itself: the server recovers when space is
/// freed, without a restart, and commits that never became durable are discarded.
pub struct Store {
    path: std::path::PathBuf,
    db: std::sync::RwLock<Option<Database>>,
}

/// A shared handle on the open database.
struct Db<'a>(std::sync::RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("Store::db checks the database is open")
    }
}

impl Store {
    fn db(&self) -> StoreResult<Db<'_>> {
        for _ in 0..2 {
            let guard = self
                .db
                .read()
                .map_err(|_| StoreError::Db("store lock poisoned".into()))?;
            if guard.is_some() {
                return Ok(Db(guard));
            }
            drop(guard);
            self.reopen();
        }
        Err(StoreError::Db("the store could not be reopened".into()))
    }

    /// Drops the database handle and opens the file again (its last durable state).
    fn reopen(&self) {
        let Ok(mut guard) = self.db.write() else {
            return;
        };
        guard.take();
        match Database::create(&self.path) {
            Ok(db) => {
                tracing::warn!("store reopened after a failed write");
                *guard = Some(db);
            }
            Err(e) => tracing::error!(error = %e, "store could not be reopened; will retry"),
        }
    }

    /// Opens (or creates) the store file and its tables.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(DELIVERIES)?;
        txn.open_table(USAGE)?;
        for t in [
            USERS,
            SESSIONS,
            RECORDS,
            SHARES,
            PATIENT_SHARES,
            AUDIT_HEADS,
            META,
            WEBHOOKS,
        ] {
            txn.open_table(t)?;
        }
        txn.open_table(USER_IDS)?;
        txn.open_table(AUDIT)?;
        txn.open_table(NOTIFY_CURSORS)?;
        txn.open_table(INVITES_USED)?;
        txn.commit()?;
        Ok(Self {
            path: path.to_owned(),
            db: std::sync::RwLock::new(Some(db)),
        })
    }

    /// Runs `f` in one write transaction and commits (durably) if it returns `Ok` — including
    /// `Ok(Err(refusal))`, so a refusal's audit event is kept while the request still fails.
    pub fn write<R>(&self, f: impl FnOnce(&Tx) -> StoreResult<R>) -> StoreResult<R> {
        self.write_with_clock(None, f)
    }

    /// [`Store::write`] with the transaction's clock set to `now` (Unix seconds): for loading
    /// history, such as the large-store benchmark's years of audit events. The server itself
    /// always writes at the current time.
    pub fn write_as_of<R>(
        &self,
        now: u64,
        f: impl FnOnce(&Tx) -> StoreResult<R>,
    ) -> StoreResult<R> {
        self.write_with_clock(Some(now), f)
    }

    fn write_with_clock<R>(
        &self,
        now: Option<u64>,
        f: impl FnOnce(&Tx) -> StoreResult<R>,
    ) -> StoreResult<R> {
        // After a storage error redb refuses further writes until it is opened again, so every
        // failure below reopens the store at its last durable state.
        let begun = self.db()?.begin_write();
        let txn = begun.inspect_err(|_| self.reopen())?;
        // Read the clock once the write lock is held, so commit order and time order agree.
        let tx = Tx {
            txn,
            now: now.unwrap_or_else(healthlock_common::time::now),
        };
        let out = match f(&tx) {
            Ok(out) => out,
            Err(e) => {
                drop(tx); // abort before reopening
                self.reopen();
                return Err(e);
            }
        };
        // redb's default durability: the commit returns once it is on disk.
        if let Err(e) = tx.txn.commit() {
            self.reopen();
            return Err(e.into());
        }
        Ok(out)
    }

    /// A server-wide secret, made on first use.
    pub fn meta_secret(&self, name: &str) -> StoreResult<[u8; 32]> {
        let txn = self.db()?.begin_write()?;
        let secret = {
            let mut t = txn.open_table(META)?;
            let existing = t.get(name)?.map(|v| v.value().to_vec());
            match existing.and_then(|v| <[u8; 32]>::try_from(v).ok()) {
                Some(s) => s,
                None => {
                    let s = healthlock_common::random_bytes::<32>();
                    t.insert(name, &s[..])?;
                    s
                }
            }
        };
        txn.commit()?;
        Ok(secret)
    }

    /// The user with this (lowercase) name.
    pub fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let txn = self.db()?.begin_read()?;
        get_json(&txn.open_table(USERS)?, username)
    }

    /// The public part of the account with this id.
    pub fn user_by_id(&self, id: &UserId) -> StoreResult<Option<Account>> {
        user_by_id(&self.db()?.begin_read()?, id)
    }

    /// The session stored under this token hash, with its account: one read transaction, as every
    /// authenticated request makes it.
    pub fn session_user(&self, token_hash: &str) -> StoreResult<Option<(SessionRow, Account)>> {
        let txn = self.db()?.begin_read()?;
        let Some(session) = get_json::<SessionRow>(&txn.open_table(SESSIONS)?, token_hash)? else {
            return Ok(None);
        };
        Ok(user_by_id(&txn, &session.user)?.map(|u| (session, u)))
    }

    /// A record of `owner`.
    pub fn record(&self, owner: &UserId, id: &RecordId) -> StoreResult<Option<RecordRow>> {
        let txn = self.db()?.begin_read()?;
        get_json(&txn.open_table(RECORDS)?, &record_key(owner, id))
    }

    /// Every record of `owner`, oldest first.
    pub fn records(&self, owner: &UserId) -> StoreResult<Vec<RecordRow>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let (lo, hi) = (format!("{owner}/"), format!("{owner}0"));
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str())? {
            out.push(decode::<RecordRow>(item?.1.value())?);
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// A share.
    pub fn share(&self, id: &ShareId) -> StoreResult<Option<ShareRow>> {
        let txn = self.db()?.begin_read()?;
        get_json(&txn.open_table(SHARES)?, id.as_str())
    }

    /// Every share of `patient`, oldest first.
    pub fn shares(&self, patient: &UserId) -> StoreResult<Vec<ShareRow>> {
        let txn = self.db()?.begin_read()?;
        let index = txn.open_table(PATIENT_SHARES)?;
        let shares = txn.open_table(SHARES)?;
        let (lo, hi) = (format!("{patient}/"), format!("{patient}0"));
        let mut out = Vec::new();
        for item in index.range(lo.as_str()..hi.as_str())? {
            let key = item?.0.value().to_owned();
            let id = key.rsplit('/').next().unwrap_or_default();
            if let Some(row) = get_json::<ShareRow>(&shares, id)? {
                out.push(row);
            }
        }
        out.sort_by_key(|s| s.created);
        Ok(out)
    }

    /// Events of `owner`'s log with `seq > after`, at most `limit`, in order, and the log's head,
    /// read in one transaction so they agree.
    pub fn audit(
        &self,
        owner: &UserId,
        after: u64,
        limit: usize,
    ) -> StoreResult<(Vec<LinkedEntry>, AuditHead)> {
        let txn = self.db()?.begin_read()?;
        let head = get_json(&txn.open_table(AUDIT_HEADS)?, owner.as_str())?.unwrap_or_default();
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for item in
            t.range((owner.as_str(), after.saturating_add(1))..=(owner.as_str(), u64::MAX))?
        {
            out.push(decode(item?.1.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok((out, head))
    }

    /// The seq just before the first event of `owner` at or after `since` (Unix seconds): a
    /// binary search over the log, whose times never decrease, so a long log is not scanned.
    pub fn audit_seq_before(&self, owner: &UserId, since: u64) -> StoreResult<u64> {
        let txn = self.db()?.begin_read()?;
        let size = get_json::<AuditHead>(&txn.open_table(AUDIT_HEADS)?, owner.as_str())?
            .unwrap_or_default()
            .seq;
        let t = txn.open_table(AUDIT)?;
        let (mut lo, mut hi) = (1u64, size + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let time = match t.get((owner.as_str(), mid))? {
                Some(v) => {
                    decode::<LinkedEntry>(v.value())?
                        .parse()
                        .map_err(|_| StoreError::Db("corrupt audit entry".into()))?
                        .time
                }
                None => u64::MAX,
            };
            if time < since {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo - 1)
    }

    /// The id of every record (for the startup sweep of orphaned blobs).
    pub fn all_record_ids(&self) -> StoreResult<std::collections::HashSet<String>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let mut out = std::collections::HashSet::new();
        for item in t.range(..)? {
            let key = item?.0.value().to_owned();
            if let Some((_, id)) = key.split_once('/') {
                out.insert(id.to_owned());
            }
        }
        Ok(out)
    }

    /// Every webhook, with its owner.
    pub fn webhooks(&self) -> StoreResult<Vec<(UserId, WebhookRow)>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(WEBHOOKS)?;
        let mut out = Vec::new();
        for item in t.range(..)? {
            let (k, v) = item?;
            if let Ok(owner) = k.value().parse() {
                out.push((owner, decode(v.value())?));
            }
        }
        Ok(out)
    }

    /// The owner's webhook.
    pub fn webhook(&self, owner: &UserId) -> StoreResult<Option<WebhookRow>> {
        let txn = self.db()?.begin_read()?;
        get_json(&txn.open_table(WEBHOOKS)?, owner.as_str())
    }

    /// The owner's last `n` deliveries, newest last.
    pub fn deliveries(&self, owner: &UserId, n: usize) -> StoreResult<Vec<Delivery>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for item in t
            .range((owner.as_str(), 0)..=(owner.as_str(), u64::MAX))?
            .rev()
            .take(n)
        {
            out.push(decode(item?.1.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// Bytes in `owner`'s vault.
    pub fn usage(&self, owner: &UserId) -> StoreResult<u64> {
        let txn = self.db()?.begin_read()?;
        Ok(txn
            .open_table(USAGE)?
            .get(owner.as_str())?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The highest audit seq already shown to `owner` as a notification.
    pub fn notify_cursor(&self, owner: &UserId) -> StoreResult<u64> {
        let txn = self.db()?.begin_read()?;
        Ok(txn
            .open_table(NOTIFY_CURSORS)?
            .get(owner.as_str())?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_row_stays_flat_so_stores_written_before_account_existed_still_read() {
        let row = serde_json::json!({
            "id": UserId::random(), "username": "bob", "role": "doctor", "created": 7,
            "salt": "AAAA", "kdf": KdfParams::default(), "auth_phc": "phc",
            "age_recipient": "age1x", "ed25519_public": "ab", "wrapped_keys": "AAAA",
        });
        let user: UserRow = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(user.account.username, "bob");
        assert_eq!(user.account.role, Role::Doctor);
        assert_eq!(user.auth_phc, "phc");
        assert_eq!(serde_json::to_value(&user).unwrap(), row);
        let account: Account = serde_json::from_value(row).unwrap();
        assert_eq!(account.ed25519_public, "ab");
    }

    #[test]
    fn touching_a_session_never_brings_back_one_that_was_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let user = UserRow {
            account: Account {
                id: UserId::random(),
                username: "alice".into(),
                role: Role::Patient,
                created: 1,
                age_recipient: String::new(),
                ed25519_public: String::new(),
            },
            salt: vec![0; 16],
            kdf: Default::default(),
            auth_phc: String::new(),
            wrapped_keys: Vec::new(),
        };
        store.write(|tx| tx.insert_user(&user)).unwrap();
        let row = SessionRow {
            user: user.account.id.clone(),
            created: 1,
            last_seen: 1,
        };
        store.write(|tx| tx.put_session("live", &row)).unwrap();
        store.write(|tx| tx.put_session("ended", &row)).unwrap();
        store
            .write(|tx| tx.delete_session("ended").map(drop))
            .unwrap();
        store
            .write(|tx| {
                tx.touch_session("live")?;
                tx.touch_session("ended")
            })
            .unwrap();
        let (live, of) = store.session_user("live").unwrap().unwrap();
        assert!(live.last_seen > 1);
        assert_eq!(of.id, user.account.id);
        assert!(store.session_user("ended").unwrap().is_none());
    }
}
