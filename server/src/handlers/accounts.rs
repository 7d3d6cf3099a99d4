//! Registration, login, logout and `me`.
//!
//! The server receives only `auth = HKDF(Argon2id(password), "auth")` and stores an Argon2id hash
//! of it; the keys it stores are wrapped on the client. A wrong username and a wrong password get
//! the same answer after the same work.

use crate::auth::{Caller, ClientAddr};
use crate::error::{ApiError, ApiResult};
use crate::extract::AppJson;
use crate::invite;
use crate::state::AppState;
use crate::store::{Account, NewEvent, SessionRow, UserRow};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use healthlock_common::api::{
    ErrorCode, LoginRequest, LoginResponse, PreloginRequest, PreloginResponse, RegisterRequest,
    UserInfo,
};
use healthlock_common::kdf::KdfParams;
use healthlock_common::{Role, UserId, keys};
use sha2::{Digest, Sha256};

/// Lowercases and checks a username: 3–64 of `a-z 0-9 . _ -`.
fn normalize_username(raw: &str) -> ApiResult<String> {
    let name = raw.trim().to_ascii_lowercase();
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            "a username is 3 to 64 characters: letters, digits, '.', '_' or '-'",
        ))
    }
}

/// Argon2id (server default cost) of the client's auth value, as a PHC string.
pub fn hash_secret(secret: &[u8]) -> ApiResult<String> {
    Argon2::default()
        .hash_password(secret)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Constant-time check of a secret against a PHC string made by [`hash_secret`].
pub fn verify_secret(secret: &[u8], phc: &str) -> bool {
    Argon2::default().verify_password(secret, phc).is_ok()
}

fn user_info(u: &Account) -> UserInfo {
    UserInfo {
        id: u.id.clone(),
        username: u.username.clone(),
        role: u.role,
        created: u.created,
        age_recipient: u.age_recipient.clone(),
    }
}

fn new_session_token() -> String {
    format!(
        "hls_{}",
        healthlock_common::encoding::hex(&healthlock_common::random_bytes::<32>())
    )
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong username or password")
}

/// `POST /v1/auth/prelogin`: the salt and cost to derive a password with.
pub async fn prelogin(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    AppJson(req): AppJson<PreloginRequest>,
) -> ApiResult<Json<PreloginResponse>> {
    let l = state.settings.limits.login_per_min;
    state
        .limiter
        .check(&format!("prelogin-ip:{client:?}"), 6 * l)?;
    let username = normalize_username(&req.username)?;
    let name = username.clone();
    let user = state
        .blocking(move |s| s.store.user_by_name(&name))
        .await??;
    Ok(Json(match user {
        Some(u) => PreloginResponse {
            salt: u.salt,
            kdf: u.kdf,
        },
        None => {
            // A stable made-up salt: the same name always gets the same answer, so this route
            // cannot be used to learn which accounts exist.
            let mut h = Sha256::new();
            h.update(state.prelogin_secret);
            h.update(username.as_bytes());
            PreloginResponse {
                salt: h.finalize()[..16].to_vec(),
                kdf: KdfParams::default(),
            }
        }
    }))
}

/// `POST /v1/auth/register`: creates an account and logs it in.
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    AppJson(req): AppJson<RegisterRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let l = state.settings.limits.login_per_min;
    state
        .limiter
        .check(&format!("register-ip:{client:?}"), 3 * l)?;
    let username = normalize_username(&req.username)?;
    req.kdf
        .check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !(16..=64).contains(&req.salt.len())
        || req.auth.len() != 32
        || req.wrapped_keys.len() > 16_384
    {
        return Err(ApiError::bad_request("malformed registration"));
    }
    keys::parse_recipient(&req.age_recipient)
        .map_err(|_| ApiError::bad_request("invalid age recipient"))?;
    keys::parse_verifying_key(&req.ed25519_public)
        .map_err(|_| ApiError::bad_request("invalid ed25519 public key"))?;
    if req.role == Role::Admin {
        return Err(ApiError::forbidden(
            "admin accounts cannot be registered; operators use `healthlock-server` directly",
        ));
    }
    let now = healthlock_common::time::now();
    let invite_hash = if req.role.may_self_register() {
        None
    } else {
        let code = req.invite.as_deref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::InviteRequired,
                format!(
                    "a {0} account needs an invite code from the server's operator \
                     (`healthlock-server invite --role {0}`); pass it with --invite",
                    req.role
                ),
            )
        })?;
        let hash = invite::code_hash(code);
        let valid = invite::find(&state.settings.data_dir, &hash)
            .is_some_and(|i| i.role == req.role && i.expires > now);
        if !valid {
            return Err(invite_invalid());
        }
        Some(hash)
    };

    let auth = req.auth.clone();
    let auth_phc = state.blocking(move |_| hash_secret(&auth)).await??;
    let user = UserRow {
        account: Account {
            id: UserId::random(),
            username,
            role: req.role,
            created: now,
            age_recipient: req.age_recipient,
            ed25519_public: req.ed25519_public,
        },
        salt: req.salt,
        kdf: req.kdf,
        auth_phc,
        wrapped_keys: req.wrapped_keys,
    };
    let token = new_session_token();
    let (th, u, ih, client) = (
        crate::auth::token_hash(&token),
        user.clone(),
        invite_hash.clone(),
        client,
    );
    state
        .write(move |tx| {
            if tx.user_by_name(&u.account.username)?.is_some() {
                return Ok(Err(ApiError::new(
                    ErrorCode::UsernameTaken,
                    "that username is taken; choose another",
                )));
            }
            if let Some(h) = &ih
                && !tx.use_invite(h)?
            {
                return Ok(Err(invite_invalid()));
            }
            tx.insert_user(&u)?;
            tx.put_session(
                &th,
                &SessionRow {
                    user: u.account.id.clone(),
                    created: tx.now,
                    last_seen: tx.now,
                },
            )?;
            tx.append_audit(
                &u.account.id,
                NewEvent {
                    actor: Some((u.account.id.clone(), u.account.role)),
                    action: "account.register",
                    share: None,
                    record: None,
                    refused: None,
                    client,
                },
            )?;
            Ok(Ok(()))
        })
        .await??;
    if let Some(h) = invite_hash {
        invite::remove(&state.settings.data_dir, &h);
    }
    Ok(Json(LoginResponse {
        session: token,
        session_expires: now + state.settings.session_lifetime,
        user: user_info(&user.account),
        wrapped_keys: user.wrapped_keys,
    }))
}

fn invite_invalid() -> ApiError {
    ApiError::new(
        ErrorCode::InviteInvalid,
        "this invite code is unknown, used, expired or for another role; ask the operator for a new one",
    )
}

/// `POST /v1/auth/login`.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    AppJson(req): AppJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let username = normalize_username(&req.username).map_err(|_| invalid_credentials())?;
    // Throttle guessing per account and per client address, before any Argon2 work.
    let l = state.settings.limits.login_per_min;
    state
        .limiter
        .check(&format!("login-ip:{client:?}"), 3 * l)?;
    state.limiter.check(&format!("login-user:{username}"), l)?;
    let user = state
        .blocking(move |s| s.store.user_by_name(&username))
        .await??;
    let phc = user
        .as_ref()
        .map_or_else(|| state.dummy_phc.clone(), |u| u.auth_phc.clone());
    let auth = req.auth;
    let verified = state.blocking(move |_| verify_secret(&auth, &phc)).await?;
    let Some(user) = user else {
        // The same durable write as for a wrong password (into the server's own log), so the
        // time taken does not tell whether the name exists.
        let ev = NewEvent {
            actor: None,
            action: "account.login",
            share: None,
            record: None,
            refused: Some(ErrorCode::InvalidCredentials),
            client,
        };
        state
            .write(move |tx| tx.append_audit(&crate::store::server_log(), ev))
            .await?;
        return Err(invalid_credentials());
    };
    // A failed login is someone else's attempt (no actor), so it reaches the notifications.
    let event = |refused: Option<ErrorCode>| NewEvent {
        actor: refused
            .is_none()
            .then(|| (user.account.id.clone(), user.account.role)),
        action: "account.login",
        share: None,
        record: None,
        refused,
        client: client.clone(),
    };
    if !verified {
        let (id, ev) = (
            user.account.id.clone(),
            event(Some(ErrorCode::InvalidCredentials)),
        );
        state.write(move |tx| tx.append_audit(&id, ev)).await?;
        return Err(invalid_credentials());
    }
    let token = new_session_token();
    let (th, id, ev) = (
        crate::auth::token_hash(&token),
        user.account.id.clone(),
        event(None),
    );
    state
        .write(move |tx| {
            tx.put_session(
                &th,
                &SessionRow {
                    user: id.clone(),
                    created: tx.now,
                    last_seen: tx.now,
                },
            )?;
            tx.append_audit(&id, ev)
        })
        .await?;
    Ok(Json(LoginResponse {
        session: token,
        session_expires: healthlock_common::time::now() + state.settings.session_lifetime,
        user: user_info(&user.account),
        wrapped_keys: user.wrapped_keys,
    }))
}

/// `POST /v1/auth/logout`: ends the caller's session on the server.
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let h = caller.token_hash;
    state.write(move |tx| tx.delete_session(&h)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`.
pub async fn me(caller: Caller) -> Json<UserInfo> {
    Json(user_info(&caller.user))
}
