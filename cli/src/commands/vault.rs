//! The patient's vault: `upload`, `records`, `download`, `delete`.

use crate::client::Api;
use crate::ctx::Ctx;
use crate::error::{input, integrity};
use crate::output::{FetchedFile, Record};
use crate::transfer::{Expected, download_decrypted, progress, upload_encrypted};
use anyhow::Result;
use clap::Args;
use healthlock_common::Category;
use healthlock_common::api::{HEADER_CATEGORY, HEADER_ENVELOPE, HEADER_META, RecordInfo};
use healthlock_common::encoding::b64;
use healthlock_common::envelope::{RecordKey, RecordMeta};
use healthlock_common::keys::AccountKeys;
use healthlock_common::time::rfc3339;
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
            added_by: self.info.added_by.clone(),
        }
    }
}

/// Opens a record's envelope and metadata with the patient's key.
pub fn open_record(keys: &AccountKeys, info: RecordInfo) -> Opened {
    let key = RecordKey::open_envelope(&keys.age, &info.envelope).ok();
    let meta = key
        .as_ref()
        .and_then(|k| RecordMeta::open(k, &info.meta).ok());
    Opened { info, key, meta }
}

/// Every record in the vault, decrypted.
pub async fn list_records(api: &Api, keys: &AccountKeys) -> Result<Vec<Opened>> {
    let infos: Vec<RecordInfo> = api.get("/v1/records").await?;
    Ok(infos.into_iter().map(|i| open_record(keys, i)).collect())
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
        let by = r
            .added_by
            .as_ref()
            .map(|d| format!("  (added by {d})"))
            .unwrap_or_default();
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
        let (api, _) = ctx.authed()?;
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
            let opened = send_record(
                ctx,
                &api,
                "/v1/records",
                file,
                self.category,
                self.title.clone(),
                &patient,
            )
            .await?;
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

/// Encrypts `file` as a new record sealed to `owner` (the patient) and streams it to `path`:
/// the patient's upload and a doctor's attach differ only in where it goes and who `owner` is.
pub async fn send_record(
    ctx: &Ctx,
    api: &Api,
    path: &str,
    file: &std::path::Path,
    category: Category,
    title: Option<String>,
    owner: &age::x25519::Recipient,
) -> Result<Opened> {
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
    let request = api
        .request(Method::POST, path)
        .header(HEADER_CATEGORY, category.as_str())
        .header(HEADER_ENVELOPE, b64(&key.seal_to(owner)))
        .header(HEADER_META, b64(&meta.seal(&key)));
    let pb = progress(ctx.interactive(), size, &filename);
    let (info, sent_hash): (RecordInfo, String) =
        upload_encrypted(api, request, file, key.recipient(), pb).await?;
    if info.sha256 != sent_hash {
        return Err(integrity(format!(
            "the server stored different bytes for {filename} than were sent (record {})",
            info.id
        )));
    }
    Ok(Opened {
        info,
        key: Some(key),
        meta: Some(meta),
    })
}

/// Lists your records, decrypting titles on this machine.
pub async fn records(ctx: &Ctx) -> Result<()> {
    let (api, _) = ctx.authed()?;
    let keys = ctx.profile.keys()?;
    let views: Vec<Record> = list_records(&api, &keys)
        .await?
        .iter()
        .map(Opened::view)
        .collect();
    ctx.output(&views, || table(&views))
}

impl Download {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, _) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let all = list_records(&api, &keys).await?;
        let rec = resolve(&all, &self.record, |r| r.info.id.as_str(), "record")?;
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
            &Expected {
                size: rec.info.size,
                sha256: rec.info.sha256.clone(),
            },
            &dest,
            self.force,
            pb,
        )
        .await?;
        let out = FetchedFile {
            record: rec.info.id.clone(),
            path: written.path.display().to_string(),
            sha256: written.sha256,
            size: written.size,
            title: meta.title.clone(),
            category: rec.info.category,
        };
        ctx.output(&out, || {
            format!(
                "wrote {} ({}, sha256 {})",
                out.path,
                human_size(out.size),
                out.sha256
            )
        })
    }
}

impl Delete {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let (api, _) = ctx.authed()?;
        let keys = ctx.profile.keys()?;
        let all = list_records(&api, &keys).await?;
        let rec = resolve(&all, &self.record, |r| r.info.id.as_str(), "record")?;
        api.send(api.request(Method::DELETE, &format!("/v1/records/{}", rec.info.id)))
            .await?;
        let view = rec.view();
        ctx.output(&serde_json::json!({ "deleted": view.id }), || {
            format!("deleted record {} ({})", view.id, view.title)
        })
    }
}
