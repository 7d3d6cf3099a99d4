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
/// and the last-chunk flag.
struct Counter {
    next: u64,
    done: bool,
}

impl Counter {
    fn nonce(&mut self, last: bool) -> Result<Nonce, CryptoError> {
        if self.done {
            return Err(CryptoError::Decrypt(
                "data follows the final chunk of the body".into(),
            ));
        }
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&self.next.to_be_bytes());
        n[11] = u8::from(last);
        self.next = self
            .next
            .checked_add(1)
            .ok_or_else(|| CryptoError::Decrypt("too many chunks".into()))?;
        self.done = last;
        Ok(Nonce::assume_unique_for_key(n))
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
    pub fn start(recipient: &age::x25519::Recipient) -> (Vec<u8>, Self) {
        let keep = KeepFileKey::new(recipient);
        let mut head = Vec::with_capacity(256);
        // The crate writes the header and the nonce as it wraps the output; the stream writer it
        // returns is dropped unused, and the chunks are sealed below instead.
        age::Encryptor::with_recipients(std::iter::once(&keep as &dyn age::Recipient))
            .and_then(|e| e.wrap_output(&mut head).map_err(age::EncryptError::from))
            .map(drop)
            .expect("one X25519 recipient, written to memory, is always accepted");
        let file_key = keep
            .take()
            .expect("the recipient was asked to wrap the file key");
        let nonce: [u8; NONCE] = head[head.len() - NONCE..]
            .try_into()
            .expect("the header ends with the nonce");
        let key = payload_key(&file_key, &nonce);
        (
            head,
            Self {
                key,
                at: Counter {
                    next: 0,
                    done: false,
                },
            },
        )
    }

    /// Seals the next chunk. `frame` holds its plaintext followed by [`TAG`] bytes of room for
    /// the tag; the plaintext is [`CHUNK`] bytes unless `last`, and only the last may be empty
    /// when it is also the first (an empty body). Nothing may follow the last.
    pub fn seal(&mut self, frame: &mut [u8], last: bool) -> Result<(), CryptoError> {
        let len = frame
            .len()
            .checked_sub(TAG)
            .ok_or_else(|| CryptoError::Decrypt("a chunk needs room for its tag".into()))?;
        if len > CHUNK || (!last && len != CHUNK) || (last && len == 0 && self.at.next > 0) {
            return Err(CryptoError::Decrypt(format!(
                "a chunk of {len} bytes cannot be {} chunk",
                if last { "the last" } else { "a middle" }
            )));
        }
        let nonce = self.at.nonce(last)?;
        let (plain, room) = frame.split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), plain)
            .map_err(|_| CryptoError::Decrypt("sealing a chunk failed".into()))?;
        room.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Whether the last chunk has been sealed.
    pub fn finished(&self) -> bool {
        self.at.done
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
            at: Counter {
                next: 0,
                done: false,
            },
        })
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
        let nonce = self.at.nonce(last)?;
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

/// Decrypts the chunks that follow an [`Opener`]'s header in `input`, handing each plaintext
/// to `each` once it has authenticated, and fails unless the stream ends exactly after its
/// last chunk. A chunk is known to be the last only when nothing follows it, so each is held
/// until the next one's first bytes are in.
pub fn open_all(
    opener: &mut Opener,
    mut input: impl Read,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, CryptoError> {
    let io = |e: std::io::Error| CryptoError::Decrypt(e.to_string());
    let mut held = vec![0u8; FRAME];
    let mut next = vec![0u8; FRAME];
    let mut held_len = read_full(&mut input, &mut held).map_err(io)?;
    let mut size = 0u64;
    loop {
        let next_len = if held_len == FRAME {
            read_full(&mut input, &mut next).map_err(io)?
        } else {
            0
        };
        let last = next_len == 0;
        let plain = opener.open(&mut held[..held_len], last)?;
        each(plain)
            .map_err(|e| CryptoError::Decrypt(format!("cannot write the plaintext: {e}")))?;
        size += plain.len() as u64;
        if last {
            return Ok(size);
        }
        std::mem::swap(&mut held, &mut next);
        held_len = next_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `data` as an age file with [`Sealer`], a chunk at a time.
    fn seal_all(recipient: &age::x25519::Recipient, data: &[u8]) -> Vec<u8> {
        let (mut out, mut sealer) = Sealer::start(recipient);
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
        let mut input = file;
        let mut opener = Opener::start(&mut input, identity)?;
        let mut out = Vec::new();
        open_all(&mut opener, input, |p| {
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
    fn every_truncation_and_extension_is_refused() {
        let id = age::x25519::Identity::generate();
        for len in [0, CHUNK, 2 * CHUNK + 5] {
            let file = seal_all(&id.to_public(), &pattern(len));
            for cut in 0..file.len() {
                // Every length short of the whole: in the header, the nonce, or any chunk.
                if cut % 997 == 0 || file.len() - cut <= FRAME + 2 || cut < 300 {
                    assert!(
                        open_with_module(&id, &file[..cut]).is_err(),
                        "{len}: cut at {cut} of {} accepted",
                        file.len()
                    );
                }
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

    #[test]
    fn the_sealer_refuses_chunks_of_the_wrong_shape() {
        let id = age::x25519::Identity::generate();
        let (_, mut sealer) = Sealer::start(&id.to_public());
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
