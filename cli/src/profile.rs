//! The profile directory: `$XDG_CONFIG_HOME/healthlock/profiles/<name>/` (or `~/.config/…`).
//!
//! `profile.json` remembers the server; `session.json` holds the bearer token and `keys.json` the
//! unwrapped account keys, both mode 0600 and both removed by `logout`. Anyone who can read these
//! files as you can act as you until the session ends (docs/threat-model.md).

use anyhow::{Context, Result};
use healthlock_common::{Role, UserId};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a profile lives and what it holds.
pub struct Profile {
    /// The profile directory.
    pub dir: PathBuf,
}

/// Remembered settings.
#[derive(Default, Serialize, Deserialize)]
pub struct ProfileConfig {
    /// The server this profile uses.
    pub server: Option<String>,
    /// That server's audit key (hex), pinned on first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
}

/// The last access `notifications --watch` showed.
#[derive(Clone, Serialize, Deserialize)]
pub struct WatchCursor {
    /// The server.
    pub server: String,
    /// Whose log.
    pub log: UserId,
    /// The event's seq.
    pub seq: u64,
}

/// The audit log state this device last verified.
#[derive(Clone, Serialize, Deserialize)]
pub struct AuditHead {
    /// The server.
    pub server: String,
    /// Whose log.
    pub log: UserId,
    /// Events verified.
    pub size: u64,
    /// Their head, hex.
    pub head: String,
}

/// A login session.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The server's origin.
    pub server: String,
    /// The account name.
    pub username: String,
    /// The account id.
    pub user_id: UserId,
    /// The account's role.
    pub role: Role,
    /// The bearer token. Secret.
    pub token: String,
    /// When the session ends at the latest.
    pub expires: u64,
    /// The account's age recipient.
    pub age_recipient: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({}@{}, <redacted>)", self.username, self.server)
    }
}

/// Writes a file readable only by its owner, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Profile {
    /// The profile called `name`, following `XDG_CONFIG_HOME` (relative values are ignored).
    pub fn open(name: &str) -> Result<Self> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(crate::error::input(
                "a profile name is letters, digits, '-' or '_'",
            ));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .context(
                "neither XDG_CONFIG_HOME nor HOME is set; cannot find the profile directory",
            )?;
        Ok(Self {
            dir: base.join("healthlock").join("profiles").join(name),
        })
    }

    fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, file: &str) -> Result<Option<T>> {
        match std::fs::read(self.dir.join(file)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; run `healthlock logout` and log in again",
                    file
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        self.ensure_dir()?;
        write_private(&self.dir.join(file), &serde_json::to_vec_pretty(value)?)
    }

    /// The remembered settings.
    pub fn config(&self) -> Result<ProfileConfig> {
        Ok(self.read_json("profile.json")?.unwrap_or_default())
    }

    /// Remembers the server.
    pub fn save_config(&self, config: &ProfileConfig) -> Result<()> {
        self.write_json("profile.json", config)
    }

    /// The audit head last verified on this device.
    pub fn audit_head(&self) -> Result<Option<AuditHead>> {
        self.read_json("audit-head.json")
    }

    /// Remembers a verified audit head.
    pub fn save_audit_head(&self, head: &AuditHead) -> Result<()> {
        self.write_json("audit-head.json", head)
    }

    /// Where `notifications --watch` left off.
    pub fn watch_cursor(&self) -> Result<Option<WatchCursor>> {
        self.read_json("watch-cursor.json")
    }

    /// Remembers where `notifications --watch` left off.
    pub fn save_watch_cursor(&self, cursor: &WatchCursor) -> Result<()> {
        self.write_json("watch-cursor.json", cursor)
    }

    /// The session, if logged in.
    pub fn session(&self) -> Result<Option<Session>> {
        self.read_json("session.json")
    }

    /// Stores a session and the account's keys.
    pub fn save_login(
        &self,
        session: &Session,
        keys: &healthlock_common::keys::AccountKeys,
    ) -> Result<()> {
        self.ensure_dir()?;
        write_private(
            &self.dir.join("keys.json"),
            keys.to_secret_json().as_bytes(),
        )?;
        self.write_json("session.json", session)
    }

    /// The account's keys.
    pub fn keys(&self) -> Result<healthlock_common::keys::AccountKeys> {
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(self.dir.join("keys.json")).map_err(|_| {
                crate::error::CliError::NotLoggedIn(" (this profile has no keys)".into())
            })?);
        Ok(healthlock_common::keys::AccountKeys::from_secret_json(
            &bytes,
        )?)
    }

    /// Forgets the session and keys.
    pub fn clear_login(&self) -> Result<bool> {
        let mut removed = false;
        for f in ["session.json", "keys.json"] {
            match std::fs::remove_file(self.dir.join(f)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}
