//! Record bodies as files: `blobs/<record id>`. An upload streams into `tmp/`, is fsynced, renamed
//! into place and the directory fsynced — only then does its metadata commit. A partial upload
//! leaves nothing behind: its temp file is removed when the request ends, and `tmp/` is swept at
//! startup in case the process died mid-upload.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::body::Bytes;
use futures_util::StreamExt;
use healthlock_common::RecordId;
use healthlock_common::api::ErrorCode;
use healthlock_common::body_hash::BodyHasher;
use healthlock_common::durable_write::DurableWriter;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// How long an upload may send nothing before it is abandoned.
const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Received pieces queued for the writer thread (hyper hands over up to a few hundred KiB each).
const WRITE_QUEUE: usize = 16;

/// The blob directory pair.
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A body received into a temp file, not yet a blob. Removing the temp file on drop means an
/// error anywhere before [`Blobs::commit`] leaves nothing behind.
pub struct Received {
    path: PathBuf,
    /// Bytes received.
    pub size: u64,
    /// The hash of what was received ([`healthlock_common::body_hash`]), when asked for.
    pub hash: Option<String>,
    committed: bool,
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Blobs {
    /// Creates the directories and sweeps temp files left by a crash.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Self { dir, tmp })
    }

    /// Removes blobs that no record names: left by a crash between a blob's rename and its
    /// metadata commit (the upload was never acknowledged), or between a delete's commit and
    /// the file's removal. Returns how many were removed.
    pub fn sweep_orphans(
        &self,
        records: &std::collections::HashSet<String>,
    ) -> std::io::Result<usize> {
        let mut removed = 0;
        let entries: Vec<_> = std::fs::read_dir(&self.dir)?.collect::<Result<_, _>>()?;
        if records.is_empty() && !entries.is_empty() {
            // An empty store beside existing blobs is a missing or replaced database, not a
            // crash leftover: keep everything and say so.
            tracing::warn!(
                blobs = entries.len(),
                "the store names no records but blobs/ is not empty; not sweeping"
            );
            return Ok(0);
        }
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && !records.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Where a record's body lives.
    pub fn path(&self, id: &RecordId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Streams a request body into a temp file, refusing more than `max` bytes, and fsyncs it;
    /// hashes it too if `hash` (a doctor's attachment: a patient's own upload is hashed and
    /// sealed by the patient, and hashing it here would cost a full pass for nothing).
    ///
    /// This task receives; a blocking thread writes behind it ([`DurableWriter`], which starts
    /// writeback as it goes), so the disk works while the network does and the final fsync has
    /// almost nothing left.
    pub async fn receive(&self, body: Body, max: u64, hash: bool) -> ApiResult<Received> {
        let mut received = Received {
            path: self.tmp.join(healthlock_common::encoding::hex(
                &healthlock_common::random_bytes::<16>(),
            )),
            size: 0,
            hash: None,
            committed: false,
        };
        let file = tokio::fs::File::create(&received.path)
            .await?
            .into_std()
            .await;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_behind(file, rx));
        let mut hasher = hash.then(BodyHasher::new);
        let mut stream = body.into_data_stream();
        loop {
            // An idle timeout rather than a total one: a 2 GiB upload may take long, but a
            // client that stops sending is cut off.
            let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::UploadIncomplete,
                        "the upload stalled; nothing was stored",
                    )
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    ErrorCode::UploadIncomplete,
                    "the upload was interrupted before it was complete; nothing was stored",
                )
            })?;
            received.size += chunk.len() as u64;
            if received.size > max {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the upload is larger than this server accepts ({max} bytes)"),
                ));
            }
            // Once the writer has stopped on an error (a full disk, say), the rest is read and
            // dropped: a client still sending when the answer comes would see a broken pipe
            // instead of the reason, which the writer's result gives below.
            if !tx.is_closed() {
                if let Some(h) = &mut hasher {
                    h.update(&chunk);
                }
                let _ = tx.send(Piece::Data(chunk)).await;
            }
        }
        // If the writer already failed this send fails too, and its error is the answer.
        let _ = tx.send(Piece::End).await;
        writer.await.map_err(std::io::Error::other)??;
        received.hash = hasher.map(BodyHasher::finish);
        Ok(received)
    }

    /// Makes a received body the blob of `id`, durably.
    pub async fn commit(&self, mut received: Received, id: &RecordId) -> std::io::Result<()> {
        tokio::fs::rename(&received.path, self.path(id)).await?;
        received.committed = true;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Removes a record's body (after its metadata is gone).
    pub async fn remove(&self, id: &RecordId) {
        if let Err(e) = tokio::fs::remove_file(self.path(id)).await {
            tracing::warn!(record = %id, error = %e, "could not remove blob");
        }
    }
}

/// The most of a refused upload's body that is read and dropped before the answer.
const DRAIN_MAX: u64 = 16 << 20;

/// How long a refused upload's body is read, at most, before the answer.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Passes an upload's body on with `checked`'s value, or — when `checked` is a refusal — reads
/// and drops what is left of the body (up to [`DRAIN_MAX`] and [`DRAIN_TIME`] in all) before
/// returning the refusal, so that the client, which sends the whole body before it reads, gets
/// the reason instead of a broken pipe. Both bounds hold for anyone, logged in or not: reading
/// gigabytes, or a trickle forever, for a refusal would hand any caller free resources.
pub async fn or_drain<T>(checked: ApiResult<T>, body: Body) -> ApiResult<(T, Body)> {
    match checked {
        Ok(v) => Ok((v, body)),
        Err(e) => {
            drain(body).await;
            Err(e)
        }
    }
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0u64;
        while read <= DRAIN_MAX {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.len() as u64,
                _ => return,
            }
        }
    })
    .await;
}

/// What the receiving task hands the writer thread.
enum Piece {
    Data(Bytes),
    /// The body is complete: sync it. A channel that closes without this is an abandoned upload,
    /// whose file is being removed, so the writer skips the final sync (it only waits for a
    /// background sync already running).
    End,
}

/// Writes pieces as they come and makes the file durable at [`Piece::End`].
fn write_behind(file: std::fs::File, mut rx: mpsc::Receiver<Piece>) -> std::io::Result<()> {
    let mut out = DurableWriter::new(file);
    while let Some(piece) = rx.blocking_recv() {
        let Piece::Data(bytes) = piece else {
            return out.finish();
        };
        out.write_all(&bytes)?;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "upload abandoned",
    ))
}
