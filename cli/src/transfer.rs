//! Streaming encryption and decryption of record bodies.
//!
//! Upload: the file is read a chunk at a time straight into 256 KiB pieces and each chunk is
//! sealed where it lies ([`body_stream`]) on a blocking thread; the pieces go through a bounded
//! channel to be hashed and sent as the HTTP body. Reading and encrypting run on one core while
//! hashing, the network and the server use the other, and no document is ever whole in memory.
//! Download is the mirror image: the ciphertext is hashed as it arrives and cut into runs of whole
//! chunks ([`Gather`]), which are opened in place on one thread, hashed on a second and written
//! from those same buffers on a third. The plaintext goes to a hidden temp file beside the destination
//! ([`DurableWriter`], written behind so its fsync is short), and is renamed into place only after
//! the ciphertext's size and hash ([`healthlock_common::body_hash`]) match what the patient signed
//! and every chunk has authenticated.

use crate::client::Api;
use crate::error::{CliError, integrity};
use anyhow::{Context, Result};
use futures_util::StreamExt;
use healthlock_common::body_hash::BodyHasher;
use healthlock_common::body_stream::{self, FRAMES, PIECE, Piece};
use healthlock_common::durable_write::DurableWriter;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use zeroize::Zeroize;

/// Pieces in flight between the crypto thread and the network: bounds memory at ~2.5 MiB.
const IN_FLIGHT: usize = 8;

/// A progress bar on stderr, or a hidden one when stderr is not a terminal or output is JSON.
pub fn progress(show: bool, len: u64, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:20!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(label.to_owned());
    pb
}

/// Where buffers go back once their bytes are used; see [`Spares`].
type Recycle = std::sync::mpsc::Sender<Vec<u8>>;

/// Used buffers to fill again. A transfer's pieces circulate between its stages instead of each
/// being a fresh allocation: fresh memory costs a page fault for every 4 KiB first touched, which
/// came to about 69,000 faults and 8% of the time of a 512 MiB fetch (docs/performance.md). Only
/// as many buffers exist as are ever in flight at once.
struct Spares(std::sync::mpsc::Receiver<Vec<u8>>);

impl Spares {
    fn new() -> (Recycle, Self) {
        let (tx, rx) = std::sync::mpsc::channel();
        (tx, Self(rx))
    }

    /// An empty buffer: a used one if one has come back, else a new one.
    fn take(&self, capacity: usize) -> Vec<u8> {
        match self.0.try_recv() {
            Ok(mut used) => {
                used.clear();
                used
            }
            Err(_) => Vec::with_capacity(capacity),
        }
    }

    /// A used buffer as it came back, contents and all, or else an empty one: for
    /// [`body_stream`]'s pieces, which size their buffers without clearing them.
    fn take_any(&self) -> Vec<u8> {
        self.0.try_recv().unwrap_or_default()
    }

    /// Hands a buffer back, or wipes it if the stage it goes back to has ended: a download's
    /// pieces hold plaintext.
    fn give_back(recycle: &Recycle, buf: Vec<u8>) {
        if let Err(std::sync::mpsc::SendError(mut buf)) = recycle.send(buf) {
            buf.zeroize();
        }
    }
}

/// Wipes the buffers that came back and were not used again, as the age crate wiped each
/// decrypted chunk.
impl Drop for Spares {
    fn drop(&mut self) {
        while let Ok(mut buf) = self.0.try_recv() {
            buf.zeroize();
        }
    }
}

/// Sends pieces into a channel from a blocking thread.
fn send_piece<T>(tx: &mpsc::Sender<std::io::Result<T>>, piece: T) -> std::io::Result<()> {
    tx.blocking_send(Ok(piece)).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the transfer was stopped")
    })
}

/// A piece of an upload's body: its buffer goes back to the encrypting thread once the HTTP
/// client has sent it and drops it.
struct Outgoing {
    piece: Vec<u8>,
    recycle: Recycle,
}

impl AsRef<[u8]> for Outgoing {
    fn as_ref(&self) -> &[u8] {
        &self.piece
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        let _ = self.recycle.send(std::mem::take(&mut self.piece));
    }
}

/// Encrypts `src` to `recipient` as an age file into `tx`: the header, then pieces of chunks
/// read straight from the file and sealed where they lie ([`body_stream::Sealer`]).
fn seal_file(
    src: &mut std::fs::File,
    recipient: &age::x25519::Recipient,
    tx: &mpsc::Sender<std::io::Result<Vec<u8>>>,
    spares: &Spares,
    pb: &ProgressBar,
) -> std::io::Result<()> {
    let (head, mut sealer) = body_stream::Sealer::start(recipient)?;
    send_piece(tx, head)?;
    sealer.seal_pieces(
        |buf| {
            let n = body_stream::read_full(src, buf)?;
            pb.inc(n as u64);
            Ok(n)
        },
        || spares.take_any(),
        |piece| send_piece(tx, piece.into_sealed()),
    )
}

/// Encrypts `file` to `recipient` and streams the ciphertext as the body of `request`.
/// Returns the server's JSON answer and what the client sent: the ciphertext's hash and size.
///
/// Reading and encryption run on a blocking thread; hashing and sending on the async runtime,
/// so the two cores share the work (docs/performance.md).
pub async fn upload_encrypted<T: serde::de::DeserializeOwned>(
    api: &Api,
    request: reqwest::RequestBuilder,
    file: &Path,
    recipient: age::x25519::Recipient,
    pb: ProgressBar,
) -> Result<(T, Sent)> {
    let mut src =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(IN_FLIGHT);
    let (recycle, spares) = Spares::new();
    let encrypt = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let result = seal_file(&mut src, &recipient, &tx, &spares, &pb);
        pb.finish_and_clear();
        if let Err(e) = &result {
            // Fail the HTTP body too, so the server sees an incomplete upload and keeps nothing.
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    // The hash and size of everything sent, once the body has ended.
    let (hashed_tx, hashed) = tokio::sync::oneshot::channel();
    let stream = futures_util::stream::unfold(
        (rx, BodyHasher::new(), 0u64, hashed_tx),
        move |(mut rx, mut hasher, mut size, hashed_tx)| {
            let recycle = recycle.clone();
            async move {
                let item = rx.recv().await;
                let Some(item) = item else {
                    let _ = hashed_tx.send(Sent {
                        hash: hasher.finish(),
                        size,
                    });
                    return None;
                };
                let item = item.map(|piece| {
                    hasher.update(&piece);
                    size += piece.len() as u64;
                    bytes::Bytes::from_owner(Outgoing { piece, recycle })
                });
                Some((item, (rx, hasher, size, hashed_tx)))
            }
        },
    );
    let sent = api
        .send(request.body(reqwest::Body::wrap_stream(stream)))
        .await;
    let encrypted = encrypt.await?;
    match (sent, encrypted) {
        (Ok(resp), Ok(())) => {
            let answer = api.decode(resp).await?;
            let sent = hashed
                .await
                .map_err(|_| integrity("the server answered before the whole upload was sent"))?;
            Ok((answer, sent))
        }
        (Err(e), Ok(_)) => Err(e),
        // The server stopped reading (e.g. too large): its answer is the real reason.
        (Err(e), Err(io)) if io.kind() == std::io::ErrorKind::BrokenPipe => Err(e),
        (_, Err(io)) => {
            Err(anyhow::Error::new(io).context(format!("cannot read {}", file.display())))
        }
    }
}

/// The ciphertext an upload sent.
pub struct Sent {
    /// Its hash ([`healthlock_common::body_hash`]).
    pub hash: String,
    /// Bytes.
    pub size: u64,
}

/// What the ciphertext must be, as the patient signed it (or as the vault records it).
#[derive(Clone, Debug)]
pub struct Expected {
    /// Ciphertext size.
    pub size: u64,
    /// Ciphertext hash ([`healthlock_common::body_hash`]), checked in the algorithm it names.
    pub hash: String,
}

/// A file written by [`download_decrypted`].
pub struct Written {
    /// Where.
    pub path: PathBuf,
    /// Plaintext SHA-256, hex.
    pub sha256: String,
    /// Plaintext size.
    pub size: u64,
}

/// Downloads the ciphertext at `path` (an API path), decrypts it with `identity` into `dest`.
/// `dest` appears only if everything checks out; it is never overwritten unless `force`.
pub async fn download_decrypted(
    api: &Api,
    path: &str,
    identity: age::x25519::Identity,
    expected: &Expected,
    dest: &Path,
    force: bool,
    pb: ProgressBar,
) -> Result<Written> {
    if !force && dest.exists() {
        return Err(CliError::Exists(dest.to_owned()).into());
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let tmp = dir.join(format!(
        ".healthlock-partial-{}",
        healthlock_common::encoding::hex(&healthlock_common::random_bytes::<8>())
    ));
    let mut hasher = BodyHasher::like(&expected.hash)
        .map_err(|_| integrity("the record's hash is malformed, so its body cannot be checked"))?;
    let resp = api.send(api.request(Method::GET, path)).await?;
    // Four stages, so both cores work: this task receives and hashes the ciphertext, one thread
    // decrypts, one hashes the plaintext, one writes it. Each stage's buffers come back to it
    // once the next stage has used them ([`Spares`]).
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    let (plain_tx, plain_rx) = mpsc::channel::<std::io::Result<Piece>>(IN_FLIGHT);
    let (hashed_tx, hashed_rx) = mpsc::channel::<std::io::Result<Piece>>(IN_FLIGHT);
    // A run's buffer goes from this task to the decrypting thread, is opened in place, hashed and
    // written, and comes back here.
    let (recycle, spares) = Spares::new();
    let out_path = tmp.clone();
    let writer =
        tokio::task::spawn_blocking(move || write_plaintext(&out_path, hashed_rx, recycle));
    let plain_hash = tokio::task::spawn_blocking(move || hash_plaintext(plain_rx, hashed_tx));
    let decrypt = tokio::task::spawn_blocking(move || -> Result<()> {
        let result = open_body(&mut rx, &identity, &plain_tx);
        if let Err(e) = &result {
            // Tell the writer not to sync a file that is about to be removed.
            let _ = plain_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        result
    });

    let mut received = 0u64;
    let mut stream = resp.bytes_stream();
    let mut network_error = None;
    let mut gather = Gather {
        head: Some(Vec::new()),
        run: spares.take(PIECE),
    };
    let mut ready = Vec::new();
    'receive: while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                network_error = Some(api.network(&e));
                break;
            }
        };
        received += chunk.len() as u64;
        if received > expected.size {
            break;
        }
        hasher.update(&chunk);
        pb.inc(chunk.len() as u64);
        gather.push(&chunk, &spares, &mut ready);
        drop(chunk);
        for run in ready.drain(..) {
            if tx.send(run).await.is_err() {
                break 'receive;
            }
        }
    }
    if network_error.is_none() {
        gather.finish(&mut ready);
        for run in ready.drain(..) {
            if tx.send(run).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let (decrypted, hashed, written) = (decrypt.await, plain_hash.await, writer.await);
    pb.finish_and_clear();
    let cleanup = || {
        let _ = std::fs::remove_file(&tmp);
    };
    // A stage that panicked still leaves no plaintext behind.
    let (decrypted, hashed, written) = match (decrypted, hashed, written) {
        (Ok(d), Ok(h), Ok(w)) => (d, h, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            cleanup();
            return Err(e.into());
        }
    };
    if let Some(e) = network_error {
        cleanup();
        return Err(e);
    }
    // A write failure (a full disk, say) is the reason, even though decryption stopped too.
    let plaintext = match written {
        Ok(true) => hashed,
        Ok(false) => None,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    if received != expected.size || hasher.finish() != expected.hash {
        cleanup();
        return Err(integrity(format!(
            "the server sent {received} bytes that do not match the {} bytes and hash the patient signed",
            expected.size
        )));
    }
    let (sha256, size) = match (decrypted, plaintext) {
        (Ok(_), Some(v)) => v,
        (decrypted, _) => {
            cleanup();
            let why = decrypted
                .err()
                .map_or("it stopped early".into(), |e| e.to_string());
            return Err(integrity(format!("the record does not decrypt: {why}")));
        }
    };
    if !force && dest.exists() {
        cleanup();
        return Err(CliError::Exists(dest.to_owned()).into());
    }
    std::fs::rename(&tmp, dest).inspect_err(|_| cleanup())?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Written {
        path: dest.to_owned(),
        sha256,
        size,
    })
}

/// Cuts a download's ciphertext, as it arrives, into its header and runs of [`PIECE`] bytes for
/// the decrypting thread ([`body_stream::Unsealer`]), which opens each run's chunks where they
/// lie. Copying the bytes out of the HTTP client's buffer here is the only copy before the
/// plaintext is written; it also frees that buffer for the client's next read (holding the
/// client's pieces while they waited to be decrypted made it allocate fresh memory for every
/// read).
struct Gather {
    /// The header so far, until [`body_stream::header_len`] finds its end.
    head: Option<Vec<u8>>,
    run: Vec<u8>,
}

/// More header than any body HealthLock writes (one stanza) could have: the bytes are not one.
const MAX_HEADER: usize = 64 * 1024;

impl Gather {
    /// Takes the next bytes; what is ready to send goes to `ready`, in order.
    fn push(&mut self, mut bytes: &[u8], spares: &Spares, ready: &mut Vec<Vec<u8>>) {
        if let Some(head) = &mut self.head {
            let before = head.len();
            head.extend_from_slice(bytes);
            match body_stream::header_len(&head[..head.len().min(MAX_HEADER)]) {
                Some(end) if end > before => {
                    head.truncate(end);
                    bytes = &bytes[end - before..];
                    ready.extend(self.head.take());
                }
                // No header end in the first MAX_HEADER bytes: the decrypting thread refuses it.
                _ if head.len() > MAX_HEADER => {
                    ready.extend(self.head.take());
                    return;
                }
                _ => return,
            }
        }
        while !bytes.is_empty() {
            let n = (PIECE - self.run.len()).min(bytes.len());
            self.run.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.run.len() == PIECE {
                ready.push(std::mem::replace(&mut self.run, spares.take(PIECE)));
            }
        }
    }

    /// The body has ended: an unfinished header (for the decrypting thread to refuse), or the
    /// last run, shorter than the others (none if the payload ended with a whole run).
    fn finish(self, ready: &mut Vec<Vec<u8>>) {
        match self.head {
            Some(head) => ready.push(head),
            None if !self.run.is_empty() => ready.push(self.run),
            None => {}
        }
    }
}

/// Decrypts the age file arriving through `rx` (its header, then its runs: [`Gather`]) into
/// pieces for the writer: the header through the `age` crate, then each chunk opened where it
/// lies ([`body_stream::Unsealer`]), so the writer writes from the very buffer the bytes were
/// gathered in.
fn open_body(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    identity: &age::x25519::Identity,
    tx: &mpsc::Sender<std::io::Result<Piece>>,
) -> Result<()> {
    let header = rx
        .blocking_recv()
        .ok_or_else(|| anyhow::anyhow!("the body ended before its header"))?;
    let runs = std::iter::from_fn(|| rx.blocking_recv().map(Ok));
    body_stream::Unsealer::new(body_stream::Opener::start_exact(&header, identity)?)
        .open_runs(runs, |piece| Ok(send_piece(tx, piece)?))
}

/// Hashes a download's plaintext on its way to the writer: SHA-256 is the largest single cost of a
/// fetch, as long as decrypting and writing together, so it has a thread of its own. Returns the
/// hash (hex) and size, or `None` if a stage before or after stopped.
fn hash_plaintext(
    mut rx: mpsc::Receiver<std::io::Result<Piece>>,
    tx: mpsc::Sender<std::io::Result<Piece>>,
) -> Option<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(piece) = rx.blocking_recv() {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return None;
            }
        };
        for chunk in piece.chunks() {
            hasher.update(chunk);
            size += chunk.len() as u64;
        }
        tx.blocking_send(Ok(piece)).ok()?;
    }
    Some((healthlock_common::encoding::hex(&hasher.finalize()), size))
}

/// Writes the plaintext of a download into a new owner-only file at `path`, durably. `Ok(false)`:
/// decryption failed upstream, and the unsynced file is left to be removed.
fn write_plaintext(
    path: &Path,
    mut rx: mpsc::Receiver<std::io::Result<Piece>>,
    recycle: Recycle,
) -> Result<bool> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        // Health data: readable by its owner only, from the first byte.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = DurableWriter::new(file);
    while let Some(piece) = rx.blocking_recv() {
        let Ok(piece) = piece else { return Ok(false) };
        let mut slices = [std::io::IoSlice::new(&[]); FRAMES];
        for (slice, chunk) in slices.iter_mut().zip(piece.chunks()) {
            *slice = std::io::IoSlice::new(chunk);
        }
        out.write_all_vectored(&mut slices)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Spares::give_back(&recycle, piece.into_buffer());
    }
    out.finish()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}
