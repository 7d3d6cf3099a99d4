//! `register`, `login`, `logout`, `whoami`.

use crate::ctx::Ctx;
use crate::error::{input, integrity};
use crate::output::Account;
use crate::profile::{ProfileConfig, Session};
use crate::secret_input::{self, Source};
use anyhow::Result;
use clap::Args;
use healthlock_common::Role;
use healthlock_common::api::{
    LoginRequest, LoginResponse, PreloginRequest, PreloginResponse, RegisterRequest, UserInfo,
};
use healthlock_common::encoding::hex;
use healthlock_common::kdf::{KdfParams, MasterKey, derive_master_key};
use healthlock_common::keys::AccountKeys;
use zeroize::Zeroizing;

/// Create an account and log in.
#[derive(Args)]
pub struct Register {
    /// Account name: 3–64 letters, digits, '.', '_' or '-'.
    #[arg(long)]
    username: String,
    /// patient (self-service), or doctor, pharmacist, diagnostics (with --invite).
    #[arg(long, default_value = "patient")]
    role: Role,
    /// The invite code from the server's operator (needed for provider roles).
    #[arg(long)]
    invite: Option<String>,
    /// Read the password from the first line of stdin (else HEALTHLOCK_PASSWORD, else a prompt).
    #[arg(long)]
    password_stdin: bool,
}

/// Log in (on any machine: your keys come back, unwrapped only here).
#[derive(Args)]
pub struct Login {
    /// Account name.
    #[arg(long)]
    username: String,
    /// Read the password from the first line of stdin (else HEALTHLOCK_PASSWORD, else a prompt).
    #[arg(long)]
    password_stdin: bool,
}

const MIN_PASSWORD: usize = 10;

fn password(stdin: bool, confirm: bool) -> Result<Zeroizing<String>> {
    secret_input::read(
        &Source {
            stdin,
            env: "HEALTHLOCK_PASSWORD",
            prompt: "Password: ",
            flag: "--password-stdin",
        },
        confirm,
    )
}

/// Argon2id on a blocking thread (about 0.15 s at the minimum cost).
async fn derive(password: Zeroizing<String>, salt: Vec<u8>, kdf: KdfParams) -> Result<MasterKey> {
    Ok(
        tokio::task::spawn_blocking(move || derive_master_key(password.as_bytes(), &salt, &kdf))
            .await??,
    )
}

fn save(ctx: &Ctx, server: &str, resp: &LoginResponse, keys: &AccountKeys) -> Result<Account> {
    let session = Session {
        server: server.to_owned(),
        username: resp.user.username.clone(),
        user_id: resp.user.id.clone(),
        role: resp.user.role,
        token: resp.session.clone(),
        expires: resp.session_expires,
        age_recipient: resp.user.age_recipient.clone(),
    };
    ctx.profile.save_login(&session, keys)?;
    let mut config = ctx.profile.config()?;
    if config.server.as_deref() != Some(server) {
        config = ProfileConfig {
            server: Some(server.to_owned()),
            server_key: None,
        };
    }
    ctx.profile.save_config(&config)?;
    Ok(Account {
        username: session.username,
        role: session.role,
        id: session.user_id,
        server: session.server,
        server_key: None,
    })
}

impl Register {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        if self.role == Role::Admin {
            return Err(input(
                "admin accounts are not registered; operators use healthlock-server",
            ));
        }
        if self.role.is_provider() && self.invite.is_none() {
            return Err(input(format!(
                "a {0} account needs an invite code from the server's operator; pass --invite CODE \
                 (the operator runs `healthlock-server invite --role {0}`)",
                self.role
            )));
        }
        let api = ctx.api()?;
        let password = password(self.password_stdin, true)?;
        if password.chars().count() < MIN_PASSWORD {
            return Err(input(format!(
                "a password needs at least {MIN_PASSWORD} characters; a passphrase of four words is better"
            )));
        }
        let salt = healthlock_common::random_bytes::<16>().to_vec();
        let kdf = KdfParams::default();
        let master = derive(password, salt.clone(), kdf).await?;
        let keys = AccountKeys::generate();
        let req = RegisterRequest {
            username: self.username,
            role: self.role,
            invite: self.invite,
            salt,
            kdf,
            auth: master.auth_value().to_vec(),
            age_recipient: keys.recipient(),
            ed25519_public: keys.verifying_key_hex(),
            wrapped_keys: keys.wrap(&master.wrap_identity()),
        };
        let resp: LoginResponse = api.post("/v1/auth/register", &req).await?;
        // Check (or pin) the server's audit key before keeping the session: a server whose key
        // changed does not get this profile logged in.
        let key = hex(crate::pin::server_key(ctx, &api).await?.as_bytes());
        let mut account = save(ctx, &api.base, &resp, &keys)?;
        account.server_key = Some(key);
        ctx.output(&account, || {
            format!(
                "Registered {} as a {} at {}; you are logged in.",
                account.username, account.role, account.server
            )
        })
    }
}

impl Login {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let api = ctx.api()?;
        let pre: PreloginResponse = api
            .post(
                "/v1/auth/prelogin",
                &PreloginRequest {
                    username: self.username.clone(),
                },
            )
            .await?;
        let password = password(self.password_stdin, false)?;
        let master = derive(password, pre.salt, pre.kdf).await?;
        let resp: LoginResponse = api
            .post(
                "/v1/auth/login",
                &LoginRequest {
                    username: self.username,
                    auth: master.auth_value().to_vec(),
                },
            )
            .await?;
        let keys =
            AccountKeys::unwrap(&resp.wrapped_keys, &master.wrap_identity()).map_err(|_| {
                integrity("the server accepted the password but returned keys it does not open")
            })?;
        if keys.recipient() != resp.user.age_recipient {
            return Err(integrity("the server returned keys of another account"));
        }
        // Check (or pin) the server's audit key before keeping the session: a server whose key
        // changed does not get this profile logged in.
        let key = hex(crate::pin::server_key(ctx, &api).await?.as_bytes());
        let mut account = save(ctx, &api.base, &resp, &keys)?;
        account.server_key = Some(key);
        ctx.output(&account, || {
            format!(
                "Logged in as {} ({}) at {}.",
                account.username, account.role, account.server
            )
        })
    }
}

/// Ends the session on the server and forgets it (and the keys) here.
pub async fn logout(ctx: &Ctx) -> Result<()> {
    let mut server_ended = false;
    if let Ok((api, _)) = ctx.authed() {
        server_ended = api
            .send(api.request(reqwest::Method::POST, "/v1/auth/logout"))
            .await
            .is_ok();
    }
    let removed = ctx.profile.clear_login()?;
    let value = serde_json::json!({ "logged_out": removed, "server_session_ended": server_ended });
    ctx.output(&value, || match (removed, server_ended) {
        (false, _) => "Not logged in.".to_owned(),
        (true, true) => "Logged out; the session is ended on the server and the keys are removed here.".to_owned(),
        (true, false) => "Logged out here (keys removed); the server could not be told, so the session ends by itself when it expires.".to_owned(),
    })
}

/// Shows who this profile is logged in as, checked with the server.
pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let (api, session) = ctx.authed()?;
    let me: UserInfo = api.get("/v1/me").await?;
    let key = hex(crate::pin::server_key(ctx, &api).await?.as_bytes());
    let account = Account {
        username: me.username,
        role: me.role,
        id: me.id,
        server: session.server,
        server_key: Some(key.clone()),
    };
    ctx.output(&account, || {
        format!(
            "{} ({}) at {}\naccount id {}\nsession ends {}\nserver audit key {} (pinned)",
            account.username,
            account.role,
            account.server,
            account.id,
            healthlock_common::time::relative(session.expires),
            key
        )
    })
}
