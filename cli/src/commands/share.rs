//! `share`, `shares`, `revoke`.

use crate::commands::vault::{list_records, resolve};
use crate::ctx::Ctx;
use crate::error::{input, integrity};
use crate::output::Share;
use anyhow::Result;
use clap::Args;
use healthlock_common::Role;
use healthlock_common::api::{
    CreateShareRequest, ServerInfo, ShareInfo, ShareRecordKeys, ShareStatus,
};
use healthlock_common::descriptor::{DESCRIPTOR_VERSION, DescriptorEntry, ShareDescriptor};
use healthlock_common::encoding::sha256_hex;
use healthlock_common::envelope::RecordKey;
use healthlock_common::time::{parse_duration, relative, rfc3339};
use healthlock_common::token::{ShareSecret, generate_passcode, verifying_key_hex};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Share records with a doctor, pharmacist or diagnostics lab for a limited time.
///
/// Prints a link, the bare token and a QR code. Whoever holds the token and is logged in with
/// the chosen role can open the share until it expires, is revoked, or its uses are spent.
#[derive(Args)]
pub struct ShareCmd {
    /// Records to share (ids or unique prefixes, from `healthlock records`).
    #[arg(required = true)]
    records: Vec<String>,
    /// Who may open it: doctor (reads all), pharmacist (prescriptions only), diagnostics (reads all).
    #[arg(long, value_parser = provider_role)]
    role: Role,
    /// How long it stays open, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    expires: u64,
    /// How many times it may be opened (default: until it expires).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    uses: Option<u32>,
    /// Also require a passcode, made now and printed: tell it to the provider separately.
    #[arg(long)]
    passcode: bool,
    /// Also write the QR code as a PNG file.
    #[arg(long)]
    qr_png: Option<PathBuf>,
    /// Also write the QR code as an SVG file.
    #[arg(long)]
    qr_svg: Option<PathBuf>,
}

/// End a share at once.
#[derive(Args)]
pub struct Revoke {
    /// Share id (or a unique prefix, from `healthlock shares`).
    share: String,
}

fn provider_role(s: &str) -> Result<Role, String> {
    match s.parse::<Role>() {
        Ok(r) if r.is_provider() => Ok(r),
        _ => Err("shares are for doctor, pharmacist or diagnostics".into()),
    }
}

impl ShareCmd {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, session) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let info: ServerInfo = api.get("/v1/info").await?;
        if self.expires > info.max_share_lifetime {
            return Err(input(format!(
                "this server allows shares of at most {}; choose a shorter --expires",
                healthlock_common::time::human_span(info.max_share_lifetime)
            )));
        }
        let all = list_records(&api, &keys, &session.user_id).await?;
        let mut chosen = Vec::new();
        for arg in &self.records {
            let rec = resolve(&all, arg, |r| r.info.id.as_str(), "record")?;
            if !chosen
                .iter()
                .any(|c: &&crate::commands::vault::Opened| c.info.id == rec.info.id)
            {
                chosen.push(rec);
            }
        }
        // Before anything else: a record the server planted or altered is refused outright.
        // The size and hash signed into the share are the patient's own (the seal), not the
        // server's listing.
        let vouched = chosen
            .iter()
            .map(|r| r.expected())
            .collect::<Result<Vec<_>>>()?;
        let visible = chosen
            .iter()
            .filter(|r| self.role.may_read(r.info.category))
            .count();
        for r in chosen
            .iter()
            .filter(|r| !self.role.may_read(r.info.category))
        {
            ctx.warn(&format!(
                "record {} ({}, {}) will be invisible to a {}, who {}",
                &r.info.id.as_str()[..12],
                r.view().title,
                r.info.category,
                self.role,
                self.role.rights()
            ));
        }
        if visible == 0 {
            return Err(input(format!(
                "a {} could read none of these records; choose others or another --role",
                self.role
            )));
        }

        let secret = ShareSecret::generate();
        let to_share = secret.age_identity().to_public();
        let mut entries = Vec::new();
        let mut envelopes = Vec::new();
        for (r, expected) in chosen.iter().zip(vouched) {
            // A record the role may not read is listed but never gets its key or title sealed
            // to the share, so the policy does not rest on the server alone.
            let (envelope, meta) = if self.role.may_read(r.info.category) {
                let key = RecordKey::open_envelope(&keys.age, &r.info.envelope).map_err(|_| {
                    integrity(format!("record {} does not open with your key", r.info.id))
                })?;
                (key.seal_to(&to_share), r.info.meta.clone())
            } else {
                (Vec::new(), Vec::new())
            };
            entries.push(DescriptorEntry {
                id: r.info.id.clone(),
                category: r.info.category,
                size: expected.size,
                hash: expected.hash,
                envelope_sha256: sha256_hex(&envelope),
                meta_sha256: sha256_hex(&meta),
            });
            envelopes.push(ShareRecordKeys {
                id: r.info.id.clone(),
                envelope,
                meta,
            });
        }
        let now = healthlock_common::time::now();
        let descriptor = ShareDescriptor {
            v: DESCRIPTOR_VERSION,
            share_id: secret.share_id(),
            origin: info.origin.clone(),
            patient: session.user_id.clone(),
            patient_recipient: keys.recipient(),
            role: self.role,
            created: now,
            expires: now + self.expires,
            records: entries,
        };
        let passcode = self.passcode.then(generate_passcode);
        let req = CreateShareRequest {
            descriptor: descriptor.sign(&secret.signing_key()),
            verify_key: verifying_key_hex(&secret.signing_key().verifying_key()),
            records: envelopes,
            max_uses: self.uses,
            passcode_proof: passcode
                .as_deref()
                .map(|p| secret.passcode_proof(p).to_vec()),
        };
        let created: ShareInfo = api.post("/v1/shares", &req).await?;
        let link = secret.to_link(&info.origin);
        if let Some(p) = &self.qr_png {
            crate::qr::write_png(&link, p)?;
        }
        if let Some(p) = &self.qr_svg {
            crate::qr::write_svg(&link, p)?;
        }
        let out = Share {
            id: created.id.clone(),
            link: link.clone(),
            token: secret.to_token(),
            expires: rfc3339(created.expires),
            role: created.role,
            records: created.records.clone(),
            uses: created.max_uses,
            passcode: passcode.clone(),
        };
        if !ctx.json && std::io::stdout().is_terminal() {
            crate::qr::print_terminal(&link);
        }
        ctx.output(&out, || {
            let mut s = format!(
                "Shared {} record(s) with a {} until {} ({}), {}.\n\nLink:  {}\nToken: {}\n",
                out.records.len(),
                out.role,
                out.expires,
                relative(created.expires),
                match out.uses {
                    Some(n) => format!("at most {n} open(s)"),
                    None => "any number of opens".into(),
                },
                out.link,
                out.token
            );
            if let Some(p) = &out.passcode {
                s.push_str(&format!(
                    "Passcode: {p}   (tell it to the provider separately; 5 wrong tries lock the share)\n"
                ));
            }
            s.push_str(&format!(
                "\nThe provider runs: healthlock fetch '{}'\nRevoke it any time: healthlock revoke {}",
                out.link,
                &out.id.as_str()[..12]
            ));
            s
        })
    }
}

fn status_text(s: ShareStatus) -> &'static str {
    match s {
        ShareStatus::Active => "active",
        ShareStatus::Expired => "expired",
        ShareStatus::Revoked => "revoked",
        ShareStatus::UsedUp => "used up",
        ShareStatus::Locked => "locked",
    }
}

/// Lists your shares with their status.
pub async fn shares(ctx: &Ctx) -> Result<()> {
    let (api, _) = ctx.authed()?;
    let list: Vec<ShareInfo> = api.get("/v1/shares").await?;
    ctx.output(&list, || {
        if list.is_empty() {
            return "No shares yet; make one with `healthlock share RECORD --role doctor`.".into();
        }
        let mut out = format!(
            "{:<12}  {:<11}  {:<8}  {:>7}  {:<22}  {}\n",
            "ID", "ROLE", "STATUS", "USES", "EXPIRES", "RECORDS"
        );
        for s in &list {
            let uses = match s.max_uses {
                Some(m) => format!("{}/{m}", s.uses),
                None => s.uses.to_string(),
            };
            out.push_str(&format!(
                "{:<12}  {:<11}  {:<8}  {:>7}  {:<22}  {}{}\n",
                &s.id.as_str()[..12],
                s.role.as_str(),
                status_text(s.status),
                uses,
                rfc3339(s.expires),
                s.records.len(),
                if s.passcode { " (passcode)" } else { "" }
            ));
        }
        out
    })
}

impl Revoke {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, _) = ctx.authed()?;
        let list: Vec<ShareInfo> = api.get("/v1/shares").await?;
        let share = resolve(&list, &self.share, |s| s.id.as_str(), "share")?;
        let after: ShareInfo = api
            .post(
                &format!("/v1/shares/{}/revoke", share.id),
                &serde_json::json!({}),
            )
            .await?;
        ctx.output(&after, || {
            format!("revoked share {}; it can no longer be opened", after.id)
        })
    }
}
