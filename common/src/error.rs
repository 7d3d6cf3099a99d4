//! Errors of the cryptographic formats.

/// Why a token, envelope, key or descriptor could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The token or link does not have HealthLock's format, or its checksum does not match
    /// (usually a typo or a truncated copy).
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    /// An age file could not be decrypted with the key at hand, or was damaged.
    #[error("could not decrypt: {0}")]
    Decrypt(String),
    /// An age file could not be made (a chunk of the wrong shape, or an age crate that writes
    /// headers differently from the one this was built against).
    #[error("could not encrypt: {0}")]
    Encrypt(String),
    /// The bytes are not in the expected encoding.
    #[error("invalid encoding of {0}")]
    Encoding(&'static str),
    /// A signature did not verify against the expected key.
    #[error("signature does not verify")]
    BadSignature,
    /// A key-derivation parameter is outside what HealthLock accepts.
    #[error("key derivation: {0}")]
    Kdf(String),
}

/// For the streaming code paths, whose stages speak `io::Error`: the reason is kept whole.
impl From<CryptoError> for std::io::Error {
    fn from(e: CryptoError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
