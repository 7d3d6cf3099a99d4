//! The `--json` results of the commands that shape their own output (all shapes: docs/cli.md).

use healthlock_common::{Category, RecordId, Role, ShareId, UserId};
use serde::{Deserialize, Serialize};

/// `register`, `login`, `whoami`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Account name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Account id.
    pub id: UserId,
    /// Server origin.
    pub server: String,
    /// The server's audit key as pinned by this profile, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
}

/// One record of `records` and `upload`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Record id.
    pub id: RecordId,
    /// Title (decrypted on this machine).
    pub title: String,
    /// Original file name.
    pub filename: String,
    /// Category.
    pub category: Category,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Upload time, RFC 3339.
    pub created: String,
    /// Whether it carries the patient's valid seal (their signature over what they uploaded).
    /// `false` for a doctor's attachment, and for a record the server planted or altered.
    pub sealed: bool,
    /// The doctor who attached it, if not the patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// `share`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// Share id.
    pub id: ShareId,
    /// The link to hand over.
    pub link: String,
    /// The bare token.
    pub token: String,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// Role it is for.
    pub role: Role,
    /// Records in it.
    pub records: Vec<RecordId>,
    /// Open limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// The passcode, when `--passcode` made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
}

/// One file written by `fetch` or `download`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchedFile {
    /// Record id.
    pub record: RecordId,
    /// Where it was written.
    pub path: String,
    /// SHA-256 of the plaintext written.
    pub sha256: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Title.
    pub title: String,
    /// Category.
    pub category: Category,
    /// With `download --seal`: whether the record was sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<bool>,
}

/// `fetch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// The share.
    pub share: ShareId,
    /// Files written.
    pub files: Vec<FetchedFile>,
    /// Records in the share that this role may not read.
    pub withheld: Vec<RecordId>,
    /// Records the patient has deleted since sharing.
    pub missing: Vec<RecordId>,
}
