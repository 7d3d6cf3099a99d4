//! Record bodies as age files, encrypted and decrypted in place in the caller's buffers.
//!
//! A body is a standard age file (`age-encryption.org/v1`) to the record's own key, which any age
//! implementation reads and writes. The file has two parts:
//! - **The header**, written and checked by the `age` crate: the recipient stanza that wraps the
//!   file key, the header's MAC, then a 16-byte nonce.
//! - **The payload**, age's STREAM, runs here: 64 KiB chunks, each sealed with ChaCha20-Poly1305
//!   under `HKDF-SHA256(salt = nonce, ikm = file key, info = "payload")`, with an 11-byte big-endian
//!   chunk counter and a last-chunk flag as the AEAD nonce.
//!
//! Why not the `age` crate's own stream reader and writer, which the bodies used until this
//! module: a body is the one large thing HealthLock encrypts, and on a 2-core machine an upload or
//! fetch is bound by the CPU it spends (docs/performance.md). Through the crate, every chunk is
//! copied in and out of its own buffers and allocated afresh; and its ChaCha20-Poly1305 (RustCrypto
//! `chacha20poly1305` 0.10, which age 0.12 pins) sealed 1,650 MB/s on the development machine,
//! against 2,610 MB/s for AWS-LC's (`aws-lc-rs`, already in the build as the TLS provider). Here
//! the chunks are sealed and opened where they lie: in the buffer the file is read into, or the
//! buffer the network's bytes are gathered in, which then goes on to be sent or written.
//!
//! What is ours is only the STREAM loop: the key derivation is the `age` crate's own
//! (`age_core::primitives::hkdf`), and the file key never leaves the two small adapters that take
//! it as the crate hands it to a recipient or identity ([`KeepFileKey`]). The C2SP CCTV test
//! vectors run through [`crate::envelope::decrypt_stream`], and so through this module.

use crate::CryptoError;
use age::secrecy::ExposeSecret;
use age_core::format::{FILE_KEY_BYTES, FileKey, Stanza};
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Read;
use zeroize::Zeroizing;

/// Plaintext bytes per chunk (age's STREAM chunk size).
pub const CHUNK: usize = 64 * 1024;
/// Bytes of each chunk's Poly1305 tag.
pub const TAG: usize = 16;
/// Bytes of a sealed chunk: every one but the last is exactly this long.
pub const FRAME: usize = CHUNK + TAG;
/// Bytes of the nonce that ends the header.
const NONCE: usize = 16;
/// Chunks per [`Piece`]: a few chunks per system call and per hand-over between threads.
pub const FRAMES: usize = 4;
/// Bytes of a [`Piece`]'s buffer: [`FRAMES`] sealed chunks.
pub const PIECE: usize = FRAMES * FRAME;

/// The file key, as the `age` crate hands it to the wrapped recipient or identity: it makes the
/// key (to encrypt) and checks the header's MAC with it (to decrypt), but keeps the payload key it
/// derives to itself.
struct KeepFileKey<'a, T: ?Sized> {
    inner: &'a T,
    kept: RefCell<Option<Zeroizing<[u8; FILE_KEY_BYTES]>>>,
}

impl<'a, T: ?Sized> KeepFileKey<'a, T> {
    fn new(inner: &'a T) -> Self {
        Self {
            inner,
            kept: RefCell::new(None),
        }
    }

    fn keep(&self, key: &FileKey) {
        *self.kept.borrow_mut() = Some(Zeroizing::new(*key.expose_secret()));
    }

    fn take(&self) -> Option<Zeroizing<[u8; FILE_KEY_BYTES]>> {
        self.kept.borrow_mut().take()
    }
}

impl age::Recipient for KeepFileKey<'_, age::x25519::Recipient> {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        self.keep(file_key);
        self.inner.wrap_file_key(file_key)
    }
}

impl age::Identity for KeepFileKey<'_, age::x25519::Identity> {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        let unwrapped = self.inner.unwrap_stanza(stanza);
        if let Some(Ok(key)) = &unwrapped {
            self.keep(key);
        }
        unwrapped
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        let unwrapped = self.inner.unwrap_stanzas(stanzas);
        if let Some(Ok(key)) = &unwrapped {
            self.keep(key);
        }
        unwrapped
    }
}

/// The payload key for `file_key` and the header's `nonce`, exactly as age derives it.
fn payload_key(file_key: &[u8; FILE_KEY_BYTES], nonce: &[u8; NONCE]) -> LessSafeKey {
    let key = Zeroizing::new(age_core::primitives::hkdf(nonce, b"payload", file_key));
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &key[..]).expect("a 32-byte key fits ChaCha20"),
    )
}

/// Where one chunk stands in the stream: its AEAD nonce is the counter (11 bytes, big-endian)
/// and the last-chunk flag. A new stream starts at chunk 0.
#[derive(Default)]
struct Counter {
    next: u64,
    done: bool,
}

impl Counter {
    /// The next chunk's nonce; `None` once the last chunk has had its own (or after 2^64 chunks).
    fn nonce(&mut self, last: bool) -> Option<Nonce> {
        if self.done {
            return None;
        }
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&self.next.to_be_bytes());
        n[11] = u8::from(last);
        self.next = self.next.checked_add(1)?;
        self.done = last;
        Some(Nonce::assume_unique_for_key(n))
    }
}

/// Encrypts a body chunk by chunk, in place.
pub struct Sealer {
    key: LessSafeKey,
    at: Counter,
}

impl Sealer {
    /// Starts an age file to `recipient`. Returns its header (with the nonce), which goes first,
    /// and the sealer for the chunks that follow it.
    pub fn start(recipient: &age::x25519::Recipient) -> Result<(Vec<u8>, Self), CryptoError> {
        let keep = KeepFileKey::new(recipient);
        let mut head = Vec::with_capacity(256);
        // The crate writes the header and the nonce as it wraps the output; the stream writer it
        // returns is dropped unused (it writes nothing then), and the chunks are sealed below.
        age::Encryptor::with_recipients(std::iter::once(&keep as &dyn age::Recipient))
            .and_then(|e| e.wrap_output(&mut head).map_err(age::EncryptError::from))
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
        let nonce = header_nonce(&head)?;
        let file_key = keep
            .take()
            .ok_or_else(|| CryptoError::Encrypt("the file key was never wrapped".into()))?;
        let key = payload_key(&file_key, &nonce);
        Ok((
            head,
            Self {
                key,
                at: Counter::default(),
            },
        ))
    }

    /// Seals the next chunk. `frame` holds its plaintext followed by [`TAG`] bytes of room for
    /// the tag; the plaintext is [`CHUNK`] bytes unless `last`, and only the last may be empty
    /// when it is also the first (an empty body). Nothing may follow the last.
    pub fn seal(&mut self, frame: &mut [u8], last: bool) -> Result<(), CryptoError> {
        let len = frame
            .len()
            .checked_sub(TAG)
            .ok_or_else(|| CryptoError::Encrypt("a chunk needs room for its tag".into()))?;
        if len > CHUNK || (!last && len != CHUNK) || (last && len == 0 && self.at.next > 0) {
            return Err(CryptoError::Encrypt(format!(
                "a chunk of {len} bytes cannot be {} chunk",
                if last { "the last" } else { "a middle" }
            )));
        }
        let nonce = self
            .at
            .nonce(last)
            .ok_or_else(|| CryptoError::Encrypt("the last chunk is already sealed".into()))?;
        let (plain, room) = frame.split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), plain)
            .map_err(|_| CryptoError::Encrypt("sealing a chunk failed".into()))?;
        room.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Whether the last chunk has been sealed.
    pub fn finished(&self) -> bool {
        self.at.done
    }
}

/// The nonce at the end of a header the age crate wrote, once the header is seen to end as the
/// format says: its MAC line (`--- ` and 43 characters of base64), then the nonce. A later crate
/// that wrote anything else there would otherwise have bodies sealed under a wrong key, uploaded
/// and signed, and unreadable ever after; the version is pinned too (Cargo.toml).
fn header_nonce(head: &[u8]) -> Result<[u8; NONCE], CryptoError> {
    const MAC_LINE: usize = 4 + 43 + 1;
    let (header, nonce) = head.split_at(head.len().saturating_sub(NONCE));
    let mac_line = &header[header.len().saturating_sub(MAC_LINE)..];
    let framed = mac_line.len() == MAC_LINE
        && mac_line.starts_with(b"--- ")
        && mac_line.ends_with(b"\n")
        && header[..header.len() - MAC_LINE].ends_with(b"\n");
    match nonce.try_into() {
        Ok(nonce) if framed => Ok(nonce),
        _ => Err(CryptoError::Encrypt(
            "the age crate wrote a header of an unexpected shape".into(),
        )),
    }
}

/// Decrypts a body chunk by chunk, in place.
pub struct Opener {
    key: LessSafeKey,
    at: Counter,
}

/// A reader that remembers the last [`NONCE`] bytes read through it.
struct Tail<R> {
    inner: R,
    last: [u8; NONCE],
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n >= NONCE {
            self.last.copy_from_slice(&buf[n - NONCE..n]);
        } else {
            self.last.copy_within(n.., 0);
            self.last[NONCE - n..].copy_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl Opener {
    /// Reads an age file's header and nonce from `input` (nothing past them: the `age` crate's
    /// unbuffered parser never reads ahead), unwraps the file key with `identity` and checks the
    /// header's MAC. `input` is then at the first chunk.
    pub fn start(input: impl Read, identity: &age::x25519::Identity) -> Result<Self, CryptoError> {
        let mut tail = Tail {
            inner: input,
            last: [0; NONCE],
        };
        let keep = KeepFileKey::new(identity);
        age::Decryptor::new(&mut tail)
            .and_then(|d| d.decrypt(std::iter::once(&keep as &dyn age::Identity)))
            .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
        // `decrypt` succeeds only once the file key is unwrapped and the MAC checks out.
        let file_key = keep
            .take()
            .ok_or_else(|| CryptoError::Decrypt("no file key was unwrapped".into()))?;
        Ok(Self {
            key: payload_key(&file_key, &tail.last),
            at: Counter::default(),
        })
    }

    /// [`Opener::start`] for a header cut from the ciphertext ([`header_len`]): it must be the
    /// whole header and nonce, nothing more and nothing less.
    pub fn start_exact(
        header: &[u8],
        identity: &age::x25519::Identity,
    ) -> Result<Self, CryptoError> {
        let mut rest = header;
        let opener = Self::start(&mut rest, identity)?;
        if !rest.is_empty() {
            return Err(CryptoError::Decrypt(
                "the body's header does not end where it seemed to".into(),
            ));
        }
        Ok(opener)
    }

    /// Opens the next chunk in place and returns its plaintext, the start of `frame`. A chunk
    /// that is not `last` is exactly [`FRAME`] bytes; the last may be shorter, and may be empty
    /// only when it is also the first. A chunk that fails to authenticate, with the position and
    /// flag it was given, is an error, and `frame` is then garbage.
    pub fn open<'f>(&mut self, frame: &'f mut [u8], last: bool) -> Result<&'f [u8], CryptoError> {
        let bad = |why: &str| Err(CryptoError::Decrypt(format!("the body is damaged: {why}")));
        if frame.len() < TAG {
            return bad("it ends inside a chunk");
        }
        if frame.len() > FRAME || (!last && frame.len() != FRAME) {
            return bad("a chunk has the wrong length");
        }
        if last && frame.len() == TAG && self.at.next > 0 {
            return bad("its last chunk is empty");
        }
        let Some(nonce) = self.at.nonce(last) else {
            return bad("data follows its last chunk");
        };
        match self.key.open_in_place(nonce, Aad::empty(), frame) {
            Ok(plain) => Ok(plain),
            Err(_) => bad("a chunk does not authenticate"),
        }
    }

    /// Whether the last chunk has been opened: a stream that ends before is truncated.
    pub fn finished(&self) -> bool {
        self.at.done
    }
}

/// Reads into `buf` until it is full or `input` ends; returns how much was read. Only a read of
/// nothing ends it, so a short read never ends a chunk early.
pub fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A piece of a body on its way between a transfer's stages: up to [`FRAMES`] chunks, chunk `i`
/// at `i * FRAME` of the buffer, and how many bytes of each are in use (sealed, on the way up;
/// plaintext, on the way down).
pub struct Piece {
    buf: Vec<u8>,
    lens: [usize; FRAMES],
    count: usize,
}

impl Piece {
    fn new(mut buf: Vec<u8>) -> Self {
        buf.resize(PIECE, 0);
        Self {
            buf,
            lens: [0; FRAMES],
            count: 0,
        }
    }

    /// The chunks' bytes in use, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(|i| &self.buf[i * FRAME..i * FRAME + self.lens[i]])
    }

    /// The buffer cut to its sealed chunks, which lie end to end (each but a body's last is a
    /// whole [`FRAME`]).
    pub fn into_sealed(mut self) -> Vec<u8> {
        let end = self
            .count
            .checked_sub(1)
            .map_or(0, |i| i * FRAME + self.lens[i]);
        self.buf.truncate(end);
        self.buf
    }

    /// The buffer, to be used again.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl Sealer {
    /// Reads a body's plaintext with `read` (which fills what it is given unless the input ends,
    /// as [`read_full`] does) a chunk at a time, straight into the frames of pieces from
    /// `buffers` (a used buffer is fine: it is resized, not cleared), and seals each chunk where
    /// it lies, so nothing is copied between the read and the send. `send` gets each piece once
    /// all its chunks are sealed ([`Piece::into_sealed`] is the bytes that follow the header).
    ///
    /// age marks a body's last chunk, and a full chunk is the last only if nothing follows it, so
    /// each full chunk waits, unsealed, for the next read: one that finds nothing makes it the
    /// last. A short read (the input ended) is the last chunk at once, and nothing more is read;
    /// an empty input is one empty last chunk.
    pub fn seal_pieces<E: From<CryptoError>>(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> Result<usize, E>,
        mut buffers: impl FnMut() -> Vec<u8>,
        mut send: impl FnMut(Piece) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut piece = Piece::new(buffers());
        // A piece whose final chunk is the one waiting.
        let mut full: Option<Piece> = None;
        let mut waiting = false;
        loop {
            if piece.count == FRAMES {
                full = Some(std::mem::replace(&mut piece, Piece::new(buffers())));
            }
            let at = piece.count * FRAME;
            let n = read(&mut piece.buf[at..at + CHUNK])?;
            if waiting {
                let last = n == 0;
                let holder = full.as_mut().unwrap_or(&mut piece);
                let i = holder.count - 1;
                self.seal(&mut holder.buf[i * FRAME..(i + 1) * FRAME], last)?;
                holder.lens[i] = FRAME;
                if let Some(done) = full.take() {
                    send(done)?;
                }
                if last {
                    break;
                }
            }
            let i = piece.count;
            piece.count += 1;
            if n < CHUNK {
                self.seal(&mut piece.buf[at..at + n + TAG], true)?;
                piece.lens[i] = n + TAG;
                break;
            }
            waiting = true;
        }
        if piece.count > 0 {
            send(piece)?;
        }
        Ok(())
    }
}

/// Where an age file's payload starts, if `prefix` holds its whole header: after the MAC line
/// (`--- ` and base64, the only line of a header that starts with `-` and not `->`) and the
/// 16-byte nonce. A hint for cutting the ciphertext into pieces as it arrives, nothing more: the
/// header itself is checked by [`Opener::start`], which refuses one that does not end there.
pub fn header_len(prefix: &[u8]) -> Option<usize> {
    const MAC: &[u8] = b"\n--- ";
    let mac = prefix.windows(MAC.len()).position(|w| w == MAC)? + 1;
    let end = mac + prefix[mac..].iter().position(|&b| b == b'\n')? + 1 + NONCE;
    (end <= prefix.len()).then_some(end)
}

/// Opens a body's payload as it arrives in runs of [`PIECE`] bytes, each a [`Piece`] of
/// [`FRAMES`] whole chunks: the payload is chunks of exactly [`FRAME`] bytes but the last, so
/// cutting it every [`PIECE`] bytes never splits one. Each chunk is opened where it lies, and
/// whether a full chunk is the body's last is known only from what comes after it, so a run's
/// final chunk waits for the next run, or for the end.
pub struct Unsealer {
    opener: Opener,
    held: Option<Piece>,
}

impl Unsealer {
    /// Opens the payload that follows the header `opener` read.
    pub fn new(opener: Opener) -> Self {
        Self { opener, held: None }
    }

    /// Takes the next run, exactly [`PIECE`] bytes (a shorter one ends the payload: pass it to
    /// [`Unsealer::finish`]). Returns the run before it, all its chunks now authenticated.
    pub fn push(&mut self, run: Vec<u8>) -> Result<Option<Piece>, CryptoError> {
        if run.len() != PIECE {
            return Err(CryptoError::Decrypt(
                "a run of the body has the wrong length".into(),
            ));
        }
        let before = self.release(false)?;
        let mut piece = Piece {
            buf: run,
            lens: [0; FRAMES],
            count: FRAMES,
        };
        for i in 0..FRAMES - 1 {
            piece.lens[i] = self.open_frame(&mut piece, i, false)?;
        }
        self.held = Some(piece);
        Ok(before)
    }

    /// Takes the last run, shorter than [`PIECE`] bytes and possibly empty, and checks that the
    /// payload ends exactly with its last chunk. Returns what was still held and this run,
    /// opened.
    pub fn finish(mut self, run: Vec<u8>) -> Result<[Option<Piece>; 2], CryptoError> {
        if run.len() >= PIECE {
            return Err(CryptoError::Decrypt(
                "a run of the body has the wrong length".into(),
            ));
        }
        if run.is_empty() && self.held.is_some() {
            return Ok([self.release(true)?, None]);
        }
        let before = self.release(false)?;
        // Whole chunks, then a short one; a run that ends on a chunk boundary ends with a whole
        // last chunk; an empty payload is one empty chunk, which `open` refuses.
        let count = run.len().div_ceil(FRAME).max(1);
        let mut piece = Piece {
            buf: run,
            lens: [0; FRAMES],
            count,
        };
        for i in 0..count {
            piece.lens[i] = self.open_frame(&mut piece, i, i == count - 1)?;
        }
        if !self.opener.finished() {
            return Err(CryptoError::Decrypt(
                "the body ends before its last chunk".into(),
            ));
        }
        Ok([before, Some(piece)])
    }

    /// Opens a whole payload from its runs, in order ([`Unsealer::push`] for each, then
    /// [`Unsealer::finish`] with the first shorter one, or with nothing if the runs simply end),
    /// handing each piece to `each` once all its chunks have authenticated. Runs after a short
    /// one are never asked for.
    pub fn open_runs<E: From<CryptoError>>(
        mut self,
        runs: impl IntoIterator<Item = Result<Vec<u8>, E>>,
        mut each: impl FnMut(Piece) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut last = Vec::new();
        for run in runs {
            let run = run?;
            if run.len() < PIECE {
                last = run;
                break;
            }
            if let Some(piece) = self.push(run)? {
                each(piece)?;
            }
        }
        for piece in self.finish(last)?.into_iter().flatten() {
            each(piece)?;
        }
        Ok(())
    }

    /// Opens the held run's final chunk, as the `last` or not, and gives the run up.
    fn release(&mut self, last: bool) -> Result<Option<Piece>, CryptoError> {
        let Some(mut piece) = self.held.take() else {
            return Ok(None);
        };
        piece.lens[FRAMES - 1] = self.open_frame(&mut piece, FRAMES - 1, last)?;
        Ok(Some(piece))
    }

    /// Opens chunk `i` of `piece` in place and returns its plaintext length.
    fn open_frame(
        &mut self,
        piece: &mut Piece,
        i: usize,
        last: bool,
    ) -> Result<usize, CryptoError> {
        let end = piece.buf.len().min((i + 1) * FRAME);
        let frame = &mut piece.buf[i * FRAME..end];
        Ok(self.opener.open(frame, last)?.len())
    }
}

/// Decrypts the chunks that follow an [`Opener`]'s header in `input`, handing each plaintext
/// to `each` once it has authenticated ([`Unsealer`]). Returns the plaintext size.
pub fn open_all(
    opener: Opener,
    mut input: impl Read,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, CryptoError> {
    let runs = std::iter::from_fn(|| {
        let mut run = vec![0u8; PIECE];
        Some(match read_full(&mut input, &mut run) {
            Ok(n) => {
                run.truncate(n);
                Ok(run)
            }
            Err(e) => Err(CryptoError::Decrypt(e.to_string())),
        })
    });
    let mut size = 0u64;
    Unsealer::new(opener).open_runs(runs, |piece| {
        for plain in piece.chunks() {
            each(plain)
                .map_err(|e| CryptoError::Decrypt(format!("cannot write the plaintext: {e}")))?;
            size += plain.len() as u64;
        }
        Ok(())
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `data` as an age file with [`Sealer`], a chunk at a time.
    fn seal_all(recipient: &age::x25519::Recipient, data: &[u8]) -> Vec<u8> {
        let (mut out, mut sealer) = Sealer::start(recipient).unwrap();
        let mut chunks = data.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            let mut frame = [0u8; TAG];
            sealer.seal(&mut frame, true).unwrap();
            out.extend_from_slice(&frame);
        }
        while let Some(chunk) = chunks.next() {
            let mut frame = chunk.to_vec();
            frame.resize(chunk.len() + TAG, 0);
            sealer.seal(&mut frame, chunks.peek().is_none()).unwrap();
            out.extend_from_slice(&frame);
        }
        assert!(sealer.finished());
        out
    }

    fn open_with_module(
        identity: &age::x25519::Identity,
        file: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut input = Jitter(file, file.len() as u64);
        let opener = Opener::start(&mut input, identity)?;
        let mut out = Vec::new();
        open_all(opener, input, |p| {
            out.extend_from_slice(p);
            Ok(())
        })?;
        Ok(out)
    }

    fn open_with_age(identity: &age::x25519::Identity, file: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut reader = age::Decryptor::new(file)
            .and_then(|d| d.decrypt(std::iter::once(identity as &dyn age::Identity)))
            .map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    fn seal_with_age(recipient: &age::x25519::Recipient, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut w = age::Encryptor::with_recipients(std::iter::once(recipient as _))
            .unwrap()
            .wrap_output(&mut out)
            .unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        out
    }

    const SIZES: [usize; 8] = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        3 * CHUNK + 12_345,
        5 * CHUNK,
    ];

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn the_age_crate_reads_what_the_sealer_writes_and_the_reverse() {
        let id = age::x25519::Identity::generate();
        for len in SIZES {
            let data = pattern(len);
            let ours = seal_all(&id.to_public(), &data);
            assert_eq!(
                open_with_age(&id, &ours).unwrap(),
                data,
                "{len}: age reads ours"
            );
            assert_eq!(open_with_module(&id, &ours).unwrap(), data, "{len}: ours");
            let theirs = seal_with_age(&id.to_public(), &data);
            assert_eq!(
                open_with_module(&id, &theirs).unwrap(),
                data,
                "{len}: age's"
            );
        }
    }

    #[test]
    fn truncations_and_extensions_are_refused() {
        let id = age::x25519::Identity::generate();
        for len in [0, CHUNK, 2 * CHUNK + 5] {
            let file = seal_all(&id.to_public(), &pattern(len));
            let payload = file.len() - (len + len.div_ceil(CHUNK).max(1) * TAG);
            // Every length in the header and nonce; around each chunk's start, tag and end; and
            // a sample of the rest (each payload cut costs an X25519 unwrap, slow in debug).
            let around = |at: usize| at.saturating_sub(2)..at + 3;
            let cuts = (0..payload)
                .chain((payload..file.len()).step_by(4099))
                .chain((payload..file.len()).step_by(FRAME).flat_map(|at| {
                    around(at)
                        .chain(around(at + CHUNK))
                        .chain(around(at + FRAME))
                }))
                .chain(around(file.len() - TAG))
                .filter(|&cut| cut < file.len());
            for cut in cuts {
                assert!(
                    open_with_module(&id, &file[..cut]).is_err(),
                    "{len}: cut at {cut} of {} accepted",
                    file.len()
                );
            }
            for extra in [&[0u8][..], &[0u8; TAG][..], &[1u8; FRAME][..]] {
                let mut longer = file.clone();
                longer.extend_from_slice(extra);
                assert!(open_with_module(&id, &longer).is_err(), "{len}: extended");
            }
        }
    }

    #[test]
    fn swapped_flipped_or_foreign_chunks_are_refused() {
        let id = age::x25519::Identity::generate();
        let data = pattern(3 * CHUNK + 100);
        let file = seal_all(&id.to_public(), &data);
        let head = file.len() - (3 * FRAME + 100 + TAG);
        // Two middle chunks swapped.
        let mut swapped = file.clone();
        let (a, b) = (head, head + FRAME);
        let first = file[a..a + FRAME].to_vec();
        swapped.copy_within(b..b + FRAME, a);
        swapped[b..b + FRAME].copy_from_slice(&first);
        assert!(open_with_module(&id, &swapped).is_err());
        // One bit anywhere after the header.
        for at in [head, head + FRAME - 1, head + 2 * FRAME + 7, file.len() - 1] {
            let mut flipped = file.clone();
            flipped[at] ^= 1;
            assert!(open_with_module(&id, &flipped).is_err(), "bit at {at}");
        }
        // Cut after a full middle chunk: sealed as a middle chunk, it never opens as the last.
        let cut = head + FRAME;
        assert!(open_with_module(&id, &file[..cut]).is_err());
        // The wrong identity.
        let other = age::x25519::Identity::generate();
        assert!(open_with_module(&other, &file).is_err());
    }

    /// A reader that returns a different number of bytes each time, 1 to 70,000.
    struct Jitter<'a>(&'a [u8], u64);

    impl Read for Jitter<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self
                .1
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let n = ((self.1 >> 33) as usize % 70_000 + 1)
                .min(out.len())
                .min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn pieces_round_trip_through_the_age_crate_with_reads_of_any_size() {
        let id = age::x25519::Identity::generate();
        for len in SIZES
            .into_iter()
            .chain([4 * CHUNK, 4 * CHUNK + 1, 9 * CHUNK - 1])
        {
            let data = pattern(len);
            let (mut file, mut sealer) = Sealer::start(&id.to_public()).unwrap();
            let mut src = Jitter(&data, len as u64);
            sealer
                .seal_pieces::<CryptoError>(
                    |buf| Ok(read_full(&mut src, buf).unwrap()),
                    Vec::new,
                    |piece| {
                        file.extend_from_slice(&piece.into_sealed());
                        Ok(())
                    },
                )
                .unwrap();
            assert!(sealer.finished());
            assert_eq!(
                open_with_age(&id, &file).unwrap(),
                data,
                "{len}: age reads it"
            );
            // As a download does: the header, then runs of PIECE bytes.
            let split = header_len(&file[..file.len().min(4096)]).unwrap();
            let mut back = Vec::new();
            let mut pieces = 0;
            Unsealer::new(Opener::start_exact(&file[..split], &id).unwrap())
                .open_runs(
                    file[split..].chunks(PIECE).map(|run| Ok(run.to_vec())),
                    |piece| {
                        pieces += 1;
                        piece.chunks().for_each(|c| back.extend_from_slice(c));
                        Ok::<_, CryptoError>(())
                    },
                )
                .unwrap();
            assert!(back == data, "{len}: read back differently");
            assert_eq!(pieces, len.div_ceil(PIECE - FRAMES * TAG).max(1), "{len}");
            assert!(
                Opener::start_exact(&file[..split + 1], &id).is_err(),
                "{len}: header + 1"
            );
            assert!(
                Opener::start_exact(&file[..split - 1], &id).is_err(),
                "{len}: header - 1"
            );
        }
    }

    #[test]
    fn a_header_of_another_shape_is_refused_before_anything_is_sealed() {
        let id = age::x25519::Identity::generate();
        let (head, _) = Sealer::start(&id.to_public()).unwrap();
        assert!(header_nonce(&head).is_ok());
        let mut later = head.clone();
        later.extend_from_slice(b"extra");
        assert!(header_nonce(&later).is_err(), "bytes after the nonce");
        let mut shorter = head.clone();
        shorter.remove(head.len() - 20);
        assert!(header_nonce(&shorter).is_err(), "a short MAC line");
        assert!(header_nonce(&head[..10]).is_err());
        assert!(header_nonce(&[]).is_err());
    }

    #[test]
    fn the_sealer_refuses_chunks_of_the_wrong_shape() {
        let id = age::x25519::Identity::generate();
        let (_, mut sealer) = Sealer::start(&id.to_public()).unwrap();
        assert!(
            sealer.seal(&mut [0u8; 10], false).is_err(),
            "no room for a tag"
        );
        assert!(sealer.seal(&mut [0u8; 100], false).is_err(), "short middle");
        assert!(
            sealer.seal(&mut [0u8; FRAME + 1], true).is_err(),
            "too long"
        );
        sealer.seal(&mut vec![0u8; FRAME], false).unwrap();
        assert!(sealer.seal(&mut [0u8; TAG], true).is_err(), "empty last");
        sealer.seal(&mut [0u8; TAG + 1], true).unwrap();
        assert!(
            sealer.seal(&mut [0u8; TAG + 1], true).is_err(),
            "after last"
        );
    }
}
