//! The server's one error type and its mapping to HTTP responses. 4xx answers carry a safe
//! message; 5xx answers say only "internal error" and the cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use healthlock_common::api::{ErrorBody, ErrorCode, ErrorResponse};

/// A refusal or failure, ready to become a response.
#[derive(Debug)]
pub struct ApiError {
    /// What the client is told.
    pub body: ErrorBody,
    /// For 5xx: what the log is told (never sent).
    pub detail: Option<String>,
    /// A status other than the code's usual one.
    pub status: Option<StatusCode>,
}

impl ApiError {
    /// A refusal with a code and a safe message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody {
                code,
                message: message.into(),
                at: None,
                attempts_left: None,
                retry_after: None,
            },
            detail: None,
            status: None,
        }
    }

    /// Answers with `status` instead of the code's usual one.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Attaches a time (expiry, revocation).
    pub fn at(mut self, t: u64) -> Self {
        self.body.at = Some(t);
        self
    }

    /// Attaches how long to wait before trying again.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.body.retry_after = Some(secs);
        self
    }

    /// Attaches the passcode attempts left.
    pub fn attempts_left(mut self, n: u32) -> Self {
        self.body.attempts_left = Some(n);
        self
    }

    /// A 500 whose cause is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(ErrorCode::Internal, "internal error")
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404: the same answer for "does not exist" and "not yours".
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    /// 403 for a role that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// The HTTP status of this error's code.
    pub fn status(&self) -> StatusCode {
        if let Some(s) = self.status {
            return s;
        }
        match self.body.code {
            ErrorCode::BadRequest | ErrorCode::OriginMismatch => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated
            | ErrorCode::InvalidCredentials
            | ErrorCode::ChallengeInvalid
            | ErrorCode::PasscodeRequired
            | ErrorCode::PasscodeWrong => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::WrongRole
            | ErrorCode::InviteInvalid
            | ErrorCode::InviteRequired => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::ShareExpired | ErrorCode::ShareRevoked | ErrorCode::ShareUsedUp => {
                StatusCode::GONE
            }
            ErrorCode::ShareLocked => StatusCode::LOCKED,
            ErrorCode::UsernameTaken => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::UploadIncomplete => StatusCode::BAD_REQUEST,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Some(detail) = &self.detail {
            tracing::error!(code = self.body.code.as_str(), %detail, "request failed");
        }
        let retry = self.body.retry_after;
        let mut resp = (status, axum::Json(ErrorResponse { error: self.body })).into_response();
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::DiskFull => ApiError::new(
                ErrorCode::InsufficientStorage,
                "the server's disk is full; nothing was stored. Try again later or tell the operator",
            ),
            StoreError::Db(detail) => ApiError::internal(detail),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        if crate::store::io_is_disk_full(&e) {
            crate::store::StoreError::DiskFull.into()
        } else {
            ApiError::internal(e)
        }
    }
}

/// A handler result.
pub type ApiResult<T> = Result<T, ApiError>;
