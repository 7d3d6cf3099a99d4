//! HTTP wire types shared by the server and the CLI. All bodies are JSON; binary fields are base64.
//! The routes are listed in `docs/protocol.md`.

use crate::audit::Checkpoint;
use crate::descriptor::SignedDescriptor;
use crate::encoding::serde_b64;
use crate::kdf::KdfParams;
use crate::{Category, RecordId, Role, ShareId, UserId};
use serde::{Deserialize, Serialize};

/// Header carrying a new record's category on an upload.
pub const HEADER_CATEGORY: &str = "x-healthlock-category";
/// Header carrying a new record's key envelope (base64) on an upload.
pub const HEADER_ENVELOPE: &str = "x-healthlock-envelope";
/// Header carrying a new record's sealed metadata (base64) on an upload.
pub const HEADER_META: &str = "x-healthlock-meta";

/// Every refusal the server can give. The CLI matches on this, never on message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed.
    BadRequest,
    /// No valid session: log in.
    Unauthenticated,
    /// Wrong username or password (never says which).
    InvalidCredentials,
    /// The account's role may not do this.
    Forbidden,
    /// The share was made for another role.
    WrongRole,
    /// Nothing here, or nothing the caller can prove a right to.
    NotFound,
    /// The share expired.
    ShareExpired,
    /// The patient revoked the share.
    ShareRevoked,
    /// The share's uses are spent.
    ShareUsedUp,
    /// The share needs a passcode.
    PasscodeRequired,
    /// The passcode was wrong.
    PasscodeWrong,
    /// Too many wrong passcodes: the share is locked.
    ShareLocked,
    /// The open challenge is unknown, used or older than 60 s.
    ChallengeInvalid,
    /// The client signed for another server address.
    OriginMismatch,
    /// The invite is unknown, used, expired or for another role.
    InviteInvalid,
    /// Provider accounts need an invite.
    InviteRequired,
    /// The username is taken.
    UsernameTaken,
    /// The upload exceeds the server's limit.
    PayloadTooLarge,
    /// The server's disk is full.
    InsufficientStorage,
    /// The body arrived incomplete.
    UploadIncomplete,
    /// Too many attempts: wait `retry_after` seconds.
    RateLimited,
    /// Something failed inside the server (details are in its log only).
    Internal,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::WrongRole => "wrong_role",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ShareExpired => "share_expired",
            ErrorCode::ShareRevoked => "share_revoked",
            ErrorCode::ShareUsedUp => "share_used_up",
            ErrorCode::PasscodeRequired => "passcode_required",
            ErrorCode::PasscodeWrong => "passcode_wrong",
            ErrorCode::ShareLocked => "share_locked",
            ErrorCode::ChallengeInvalid => "challenge_invalid",
            ErrorCode::OriginMismatch => "origin_mismatch",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::InviteRequired => "invite_required",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::UploadIncomplete => "upload_incomplete",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The body of every error response: `{"error": {"code", "message", ...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// A refusal: a machine-readable code, a safe one-line message, and facts the CLI may use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub code: ErrorCode,
    /// A lower-case, one-line message safe to show anyone who got this response.
    pub message: String,
    /// When the share expired or was revoked (Unix seconds), where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// Passcode attempts left before the share locks, where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait before trying again (also sent as `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The origin the server signs for and puts in links.
    pub origin: String,
    /// The server's version.
    pub version: String,
    /// The largest upload accepted, in bytes.
    pub max_upload: u64,
    /// The longest share lifetime accepted, in seconds.
    pub max_share_lifetime: u64,
}

/// `POST /v1/auth/prelogin`: which salt and cost to derive the password with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloginRequest {
    /// The account name.
    pub username: String,
}

/// Answer to [`PreloginRequest`]. An unknown username gets a stable made-up salt, so this route
/// does not reveal which accounts exist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloginResponse {
    /// The account's Argon2id salt.
    #[serde(with = "serde_b64")]
    pub salt: Vec<u8>,
    /// The account's Argon2id parameters.
    pub kdf: KdfParams,
}

/// `POST /v1/auth/register`.
#[derive(Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The new account's name.
    pub username: String,
    /// The role; providers need `invite`.
    pub role: Role,
    /// An operator's invite code (providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// The Argon2id salt the client chose.
    #[serde(with = "serde_b64")]
    pub salt: Vec<u8>,
    /// The Argon2id parameters the client used.
    pub kdf: KdfParams,
    /// `HKDF(K, "auth")` — the server stores only an Argon2id hash of it.
    #[serde(with = "serde_b64")]
    pub auth: Vec<u8>,
    /// The account's age recipient.
    pub age_recipient: String,
    /// The account's Ed25519 public key, hex.
    pub ed25519_public: String,
    /// The private keys, as an age file encrypted to the password-derived wrap key.
    #[serde(with = "serde_b64")]
    pub wrapped_keys: Vec<u8>,
}

/// `POST /v1/auth/login`.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The account name.
    pub username: String,
    /// `HKDF(K, "auth")`.
    #[serde(with = "serde_b64")]
    pub auth: Vec<u8>,
}

/// Answer to register and login.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The bearer token for `Authorization: Bearer …`. Secret.
    pub session: String,
    /// When the session ends at the latest (Unix seconds).
    pub session_expires: u64,
    /// The account.
    pub user: UserInfo,
    /// The wrapped private keys, to unwrap with the password-derived key.
    #[serde(with = "serde_b64")]
    pub wrapped_keys: Vec<u8>,
}

/// An account as shown to its owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserInfo {
    /// The account id.
    pub id: UserId,
    /// The account name.
    pub username: String,
    /// Its role.
    pub role: Role,
    /// Creation time.
    pub created: u64,
    /// The account's age recipient.
    pub age_recipient: String,
}

/// A record as the server knows it: ids, category, sizes, times, and opaque ciphertext.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordInfo {
    /// The record.
    pub id: RecordId,
    /// Its category.
    pub category: Category,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// The ciphertext's hash ([`crate::body_hash`]): as the patient stated it in the seal, or as
    /// the server computed it for a doctor's attachment.
    #[serde(alias = "sha256")]
    pub hash: String,
    /// The patient's seal over the record ([`crate::record_seal`]), hex; `None` for a
    /// doctor's attachment. The patient's CLI trusts none of this record's fields without it.
    #[serde(default)]
    pub seal: Option<String>,
    /// Upload time.
    pub created: u64,
    /// The record key sealed to the patient.
    #[serde(with = "serde_b64")]
    pub envelope: Vec<u8>,
    /// Title and file name sealed to the record key.
    #[serde(with = "serde_b64")]
    pub meta: Vec<u8>,
    /// The doctor who attached it, if it was not the patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// `POST /v1/records`: a patient's body is stored and waits for its seal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The id the record will have.
    pub id: RecordId,
    /// Bytes stored.
    pub size: u64,
    /// Unix time by which `PUT /v1/records/{id}/seal` must arrive; after it the body is dropped.
    pub expires: u64,
}

/// `PUT /v1/records/{id}/seal`: the second step of an upload, once the body is stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealRecordRequest {
    /// The hash of the ciphertext the patient sent ([`crate::body_hash`]). No `sha256` alias: a
    /// CLI from before BLAKE3 is refused here, before its upload becomes a record whose answer
    /// (a `RecordInfo` with `hash`) it could not read.
    pub hash: String,
    /// The patient's signature over the record ([`crate::record_seal`]), hex.
    pub seal: String,
}

/// `POST /v1/shares`.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreateShareRequest {
    /// The signed descriptor; the server takes id, role, expiry and records from it.
    pub descriptor: SignedDescriptor,
    /// The share's Ed25519 public key, hex (checks the open proof).
    pub verify_key: String,
    /// Each record key sealed to the share's key, with the sealed metadata.
    pub records: Vec<ShareRecordKeys>,
    /// How many successful opens the share allows; `None` for unlimited until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// The passcode proof (see `token::ShareSecret::passcode_proof`) when the share has a passcode.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub passcode_proof: Option<Vec<u8>>,
}

/// A record's key and metadata as the token holder will receive them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareRecordKeys {
    /// The record.
    pub id: RecordId,
    /// The record key sealed to the share's age identity.
    #[serde(with = "serde_b64")]
    pub envelope: Vec<u8>,
    /// The record's sealed metadata.
    #[serde(with = "serde_b64")]
    pub meta: Vec<u8>,
}

/// The state of a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareStatus {
    /// Can be opened.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked by the patient.
    Revoked,
    /// All uses spent.
    UsedUp,
    /// Locked after too many wrong passcodes.
    Locked,
}

/// A share as its patient sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareInfo {
    /// The share.
    pub id: ShareId,
    /// The role it was made for.
    pub role: Role,
    /// The records in it.
    pub records: Vec<RecordId>,
    /// Creation time.
    pub created: u64,
    /// Expiry.
    pub expires: u64,
    /// Successful opens so far.
    pub uses: u32,
    /// The limit of opens, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// Whether a passcode is needed.
    pub passcode: bool,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    /// Its state now.
    pub status: ShareStatus,
}

/// `POST /v1/shares/{id}/challenge` answer: a single-use nonce to sign.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    /// The nonce.
    pub nonce: String,
    /// The origin to sign for.
    pub origin: String,
    /// Seconds the nonce stays valid.
    pub expires_in: u64,
}

/// `POST /v1/shares/{id}/open`.
#[derive(Clone, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The nonce from the challenge.
    pub nonce: String,
    /// The origin the client signed for.
    pub origin: String,
    /// Ed25519 signature over `token::open_message`.
    #[serde(with = "serde_b64")]
    pub signature: Vec<u8>,
    /// The passcode proof, if the share has a passcode.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub passcode_proof: Option<Vec<u8>>,
}

/// What a successful open returns: the signed descriptor and the keys of the records the
/// caller's role may read. Bodies follow from `GET /v1/shares/{id}/records/{record}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenResponse {
    /// As the patient signed it.
    pub descriptor: SignedDescriptor,
    /// Keys and metadata of the readable records only.
    pub records: Vec<ShareRecordKeys>,
    /// Records in the share that the caller's role may not read.
    pub withheld: Vec<RecordId>,
    /// Records in the share that the patient has since deleted.
    #[serde(default)]
    pub missing: Vec<RecordId>,
    /// Until when bodies may be downloaded under this open (Unix seconds).
    pub grant_expires: u64,
    /// The open's audit event, signed into the patient's log.
    pub audit: AuditProof,
}

/// One audit event as the server sends it: the hashed entry, its chain value, and the actor's
/// name (looked up when read, outside the hash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The canonical JSON of an [`crate::audit::Entry`], exactly as hashed.
    pub entry: String,
    /// The chain value after this event, hex.
    pub hash: String,
    /// The actor's username, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
}

impl AuditEvent {
    /// The entry and hash, for verification.
    pub fn linked(&self) -> crate::audit::LinkedEntry {
        crate::audit::LinkedEntry {
            entry: self.entry.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// `GET /v1/audit`: a page of the caller's log and a signed checkpoint of the whole log, read
/// in one transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPage {
    /// Events with `seq > after`, in order.
    pub events: Vec<AuditEvent>,
    /// The log's size and head now, signed by the server.
    pub checkpoint: Checkpoint,
}

/// `GET /v1/server-key`: the key that signs audit checkpoints (clients pin it on first use).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerKey {
    /// The server's origin.
    pub origin: String,
    /// Ed25519 public key, hex.
    pub key: String,
}

/// Proof, in an open response, that the open was durably audited in the patient's log before
/// anything was released: the event, the chain value before it, and the signed checkpoint whose
/// head is that event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditProof {
    /// The chain value before the event, hex.
    pub prev: String,
    /// The open event.
    pub event: AuditEvent,
    /// The patient's log, ending with this event.
    pub checkpoint: Checkpoint,
}

/// `POST /v1/notifications/ack`: mark everything up to `seq` read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AckRequest {
    /// The highest audit sequence number the client has shown.
    pub seq: u64,
}

/// Serde adapter: `Option<Vec<u8>>` as optional base64.
mod opt_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&crate::encoding::b64(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| crate::encoding::unb64(&s, "base64 field").map_err(serde::de::Error::custom))
            .transpose()
    }
}
