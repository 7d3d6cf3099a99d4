//! The provider's side: `fetch` (open a share and decrypt what it allows) and `attach`
//! (a doctor adds a record to the patient's vault through a share).

use crate::client::Api;
use crate::commands::vault::SentRecord;
use crate::ctx::Ctx;
use crate::error::{CliError, input, integrity};
use crate::output::{Fetch, FetchedFile};
use crate::secret_input::{self, Source};
use crate::transfer::{Expected, download_decrypted, progress};
use anyhow::Result;
use clap::Args;
use healthlock_common::api::{
    AuditProof, Challenge, ErrorCode, OpenRequest, OpenResponse, RecordInfo,
};
use healthlock_common::audit;
use healthlock_common::descriptor::{DescriptorEntry, ShareDescriptor};
use healthlock_common::encoding::{hex, sha256_hex};
use healthlock_common::envelope::{RecordKey, RecordMeta};
use healthlock_common::token::{ShareSecret, normalize_origin, parse_link_or_token};
use healthlock_common::{Category, Role, UserId, keys};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Open a share and write the records your role may read, decrypted, into a directory.
#[derive(Args)]
pub struct FetchCmd {
    /// The link (https://SERVER/s#hl1…) or bare token (hl1…) the patient gave you.
    link: String,
    /// Directory to write the files into.
    #[arg(short = 'o', long, default_value = ".")]
    output: PathBuf,
    /// Read the share's passcode from stdin (else HEALTHLOCK_PASSCODE, else a prompt if needed).
    #[arg(long)]
    passcode_stdin: bool,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// As a doctor, add a record (a note, prescription or referral) to the patient's vault.
#[derive(Args)]
pub struct Attach {
    /// The link or token of a share the patient made for you.
    link: String,
    /// The file to attach.
    file: PathBuf,
    /// Its category.
    #[arg(long, default_value = "note")]
    category: Category,
    /// A title (default: the file name). Encrypted to the patient.
    #[arg(long)]
    title: Option<String>,
    /// Read the share's passcode from stdin (else HEALTHLOCK_PASSCODE, else a prompt if needed).
    #[arg(long)]
    passcode_stdin: bool,
}

/// A share opened and verified.
struct Opened {
    api: Api,
    secret: ShareSecret,
    descriptor: ShareDescriptor,
    resp: OpenResponse,
}

fn passcode_source(stdin: bool) -> Source<'static> {
    Source {
        stdin,
        env: "HEALTHLOCK_PASSCODE",
        prompt: "Passcode for this share: ",
        flag: "--passcode-stdin",
    }
}

/// Proves possession of the token, opens the share, and verifies everything the server returned
/// against the descriptor the patient signed — before any file is written.
async fn open_share(ctx: &Ctx, link: &str, passcode_stdin: bool) -> Result<Opened> {
    let parsed = parse_link_or_token(link)
        .map_err(|e| input(format!("{e}; copy the whole link or token again")))?;
    let session = ctx.session()?;
    let server = match parsed.origin {
        Some(o) => o,
        None => ctx.server()?,
    };
    if normalize_origin(&session.server)? != server {
        return Err(input(format!(
            "this link is for {server}, but this profile is logged in at {}; \
             log in there with `healthlock --server {server} login`",
            session.server
        )));
    }
    let api = Api::new(&server)?.with_token(&session.token);
    let secret = parsed.secret;
    let id = secret.share_id();
    let mut passcode: Option<Zeroizing<String>> =
        if passcode_stdin || std::env::var_os("HEALTHLOCK_PASSCODE").is_some() {
            Some(secret_input::read(&passcode_source(passcode_stdin), false)?)
        } else {
            None
        };
    let resp = loop {
        let challenge: Challenge = api
            .post(
                &format!("/v1/shares/{id}/challenge"),
                &serde_json::json!({}),
            )
            .await?;
        let req = OpenRequest {
            nonce: challenge.nonce.clone(),
            origin: server.clone(),
            signature: secret
                .sign_open(&server, &challenge.nonce)
                .to_bytes()
                .to_vec(),
            passcode_proof: passcode
                .as_deref()
                .map(|p| secret.passcode_proof(p).to_vec()),
        };
        match api
            .post::<_, OpenResponse>(&format!("/v1/shares/{id}/open"), &req)
            .await
        {
            Err(e) => {
                let needs = matches!(e.downcast_ref::<CliError>(), Some(CliError::Server(b)) if b.code == ErrorCode::PasscodeRequired);
                if needs
                    && passcode.is_none()
                    && std::io::stdin().is_terminal()
                    && std::io::stderr().is_terminal()
                {
                    passcode = Some(secret_input::read(&passcode_source(false), false)?);
                    continue;
                }
                return Err(e);
            }
            Ok(resp) => break resp,
        }
    };
    let descriptor = resp
        .descriptor
        .verify(&secret.signing_key().verifying_key())
        .map_err(|_| integrity("the share descriptor's signature does not verify"))?;
    if descriptor.share_id != id || descriptor.origin != server {
        return Err(integrity("the descriptor is for another share or server"));
    }
    if descriptor.role != session.role {
        return Err(integrity(
            "the descriptor names another role than the server let open",
        ));
    }
    let mut seen = HashSet::new();
    for r in &resp.records {
        let entry = descriptor.entry(&r.id).ok_or_else(|| {
            integrity(format!(
                "the server added record {} that the patient did not share",
                r.id
            ))
        })?;
        if sha256_hex(&r.envelope) != entry.envelope_sha256
            || sha256_hex(&r.meta) != entry.meta_sha256
        {
            return Err(integrity(format!(
                "record {}'s key or title was altered",
                r.id
            )));
        }
        seen.insert(r.id.clone());
    }
    for w in &resp.withheld {
        let entry = descriptor
            .entry(w)
            .ok_or_else(|| integrity("the server withheld an unknown record"))?;
        if session.role.may_read(entry.category) {
            return Err(integrity(format!(
                "the server withheld record {w}, which a {} may read",
                session.role
            )));
        }
        seen.insert(w.clone());
    }
    seen.extend(resp.missing.iter().cloned());
    let key = crate::pin::server_key(ctx, &api).await?;
    check_audit_proof(&resp.audit, &key, &server, &descriptor, &session.user_id)?;
    if descriptor.records.iter().any(|e| !seen.contains(&e.id)) {
        return Err(integrity(
            "the server left out records of the share without saying why",
        ));
    }
    Ok(Opened {
        api,
        secret,
        descriptor,
        resp,
    })
}

/// Checks that the open was durably audited in the patient's log before anything is released:
/// the event is this open, it links to the chain, and the checkpoint ending in it is signed by
/// the server key this profile pinned.
fn check_audit_proof(
    proof: &AuditProof,
    key: &ed25519_dalek::VerifyingKey,
    origin: &str,
    descriptor: &ShareDescriptor,
    me: &UserId,
) -> Result<()> {
    let bad = |why: &str| {
        integrity(format!(
            "the server's proof that this access was audited {why}"
        ))
    };
    let cp = &proof.checkpoint;
    cp.verify(key)
        .map_err(|_| bad("is not signed by the pinned server key"))?;
    if cp.origin != origin || cp.log != descriptor.patient {
        return Err(bad("is for another log"));
    }
    let prev = audit::parse_hash(&proof.prev).map_err(|_| bad("is malformed"))?;
    let hash = hex(&audit::link(&prev, proof.event.entry.as_bytes()));
    if hash != proof.event.hash || hash != cp.head {
        return Err(bad("does not add up"));
    }
    let e = proof
        .event
        .linked()
        .parse()
        .map_err(|_| bad("is malformed"))?;
    let this_open = e.seq == cp.size
        && e.action == "share.open"
        && e.allowed
        && e.share.as_ref() == Some(&descriptor.share_id)
        && e.actor.as_ref() == Some(me);
    if !this_open {
        return Err(bad("describes another event"));
    }
    Ok(())
}

/// Picks a file name not yet used in this fetch.
fn unique_name(used: &mut HashSet<String>, name: &str) -> String {
    let mut candidate = name.to_owned();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
        _ => (name.to_owned(), String::new()),
    };
    let mut n = 2;
    while !used.insert(candidate.clone()) {
        candidate = format!("{stem} ({n}){ext}");
        n += 1;
    }
    candidate
}

impl FetchCmd {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let opened = open_share(ctx, &self.link, self.passcode_stdin).await?;
        let share_id = opened.secret.share_id();
        let share_identity = opened.secret.age_identity();
        // Open every key and title first, so nothing is written unless all of it checks out.
        let mut plan = Vec::new();
        let mut used = HashSet::new();
        for r in &opened.resp.records {
            let key = RecordKey::open_envelope(&share_identity, &r.envelope).map_err(|_| {
                integrity(format!(
                    "record {}'s key does not open with this token",
                    r.id
                ))
            })?;
            let meta = RecordMeta::open(&key, &r.meta)
                .map_err(|_| integrity(format!("record {}'s title does not decrypt", r.id)))?;
            let entry = opened
                .descriptor
                .entry(&r.id)
                .expect("checked in open_share")
                .clone();
            let dest = self.output.join(unique_name(&mut used, &meta.filename));
            if !self.force && dest.exists() {
                return Err(CliError::Exists(dest).into());
            }
            plan.push((key, meta, entry, dest));
        }
        // Every body is downloaded, checked and decrypted into a staging directory first; the
        // files move into place only when all of them check out, so a tampered share leaves
        // nothing behind.
        std::fs::create_dir_all(&self.output)?;
        let stage = self.output.join(format!(
            ".healthlock-partial-{}",
            healthlock_common::encoding::hex(&healthlock_common::random_bytes::<8>())
        ));
        std::fs::create_dir(&stage)?;
        let staged = self.download_all(ctx, &opened, plan, &stage).await;
        let moved = staged.and_then(|staged| {
            staged
                .into_iter()
                .map(|(file, tmp)| {
                    let dest = PathBuf::from(&file.path);
                    if !self.force && dest.exists() {
                        return Err(CliError::Exists(dest).into());
                    }
                    std::fs::rename(&tmp, &dest)?;
                    Ok(file)
                })
                .collect::<Result<Vec<_>>>()
        });
        let _ = std::fs::remove_dir_all(&stage);
        let files = moved?;
        // Make the renames durable before saying the files are there.
        if let Ok(dir) = std::fs::File::open(&self.output) {
            let _ = dir.sync_all();
        }
        let out = Fetch {
            share: share_id,
            files,
            withheld: opened.resp.withheld.clone(),
            missing: opened.resp.missing.clone(),
        };
        let role = opened.descriptor.role;
        ctx.output(&out, || {
            let mut s = format!(
                "Fetched {} file(s) shared with a {role}:\n",
                out.files.len()
            );
            for f in &out.files {
                s.push_str(&format!(
                    "  {}  ({}, {}, sha256 {})\n",
                    f.path,
                    f.category,
                    crate::commands::vault::human_size(f.size),
                    &f.sha256[..16]
                ));
            }
            if !out.withheld.is_empty() {
                s.push_str(&format!(
                    "{} record(s) in this share are not for your role: a {role} {}.\n",
                    out.withheld.len(),
                    role.rights()
                ));
            }
            if !out.missing.is_empty() {
                s.push_str(&format!(
                    "{} record(s) were deleted by the patient since sharing.\n",
                    out.missing.len()
                ));
            }
            s
        })
    }
}

impl FetchCmd {
    /// Downloads each planned record into `stage`; returns the results and their staged paths.
    async fn download_all(
        &self,
        ctx: &Ctx,
        opened: &Opened,
        plan: Vec<(RecordKey, RecordMeta, DescriptorEntry, PathBuf)>,
        stage: &std::path::Path,
    ) -> Result<Vec<(FetchedFile, PathBuf)>> {
        let share_id = opened.secret.share_id();
        let mut out = Vec::new();
        for (i, (key, meta, entry, dest)) in plan.into_iter().enumerate() {
            let pb = progress(ctx.interactive(), entry.size, &meta.filename);
            let tmp = stage.join(i.to_string());
            let written = download_decrypted(
                &opened.api,
                &format!("/v1/shares/{share_id}/records/{}", entry.id),
                key.into_identity(),
                &Expected {
                    size: entry.size,
                    hash: entry.hash.clone(),
                },
                &tmp,
                true,
                pb,
            )
            .await?;
            out.push((
                FetchedFile {
                    record: entry.id,
                    path: dest.display().to_string(),
                    sha256: written.sha256,
                    size: written.size,
                    title: meta.title,
                    category: entry.category,
                    sealed: None,
                },
                tmp,
            ));
        }
        Ok(out)
    }
}

impl Attach {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let session = ctx.session()?;
        if !session.role.may_attach() {
            return Err(input(format!(
                "only doctors can attach records; you are logged in as a {}",
                session.role
            )));
        }
        let md = std::fs::metadata(&self.file)
            .map_err(|e| input(format!("cannot read {}: {e}", self.file.display())))?;
        if !md.is_file() {
            return Err(input(format!(
                "{} is not a regular file",
                self.file.display()
            )));
        }
        let opened = open_share(ctx, &self.link, self.passcode_stdin).await?;
        if opened.descriptor.role != Role::Doctor {
            return Err(input(
                "this share was not made for a doctor; attaching needs a doctor share",
            ));
        }
        let patient = keys::parse_recipient(&opened.descriptor.patient_recipient)
            .map_err(|_| integrity("the descriptor's patient key is invalid"))?;
        let share_id = opened.secret.share_id();
        let sent: SentRecord<RecordInfo> = crate::commands::vault::send_record(
            ctx,
            &opened.api,
            &format!("/v1/shares/{share_id}/records"),
            &self.file,
            self.category,
            self.title.clone(),
            &patient,
        )
        .await?;
        let info = sent.answer;
        if info.hash != sent.sent.hash || info.size != sent.sent.size {
            return Err(integrity(format!(
                "the server stored different bytes for {} than were sent (record {})",
                self.file.display(),
                info.id
            )));
        }
        let title = sent.meta.title;
        let out = serde_json::json!({
            "record": info.id, "share": share_id, "category": info.category, "title": title,
        });
        ctx.output(&out, || {
            format!(
                "attached {} to the patient's vault as record {} ({}); it is encrypted to the patient",
                self.file.display(),
                info.id,
                info.category
            )
        })
    }
}
