//! Envelopes: small secrets sealed as standard age files.
//!
//! Each record has its own age identity `R`; its body is an age file encrypted to `R`. `R` itself
//! travels in envelopes — age files encrypted to the patient (in the vault) or to a share's key —
//! so sharing costs O(records), not O(bytes). The record's title and file name travel encrypted
//! to `R` too, so whoever may read a record may read its name, and the server never can.

use crate::CryptoError;
use age::secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The largest envelope or metadata file HealthLock will decrypt in memory.
pub const MAX_SMALL_AGE_FILE: usize = 64 * 1024;

/// Encrypts a small plaintext to one recipient as a binary age file.
pub fn seal(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .expect("one recipient is always accepted");
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .expect("writing to memory cannot fail");
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish().map(drop))
        .expect("writing to memory cannot fail");
    out
}

/// Decrypts a small age file made by [`seal`]. Refuses files over [`MAX_SMALL_AGE_FILE`].
pub fn open(
    identity: &age::x25519::Identity,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if ciphertext.len() > MAX_SMALL_AGE_FILE {
        return Err(CryptoError::Decrypt("envelope too large".into()));
    }
    let decryptor =
        age::Decryptor::new(ciphertext).map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut out)
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypts a (possibly large) age file from `input` into `output` in 64 KiB pieces, never holding
/// it whole, and returns the SHA-256 (hex) and size of the plaintext written. Every chunk is
/// authenticated before it is written, and a truncated or extended file is an error — but bytes
/// of earlier chunks may already be in `output`, so write to a temporary place and keep it only
/// on `Ok`.
pub fn decrypt_stream(
    mut input: impl Read,
    identity: &age::x25519::Identity,
    mut output: impl Write,
) -> Result<(String, u64), CryptoError> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    // The header goes through the `age` crate, the chunks through `body_stream`, as a record
    // body's do in `fetch`.
    let opener = crate::body_stream::Opener::start(&mut input, identity)?;
    let size = crate::body_stream::open_all(opener, input, |plain| {
        hash.update(plain);
        output.write_all(plain)
    })?;
    Ok((crate::encoding::hex(&hash.finalize()), size))
}

/// A record's own key `R`.
pub struct RecordKey(age::x25519::Identity);

impl RecordKey {
    /// A fresh key for a new record.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The identity, to decrypt the record's body and metadata.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.0
    }

    /// The identity, by value, for a decrypting thread.
    pub fn into_identity(self) -> age::x25519::Identity {
        self.0
    }

    /// The recipient the record's body and metadata are encrypted to.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.0.to_public()
    }

    /// `R` sealed to `to` (the patient, or a share's key).
    pub fn seal_to(&self, to: &age::x25519::Recipient) -> Vec<u8> {
        seal(to, self.0.to_string().expose_secret().as_bytes())
    }

    /// Opens an envelope made by [`RecordKey::seal_to`].
    pub fn open_envelope(
        identity: &age::x25519::Identity,
        envelope: &[u8],
    ) -> Result<Self, CryptoError> {
        let text = open(identity, envelope)?;
        let text = std::str::from_utf8(&text).map_err(|_| CryptoError::Encoding("record key"))?;
        Ok(Self(crate::keys::parse_identity(text)?))
    }
}

/// What the server must not see about a record: its title and original file name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The title the patient gave (or the file name).
    pub title: String,
    /// The original file name, without any directory.
    pub filename: String,
    /// The plaintext size in bytes (the server sees only the ciphertext's).
    #[serde(default)]
    pub size: u64,
}

impl RecordMeta {
    /// Encrypts the metadata to the record's key.
    pub fn seal(&self, key: &RecordKey) -> Vec<u8> {
        seal(
            &key.recipient(),
            &serde_json::to_vec(self).expect("strings serialize"),
        )
    }

    /// Decrypts metadata sealed with [`RecordMeta::seal`], and makes the file name safe to write:
    /// no directories, no leading dots, never empty.
    pub fn open(key: &RecordKey, sealed: &[u8]) -> Result<Self, CryptoError> {
        let json = open(key.identity(), sealed)?;
        let mut meta: Self =
            serde_json::from_slice(&json).map_err(|_| CryptoError::Encoding("record metadata"))?;
        meta.filename = safe_filename(&meta.filename);
        Ok(meta)
    }
}

/// Reduces a file name that came from someone else to a safe base name.
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .trim()
        .to_owned();
    if cleaned.is_empty() {
        "record".to_owned()
    } else {
        cleaned.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let patient = age::x25519::Identity::generate();
        let r = RecordKey::generate();
        let env = r.seal_to(&patient.to_public());
        let back = RecordKey::open_envelope(&patient, &env).unwrap();
        assert_eq!(back.recipient().to_string(), r.recipient().to_string());
        let other = age::x25519::Identity::generate();
        assert!(RecordKey::open_envelope(&other, &env).is_err());
    }

    #[test]
    fn envelope_is_a_standard_age_file() {
        let env = seal(&age::x25519::Identity::generate().to_public(), b"x");
        assert!(env.starts_with(b"age-encryption.org/v1\n"));
    }

    #[test]
    fn meta_round_trip_and_sanitised_names() {
        let r = RecordKey::generate();
        let meta = RecordMeta {
            title: "HIV test".into(),
            filename: "../../.bashrc".into(),
            size: 3,
        };
        let sealed = meta.seal(&r);
        assert!(!sealed.windows(8).any(|w| w == b"HIV test"));
        let back = RecordMeta::open(&r, &sealed).unwrap();
        assert_eq!(back.title, "HIV test");
        assert_eq!(back.filename, "bashrc");
        assert_eq!(safe_filename("C:\\x\\scan.pdf"), "scan.pdf");
        assert_eq!(safe_filename(".."), "record");
    }

    #[test]
    fn truncated_envelope_fails() {
        let patient = age::x25519::Identity::generate();
        let env = seal(&patient.to_public(), b"secret");
        assert!(open(&patient, &env[..env.len() - 1]).is_err());
    }
}
