//! `healthlock`: keep health records encrypted on a HealthLock server and share them for a
//! limited time with doctors, pharmacists and labs.
//!
//! Exit codes (docs/cli.md): 0 success, 1 other error, 2 usage, 3 server unreachable,
//! 4 not logged in, 5 wrong username or password, 6 not allowed for your role, 7 not found,
//! 8 share made for another role, 9 share expired, 10 share revoked, 11 share used up,
//! 12 passcode required or wrong, 13 share locked, 14 integrity check failed, 15 invalid input,
//! 16 file exists, 17 invite missing or invalid, 18 too large or server full, 19 name taken,
//! 20 too many attempts (wait and retry).

mod client;
mod commands;
mod ctx;
mod error;
mod output;
mod pin;
mod profile;
mod qr;
mod secret_input;
mod transfer;

use clap::{Parser, Subcommand};
use commands::{account, audit, fetch, share, vault, webhook};
use error::CliError;
use std::process::ExitCode;

/// Share health records safely, for a limited time, with proof of who looked.
///
/// Documents are encrypted with age on this machine; the server stores only ciphertext.
///
/// Patients: register, upload, share. Providers: register with an invite, then fetch.
///
///   healthlock register --username alice
///   healthlock upload scan.pdf --category lab
///   healthlock share 3f2a --role doctor --expires 24h
///   healthlock fetch 'http://127.0.0.1:8080/s#hl1…'
///
/// Passwords come from a prompt, --password-stdin or HEALTHLOCK_PASSWORD — never from arguments.
#[derive(Parser)]
#[command(name = "healthlock", version, verbatim_doc_comment)]
struct Cli {
    /// Server address (default: the profile's, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "HEALTHLOCK_SERVER")]
    server: Option<String>,
    /// Profile name: one login per profile (stored under $XDG_CONFIG_HOME/healthlock/profiles).
    #[arg(
        long,
        global = true,
        env = "HEALTHLOCK_PROFILE",
        default_value = "default"
    )]
    profile: String,
    /// Print one JSON document on stdout; errors as {"error": {"code", "message"}} on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account (patients freely; providers with an operator's invite) and log in.
    Register(account::Register),
    /// Log in; works on a fresh machine, your keys are restored from the server.
    Login(account::Login),
    /// End the session on the server and remove the keys from this machine.
    Logout,
    /// Show the account this profile is logged in as.
    Whoami,
    /// Encrypt files here and store them in your vault.
    Upload(vault::Upload),
    /// List your records (titles are decrypted here).
    Records,
    /// Decrypt one of your records into a file.
    Download(vault::Download),
    /// Delete one of your records.
    Delete(vault::Delete),
    /// Share records with a provider for a limited time: prints a link, a token and a QR code.
    Share(share::ShareCmd),
    /// List your shares and their status.
    Shares,
    /// End a share at once.
    Revoke(share::Revoke),
    /// Open a share you were given and write the files your role may read.
    Fetch(fetch::FetchCmd),
    /// As a doctor, add a record to the patient's vault through their share.
    Attach(fetch::Attach),
    /// Show or verify your audit log: every access to your data, allowed or refused.
    Audit(audit::Audit),
    /// Show accesses to your data since you last looked, or --watch them live.
    Notifications(audit::Notifications),
    /// Have the server POST each access to your data, signed, to a URL of yours.
    #[command(subcommand)]
    Webhook(webhook::Webhook),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = ctx::Ctx {
        json: cli.json,
        profile: profile::Profile::open(&cli.profile)?,
        server_flag: cli.server,
    };
    match cli.command {
        Command::Register(c) => c.run(&ctx).await,
        Command::Login(c) => c.run(&ctx).await,
        Command::Logout => account::logout(&ctx).await,
        Command::Whoami => account::whoami(&ctx).await,
        Command::Upload(c) => c.run(&ctx).await,
        Command::Records => vault::records(&ctx).await,
        Command::Download(c) => c.run(&ctx).await,
        Command::Delete(c) => c.run(&ctx).await,
        Command::Share(c) => c.run(&ctx).await,
        Command::Shares => share::shares(&ctx).await,
        Command::Revoke(c) => c.run(&ctx).await,
        Command::Fetch(c) => c.run(&ctx).await,
        Command::Attach(c) => c.run(&ctx).await,
        Command::Audit(c) => c.run(&ctx).await,
        Command::Notifications(c) => c.run(&ctx).await,
        Command::Webhook(c) => c.run(&ctx).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err, json),
    }
}

/// Prints an error (plain or JSON) and picks the exit code.
fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    if let Some(io) = err.downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let typed = err.chain().find_map(|e| e.downcast_ref::<CliError>());
    let (code, exit) = match typed {
        Some(t) => (t.code(), t.exit_code()),
        None => ("error", 1),
    };
    let message = format!("{err:#}");
    if json {
        eprintln!(
            "{}",
            serde_json::json!({ "error": { "code": code, "message": message } })
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(exit)
}
