//! What every command gets: the global flags, the profile and ways to reach the server.

use crate::client::Api;
use crate::error::CliError;
use crate::profile::{Profile, Session};
use anyhow::Result;
use healthlock_common::token::normalize_origin;
use serde::Serialize;
use std::io::IsTerminal;

/// The server used when neither a flag, the environment nor the profile names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Per-invocation context.
pub struct Ctx {
    /// `--json`: one JSON document on stdout, errors as JSON on stderr.
    pub json: bool,
    /// The profile in use.
    pub profile: Profile,
    /// `--server` / `HEALTHLOCK_SERVER`.
    pub server_flag: Option<String>,
}

impl Ctx {
    /// The server to talk to: the flag, else the logged-in session's, else the profile's,
    /// else the default.
    pub fn server(&self) -> Result<String> {
        if let Some(s) = &self.server_flag {
            return normalize_origin(s).map_err(|e| crate::error::input(format!("--server: {e}")));
        }
        if let Some(s) = self.profile.session()? {
            return Ok(s.server);
        }
        if let Some(s) = self.profile.config()?.server {
            return Ok(s);
        }
        Ok(DEFAULT_SERVER.to_owned())
    }

    /// An unauthenticated client for [`Ctx::server`].
    pub fn api(&self) -> Result<Api> {
        Api::new(&self.server()?)
    }

    /// The session, or a "not logged in" error.
    pub fn session(&self) -> Result<Session> {
        let session = self
            .profile
            .session()?
            .ok_or_else(|| CliError::NotLoggedIn(String::new()))?;
        if let Some(flag) = &self.server_flag {
            let flag = normalize_origin(flag)
                .map_err(|e| crate::error::input(format!("--server: {e}")))?;
            if flag != session.server {
                return Err(crate::error::input(format!(
                    "this profile is logged in at {}, not {flag}; use another --profile to work with a second server",
                    session.server
                )));
            }
        }
        Ok(session)
    }

    /// A client with the session's token.
    pub fn authed(&self) -> Result<(Api, Session)> {
        let session = self.session()?;
        let api = Api::new(&session.server)?.with_token(&session.token);
        Ok((api, session))
    }

    /// Whether to draw progress bars and QR codes: a terminal, and not `--json`.
    pub fn interactive(&self) -> bool {
        !self.json && std::io::stderr().is_terminal()
    }

    /// Prints the command's result: JSON with `--json`, else the human text.
    pub fn output<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
        Ok(())
    }

    /// A warning on stderr (also with `--json`, where stdout stays clean).
    pub fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}
