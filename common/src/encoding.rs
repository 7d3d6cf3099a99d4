//! Text encodings used on the wire: base64 for binary fields, lowercase hex for hashes and ids.

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};

/// Encodes bytes as standard padded base64.
pub fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes standard padded base64; `what` names the field for the error message.
pub fn unb64(s: &str, what: &'static str) -> Result<Vec<u8>, crate::CryptoError> {
    BASE64
        .decode(s.as_bytes())
        .map_err(|_| crate::CryptoError::Encoding(what))
}

/// Encodes bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Decodes hex (either case); `what` names the field for the error message.
pub fn unhex(s: &str, what: &'static str) -> Result<Vec<u8>, crate::CryptoError> {
    HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .map_err(|_| crate::CryptoError::Encoding(what))
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Serde adapter: `Vec<u8>` as base64 text.
pub mod serde_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes as base64.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64(v))
    }

    /// Deserializes base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::unb64(&s, "base64 field").map_err(serde::de::Error::custom)
    }
}
