//! The CLI's typed errors, their exit codes and how they are shown.
//!
//! Exit codes are part of the interface (scripts branch on them) and are listed in
//! docs/cli.md; never renumber one.

use healthlock_common::api::{ErrorBody, ErrorCode};
use std::path::PathBuf;

/// A failure with a specific meaning for users and scripts.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server refused the request.
    #[error("{}", server_message(.0))]
    Server(ErrorBody),
    /// The server could not be reached or answered nonsense.
    #[error("cannot reach the server at {server}: {reason}")]
    Network {
        /// The server address tried.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// No session in this profile.
    #[error("not logged in{0}; run `healthlock login --username NAME` (or `register`)")]
    NotLoggedIn(String),
    /// What the server sent does not match what the patient signed.
    #[error(
        "integrity check failed: {0}. The server may be compromised: tell the operator (and, for a share, the patient)"
    )]
    Integrity(String),
    /// The input (a token, a file, an argument) cannot be used.
    #[error("{0}")]
    Input(String),
    /// The output file exists.
    #[error("{} exists; pass --force to overwrite it, or -o to choose another path", .0.display())]
    Exists(PathBuf),
}

fn server_message(b: &ErrorBody) -> String {
    use healthlock_common::time::relative;
    match (b.code, b.at) {
        (ErrorCode::ShareExpired, Some(at)) => {
            format!(
                "this share expired {}; ask the patient for a new one",
                relative(at)
            )
        }
        (ErrorCode::ShareRevoked, Some(at)) => format!(
            "the patient revoked this share {}; ask them for a new one",
            relative(at)
        ),
        _ => b.message.clone(),
    }
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Network { .. } => 3,
            CliError::NotLoggedIn(_) => 4,
            CliError::Integrity(_) => 14,
            CliError::Input(_) => 15,
            CliError::Exists(_) => 16,
            CliError::Server(b) => match b.code {
                ErrorCode::Unauthenticated => 4,
                ErrorCode::InvalidCredentials => 5,
                ErrorCode::Forbidden => 6,
                ErrorCode::NotFound => 7,
                ErrorCode::WrongRole => 8,
                ErrorCode::ShareExpired => 9,
                ErrorCode::ShareRevoked => 10,
                ErrorCode::ShareUsedUp => 11,
                ErrorCode::PasscodeRequired | ErrorCode::PasscodeWrong => 12,
                ErrorCode::ShareLocked => 13,
                ErrorCode::BadRequest
                | ErrorCode::OriginMismatch
                | ErrorCode::ChallengeInvalid
                | ErrorCode::UploadIncomplete => 15,
                ErrorCode::InviteRequired | ErrorCode::InviteInvalid => 17,
                ErrorCode::PayloadTooLarge | ErrorCode::InsufficientStorage => 18,
                ErrorCode::UsernameTaken => 19,
                ErrorCode::RateLimited => 20,
                _ => 1,
            },
        }
    }

    /// The machine-readable code for `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Server(b) => b.code.as_str(),
            CliError::Network { .. } => "network",
            CliError::NotLoggedIn(_) => "not_logged_in",
            CliError::Integrity(_) => "integrity",
            CliError::Input(_) => "invalid_input",
            CliError::Exists(_) => "exists",
        }
    }
}

/// Shorthand for an input error.
pub fn input(msg: impl Into<String>) -> anyhow::Error {
    CliError::Input(msg.into()).into()
}

/// Shorthand for an integrity error.
pub fn integrity(msg: impl Into<String>) -> anyhow::Error {
    CliError::Integrity(msg.into()).into()
}
