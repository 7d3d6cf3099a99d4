//! `healthlock-server`: run the server, or make an invite for a provider account.

use clap::{Args, Parser, Subcommand};
use healthlock_common::Role;
use healthlock_server::settings::{Settings, parse_size};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// HealthLock server: holds only ciphertext, enforces roles, audits every access.
///
/// With no subcommand it serves, as `serve` does.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// Make a one-time invite code for a doctor, pharmacist or diagnostics account.
    ///
    /// Works while a server runs on the same data directory.
    Invite(InviteArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory: the store, the encrypted blobs and the invite spool.
    #[arg(long, default_value = "healthlock-data", env = "HEALTHLOCK_DATA")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "HEALTHLOCK_BIND")]
    bind: SocketAddr,
    /// Largest accepted upload, e.g. 512MiB or 2GiB.
    #[arg(long, default_value = "512MiB", value_parser = parse_size, env = "HEALTHLOCK_MAX_UPLOAD")]
    max_upload: u64,
    /// The address clients reach this server at (put in links and signed by clients);
    /// defaults to http://<bound address>. Set it when behind a proxy or TLS terminator.
    #[arg(long, env = "HEALTHLOCK_PUBLIC_URL")]
    public_url: Option<String>,
    /// Longest share lifetime a patient may choose, e.g. 30d.
    #[arg(long, default_value = "30d", value_parser = healthlock_common::time::parse_duration, env = "HEALTHLOCK_MAX_SHARE_LIFETIME")]
    max_share_lifetime: u64,
    /// Let webhooks target loopback, private and link-local addresses (off by default, against
    /// SSRF; turn on only when receivers live on your own network).
    #[arg(long, env = "HEALTHLOCK_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Logins a minute per account name; per client address: three times as many logins and
    /// registrations, six times as many prelogins.
    #[arg(long, default_value_t = 10, env = "HEALTHLOCK_LOGIN_RATE")]
    login_rate: u32,
    /// A reverse proxy in front of the server (repeat, or separate with commas): requests from
    /// it are attributed to the client its X-Forwarded-For names, for rate limits and audit.
    #[arg(
        long = "trusted-proxy",
        value_delimiter = ',',
        env = "HEALTHLOCK_TRUSTED_PROXY"
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// How much one patient's vault may hold, e.g. 10GiB.
    #[arg(long, default_value = "10GiB", value_parser = parse_size, env = "HEALTHLOCK_QUOTA")]
    quota: u64,
    /// Share opens a minute per account (per client address: twice as many; challenges per
    /// account: twice as many).
    #[arg(long, default_value_t = 60, env = "HEALTHLOCK_OPEN_RATE")]
    open_rate: u32,
}

#[derive(Args)]
struct InviteArgs {
    /// Data directory of the server the invite is for.
    #[arg(long, default_value = "healthlock-data", env = "HEALTHLOCK_DATA")]
    data: PathBuf,
    /// Role of the account the invite creates.
    #[arg(long, value_parser = provider_role)]
    role: Role,
    /// How long the invite stays valid, e.g. 7d.
    #[arg(long, default_value = "7d", value_parser = healthlock_common::time::parse_duration)]
    expires: u64,
    /// Print `{"invite": CODE}`.
    #[arg(long)]
    json: bool,
}

fn provider_role(s: &str) -> Result<Role, String> {
    match s.parse::<Role>() {
        Ok(r) if r.is_provider() => Ok(r),
        _ => Err("invites are for doctor, pharmacist or diagnostics accounts".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Invite(args)) => invite(args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn invite(args: InviteArgs) -> ExitCode {
    match healthlock_server::invite::create(&args.data, args.role, args.expires) {
        Ok(code) => {
            if args.json {
                println!("{}", serde_json::json!({ "invite": code }));
            } else {
                println!("{code}");
                eprintln!(
                    "invite for a {} account, valid {}; give it to the person, who runs:\n  \
                     healthlock register --username NAME --role {} --invite {code}",
                    args.role,
                    healthlock_common::time::human_span(args.expires),
                    args.role
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: could not write the invite into {}: {e}",
                args.data.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    let settings = Settings {
        data_dir: args.data,
        bind: args.bind,
        max_upload: args.max_upload,
        public_url: args.public_url,
        max_share_lifetime: args.max_share_lifetime,
        allow_private_webhooks: args.allow_private_webhooks,
        quota: args.quota,
        trusted_proxies: args.trusted_proxies,
        limits: healthlock_server::ratelimit::Limits {
            login_per_min: args.login_rate,
            open_per_min: args.open_rate,
        },
        ..Settings::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
        healthlock_server::serve(settings, listener, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
