//! Operator invites for provider accounts.
//!
//! redb locks its file while the server runs, so `healthlock-server invite` does not touch the
//! store: it writes `invites/<SHA-256 of code>.json` (only the hash of the code is on disk), which
//! the running server reads when someone registers with that code. Using an invite marks its hash
//! in the store in the same transaction that creates the account, so it works once.

use healthlock_common::Role;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What an invite grants.
#[derive(Serialize, Deserialize)]
pub struct Invite {
    /// The role of the account it creates.
    pub role: Role,
    /// Until when it can be used (Unix seconds).
    pub expires: u64,
}

fn spool(data_dir: &Path) -> PathBuf {
    data_dir.join("invites")
}

/// SHA-256 of an invite code, hex: its name on disk and in the store.
pub fn code_hash(code: &str) -> String {
    healthlock_common::encoding::sha256_hex(code.trim().to_ascii_lowercase().as_bytes())
}

/// Makes an invite and returns its code (shown once, stored only hashed).
pub fn create(data_dir: &Path, role: Role, lifetime: u64) -> std::io::Result<String> {
    let code = format!(
        "inv-{}",
        data_encoding::BASE32_NOPAD
            .encode(&healthlock_common::random_bytes::<15>())
            .to_ascii_lowercase()
    );
    let dir = spool(data_dir);
    std::fs::create_dir_all(&dir)?;
    let invite = Invite {
        role,
        expires: healthlock_common::time::now() + lifetime,
    };
    let path = dir.join(format!("{}.json", code_hash(&code)));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&invite)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(code)
}

/// The invite with this code's hash, if one was made and not yet removed.
pub fn find(data_dir: &Path, hash: &str) -> Option<Invite> {
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = std::fs::read(spool(data_dir).join(format!("{hash}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes a used invite's file (its use is already recorded in the store).
pub fn remove(data_dir: &Path, hash: &str) {
    let _ = std::fs::remove_file(spool(data_dir).join(format!("{hash}.json")));
}
