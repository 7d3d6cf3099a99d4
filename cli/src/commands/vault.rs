//! The patient's vault: `upload`, `records`, `download`, `delete`.

use crate::client::Api;
use crate::ctx::Ctx;
use crate::error::{input, integrity};
use crate::output::{FetchedFile, Record};
use crate::transfer::{Expected, Sent, download_decrypted, progress, upload_encrypted};
use anyhow::Result;
use clap::Args;
use healthlock_common::api::{
    HEADER_CATEGORY, HEADER_ENVELOPE, HEADER_META, PendingUpload, RecordInfo, SealRecordRequest,
};
use healthlock_common::encoding::b64;
use healthlock_common::envelope::{RecordKey, RecordMeta};
use healthlock_common::keys::AccountKeys;
use healthlock_common::record_seal::RecordSeal;
use healthlock_common::time::rfc3339;
use healthlock_common::{Category, UserId};
use reqwest::Method;
use std::path::PathBuf;

/// Encrypt files on this machine and store them in your vault.
#[derive(Args)]
pub struct Upload {
    /// Files to upload (PDFs, images, anything).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// What the documents are; pharmacists can read only `prescription`.
    #[arg(long, default_value = "other")]
    category: Category,
    /// A title (default: the file name). Encrypted: the server never sees it.
    #[arg(long)]
    title: Option<String>,
}

/// Decrypt a record from your vault into a file.
#[derive(Args)]
pub struct Download {
    /// Record id (or a unique prefix of it, from `healthlock records`).
    record: String,
    /// Where to write (a file, or a directory to put the original file name in).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
    /// Download a record that carries no valid seal of yours: a doctor's attachment, one stored
    /// before HealthLock sealed uploads, or one the server planted or altered. Check what you get
    /// before you trust it.
    #[arg(long)]
    allow_unsealed: bool,
    /// Download a record that carries no valid seal of yours, then seal it as downloaded, so that
    /// `share` accepts it and any later change is caught. Check the file: the seal vouches for it.
    #[arg(long, conflicts_with = "allow_unsealed")]
    seal: bool,
}

/// Delete a record from your vault (its body is removed; audit events keep its id).
#[derive(Args)]
pub struct Delete {
    /// Record id (or a unique prefix of it).
    record: String,
}

/// A vault record with its metadata decrypted.
pub struct Opened {
    /// As the server holds it.
    pub info: RecordInfo,
    /// The record key, if the envelope opened.
    pub key: Option<RecordKey>,
    /// Title and file name, if they decrypted.
    pub meta: Option<RecordMeta>,
    /// Whether the patient's seal verifies with the patient's own key.
    pub sealed: bool,
}

impl Opened {
    /// The JSON/human view.
    pub fn view(&self) -> Record {
        let meta = self.meta.clone().unwrap_or(RecordMeta {
            title: "<cannot decrypt>".into(),
            filename: "record".into(),
            size: 0,
        });
        Record {
            id: self.info.id.clone(),
            title: meta.title,
            filename: meta.filename,
            category: self.info.category,
            size: meta.size,
            created: rfc3339(self.info.created),
            sealed: self.sealed,
            added_by: self.info.added_by.clone(),
        }
    }

    /// The ciphertext's size and hash as the server lists them, vouched for or not.
    fn listed(&self) -> Expected {
        Expected {
            size: self.info.size,
            hash: self.info.hash.clone(),
        }
    }

    /// The ciphertext's size and hash as the patient's seal states them. A record without a
    /// valid seal is refused: nothing but the server's word vouches for it, and the server may
    /// have planted it or swapped its contents (a doctor's attachment is sealed once the patient
    /// has checked it, with `download --seal`).
    pub fn expected(&self) -> Result<Expected> {
        if self.sealed {
            return Ok(self.listed());
        }
        let short = &self.info.id.as_str()[..12];
        let next = match &self.info.added_by {
            Some(doctor) => format!(
                "The server says {doctor} attached it: check it with `healthlock download {short} \
                 --seal`, which asks before it seals what it downloaded, or delete it"
            ),
            None => format!(
                "If you uploaded it with a HealthLock that did not seal uploads yet, check it with \
                 `healthlock download {short} --seal`; otherwise the server planted or altered \
                 it: delete it"
            ),
        };
        Err(integrity(format!(
            "record {} carries no valid seal of yours, so only the server vouches for it. {next}",
            self.info.id
        )))
    }
}

/// Opens a record's envelope and metadata with the patient's key, and checks the patient's seal
/// (`me` is the patient's account).
pub fn open_record(keys: &AccountKeys, me: &UserId, info: RecordInfo) -> Opened {
    let key = RecordKey::open_envelope(&keys.age, &info.envelope).ok();
    let meta = key
        .as_ref()
        .and_then(|k| RecordMeta::open(k, &info.meta).ok());
    let sealed = info.seal.as_deref().is_some_and(|seal| {
        RecordSeal {
            owner: me,
            id: &info.id,
            category: info.category,
            size: info.size,
            hash: &info.hash,
            envelope: &info.envelope,
            meta: &info.meta,
        }
        .verify(&keys.signing.verifying_key(), seal)
        .is_ok()
    });
    Opened {
        info,
        key,
        meta,
        sealed,
    }
}

/// Every record in the vault, decrypted and checked.
pub async fn list_records(api: &Api, keys: &AccountKeys, me: &UserId) -> Result<Vec<Opened>> {
    let infos: Vec<RecordInfo> = api.get("/v1/records").await?;
    Ok(infos
        .into_iter()
        .map(|i| open_record(keys, me, i))
        .collect())
}

/// Finds the one record whose id is `arg` or starts with it.
pub fn resolve<'a, T>(
    items: &'a [T],
    arg: &str,
    id: impl Fn(&T) -> &str,
    what: &str,
) -> Result<&'a T> {
    let arg = arg.trim().to_ascii_lowercase();
    if arg.len() < 4 {
        return Err(input(format!(
            "give at least 4 characters of the {what} id"
        )));
    }
    let mut found = items.iter().filter(|i| id(i).starts_with(&arg));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(
            crate::error::CliError::Server(healthlock_common::api::ErrorBody {
                code: healthlock_common::api::ErrorCode::NotFound,
                message: format!("no {what} {arg}; list them with `healthlock {what}s`"),
                at: None,
                attempts_left: None,
                retry_after: None,
            })
            .into(),
        ),
        (Some(_), Some(_)) => Err(input(format!(
            "{arg} matches several {what}s; give more of the id"
        ))),
    }
}

/// A size in B, KiB, MiB or GiB.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The records table.
pub fn table(records: &[Record]) -> String {
    if records.is_empty() {
        return "No records yet; add one with `healthlock upload FILE --category lab`.".into();
    }
    let mut out = format!(
        "{:<12}  {:<12}  {:>10}  {:<20}  {}\n",
        "ID", "CATEGORY", "SIZE", "CREATED", "TITLE"
    );
    for r in records {
        let by = match (&r.added_by, r.sealed) {
            (Some(d), true) => format!("  (added by {d})"),
            (Some(d), false) => {
                format!("  (added by {d}; not sealed by you: see `healthlock download --help`)")
            }
            (None, true) => String::new(),
            (None, false) => "  (NOT SEALED by you: see `healthlock download --help`)".into(),
        };
        out.push_str(&format!(
            "{:<12}  {:<12}  {:>10}  {:<20}  {}{by}\n",
            &r.id.as_str()[..12],
            r.category,
            human_size(r.size),
            r.created,
            r.title
        ));
    }
    out
}

impl Upload {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        if self.title.is_some() && self.files.len() > 1 {
            return Err(input(
                "--title names one file; upload several files without it (each is titled by its name)",
            ));
        }
        let (api, session) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let patient = keys.age.to_public();
        for f in &self.files {
            let md = std::fs::metadata(f)
                .map_err(|e| input(format!("cannot read {}: {e}", f.display())))?;
            if !md.is_file() {
                return Err(input(format!("{} is not a regular file", f.display())));
            }
        }
        let mut done = Vec::new();
        for file in &self.files {
            let sent: SentRecord<PendingUpload> = send_record(
                ctx,
                &api,
                "/v1/records",
                file,
                self.category,
                self.title.clone(),
                &patient,
            )
            .await?;
            let opened = seal_upload(&api, &keys, &session.user_id, sent).await?;
            let view = opened.view();
            if !ctx.json {
                println!(
                    "uploaded {} → record {} ({}, {})",
                    file.display(),
                    view.id,
                    view.category,
                    human_size(view.size)
                );
            }
            done.push(view);
        }
        if ctx.json {
            ctx.output(&done, String::new)?;
        }
        Ok(())
    }
}

/// A record's body sent, with what its sender made on this machine.
pub struct SentRecord<T> {
    /// The server's answer.
    pub answer: T,
    /// The ciphertext sent.
    pub sent: Sent,
    /// The record key.
    pub key: RecordKey,
    /// Title and file name.
    pub meta: RecordMeta,
    /// The record key sealed to the patient, as sent.
    pub envelope: Vec<u8>,
    /// `meta` sealed to the record key, as sent.
    pub sealed_meta: Vec<u8>,
    /// The category sent.
    pub category: Category,
}

/// Encrypts `file` as a new record sealed to `owner` (the patient) and streams it to `path`:
/// the patient's upload and a doctor's attach differ only in where it goes and who `owner` is.
pub async fn send_record<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    api: &Api,
    path: &str,
    file: &std::path::Path,
    category: Category,
    title: Option<String>,
    owner: &age::x25519::Recipient,
) -> Result<SentRecord<T>> {
    let size = std::fs::metadata(file)
        .map_err(|e| input(format!("cannot read {}: {e}", file.display())))?
        .len();
    let filename = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "record".into());
    let meta = RecordMeta {
        title: title.unwrap_or_else(|| filename.clone()),
        filename: filename.clone(),
        size,
    };
    let key = RecordKey::generate();
    let (envelope, sealed_meta) = (key.seal_to(owner), meta.seal(&key));
    let request = api
        .request(Method::POST, path)
        .header(HEADER_CATEGORY, category.as_str())
        .header(HEADER_ENVELOPE, b64(&envelope))
        .header(HEADER_META, b64(&sealed_meta));
    let pb = progress(ctx.interactive(), size, &filename);
    let (answer, sent) = upload_encrypted(api, request, file, key.recipient(), pb).await?;
    Ok(SentRecord {
        answer,
        sent,
        key,
        meta,
        envelope,
        sealed_meta,
        category,
    })
}

/// The second step of a patient's upload: signs what was sent and makes it a record.
async fn seal_upload(
    api: &Api,
    keys: &AccountKeys,
    me: &UserId,
    up: SentRecord<PendingUpload>,
) -> Result<Opened> {
    let id = up.answer.id;
    if up.answer.size != up.sent.size {
        return Err(integrity(format!(
            "the server stored {} bytes of the {} sent; nothing was sealed (record {id})",
            up.answer.size, up.sent.size
        )));
    }
    let opened = put_seal(
        api,
        keys,
        RecordSeal {
            owner: me,
            id: &id,
            category: up.category,
            size: up.sent.size,
            hash: &up.sent.hash,
            envelope: &up.envelope,
            meta: &up.sealed_meta,
        },
    )
    .await?;
    Ok(Opened {
        key: Some(up.key),
        meta: Some(up.meta),
        ..opened
    })
}

/// Signs `statement` with the patient's key, sends it, and checks the record came back sealed.
async fn put_seal(api: &Api, keys: &AccountKeys, statement: RecordSeal<'_>) -> Result<Opened> {
    let id = statement.id;
    let req = SealRecordRequest {
        hash: statement.hash.to_owned(),
        seal: statement.sign(&keys.signing),
    };
    let info: RecordInfo = api.put(&format!("/v1/records/{id}/seal"), &req).await?;
    let opened = open_record(keys, statement.owner, info);
    if !opened.sealed || &opened.info.id != id {
        return Err(integrity(format!(
            "the server did not store the record as sealed (record {id})"
        )));
    }
    Ok(opened)
}

/// Lists your records, decrypting titles and checking seals on this machine.
pub async fn records(ctx: &Ctx) -> Result<()> {
    let (api, session) = ctx.authed()?;
    let keys = ctx.profile.keys()?;
    let views: Vec<Record> = list_records(&api, &keys, &session.user_id)
        .await?
        .iter()
        .map(Opened::view)
        .collect();
    ctx.output(&views, || table(&views))
}

impl Download {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, session) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let all = list_records(&api, &keys, &session.user_id).await?;
        let rec = resolve(&all, &self.record, |r| r.info.id.as_str(), "record")?;
        if self.seal && rec.sealed {
            return Err(input(format!(
                "record {} is sealed already; download it without --seal",
                rec.info.id
            )));
        }
        if self.seal && rec.info.seal.is_some() && !rec.sealed {
            return Err(integrity(format!(
                "record {} carries a seal that does not verify with your key: it was changed \
                 after it was sealed, so it cannot be sealed again. Delete it",
                rec.info.id
            )));
        }
        let expected = match rec.expected() {
            Ok(e) => e,
            Err(_) if self.allow_unsealed || self.seal => {
                if !self.seal {
                    ctx.warn(&format!(
                        "record {} carries no valid seal of yours; check what you get before you trust it",
                        rec.info.id
                    ));
                }
                rec.listed()
            }
            Err(e) => return Err(e),
        };
        let (Some(_), Some(meta)) = (&rec.key, &rec.meta) else {
            return Err(integrity(
                "this record's key or title does not decrypt with your key",
            ));
        };
        let dest = match self.output {
            Some(p) if p.is_dir() => p.join(&meta.filename),
            Some(p) => p,
            None => PathBuf::from(&meta.filename),
        };
        let identity = RecordKey::open_envelope(&keys.age, &rec.info.envelope)?.into_identity();
        let pb = progress(ctx.interactive(), rec.info.size, &meta.filename);
        let written = download_decrypted(
            &api,
            &format!("/v1/records/{}/body", rec.info.id),
            identity,
            &expected,
            &dest,
            self.force,
            pb,
        )
        .await?;
        // What was just downloaded matched the listing's size and hash and decrypted with your
        // key; the listing's category and title are what get sealed with it, so show them.
        let sealed = self.seal
            && confirm_seal(ctx, &written.path, &meta.title, &rec.info)?
            && put_seal(
                &api,
                &keys,
                RecordSeal {
                    owner: &session.user_id,
                    id: &rec.info.id,
                    category: rec.info.category,
                    size: expected.size,
                    hash: &expected.hash,
                    envelope: &rec.info.envelope,
                    meta: &rec.info.meta,
                },
            )
            .await
            .map(|_| true)?;
        let out = FetchedFile {
            record: rec.info.id.clone(),
            path: written.path.display().to_string(),
            sha256: written.sha256,
            size: written.size,
            title: meta.title.clone(),
            category: rec.info.category,
            sealed: self.seal.then_some(sealed),
        };
        ctx.output(&out, || {
            let mut s = format!(
                "wrote {} ({}, sha256 {})",
                out.path,
                human_size(out.size),
                out.sha256
            );
            match out.sealed {
                Some(true) => s.push_str(&format!(
                    "\nsealed record {} as downloaded; if this file is not what you expect, \
                     delete the record",
                    out.record
                )),
                Some(false) => s.push_str("\nnot sealed; the record stays as it was"),
                None => {}
            }
            s
        })
    }
}

/// On a terminal, shows what is about to be sealed and asks; elsewhere `--seal` was the answer.
fn confirm_seal(ctx: &Ctx, path: &std::path::Path, title: &str, info: &RecordInfo) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if ctx.json || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(true);
    }
    let by = info
        .added_by
        .as_ref()
        .map(|d| format!(", added by {d} (the server's word)"))
        .unwrap_or_default();
    eprint!(
        "Wrote {}: \"{title}\", {}{by}.\nOpen it and check it is what you expect: the seal vouches \
         for it, and `share` accepts it once sealed.\nSeal record {} now? [y/N] ",
        path.display(),
        info.category,
        &info.id.as_str()[..12]
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

impl Delete {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, session) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let all = list_records(&api, &keys, &session.user_id).await?;
        let rec = resolve(&all, &self.record, |r| r.info.id.as_str(), "record")?;
        api.send(api.request(Method::DELETE, &format!("/v1/records/{}", rec.info.id)))
            .await?;
        let view = rec.view();
        ctx.output(&serde_json::json!({ "deleted": view.id }), || {
            format!("deleted record {} ({})", view.id, view.title)
        })
    }
}
