//! The share descriptor: what the patient shared, signed with the share's key.
//!
//! The patient's CLI writes it and signs it with the Ed25519 key derived from the token secret,
//! which only the patient and the token holder know. The provider's CLI verifies it with the key
//! it derives itself — never one the server supplies — before it writes any file, so a server that
//! adds, swaps or truncates a record, an envelope or a title is caught (design property 6).

use crate::encoding::serde_b64;
use crate::{Category, CryptoError, RecordId, Role, ShareId, UserId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The current descriptor version.
pub const DESCRIPTOR_VERSION: u32 = 1;
const SIGNING_LABEL: &[u8] = b"healthlock/v1/descriptor\n";

/// What a share contains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDescriptor {
    /// Always [`DESCRIPTOR_VERSION`].
    pub v: u32,
    /// The share, as derived from the token.
    pub share_id: ShareId,
    /// The server the share lives on.
    pub origin: String,
    /// The patient's account.
    pub patient: UserId,
    /// The patient's age recipient: where a doctor's attachments are sealed to.
    pub patient_recipient: String,
    /// The role the share was made for.
    pub role: Role,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// Every record in the share (including those the role may not read).
    pub records: Vec<DescriptorEntry>,
}

/// One record as the patient committed to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorEntry {
    /// The record.
    pub id: RecordId,
    /// Its category (the server filters on it).
    pub category: Category,
    /// Size of the ciphertext body in bytes.
    pub size: u64,
    /// The ciphertext body's hash ([`crate::body_hash`]). Descriptors signed before bodies were
    /// hashed with BLAKE3 name it `sha256`.
    #[serde(alias = "sha256")]
    pub hash: String,
    /// SHA-256 of the record key's envelope to this share, hex.
    pub envelope_sha256: String,
    /// SHA-256 of the sealed metadata, hex.
    pub meta_sha256: String,
}

/// A descriptor's exact bytes and their signature, as stored by the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedDescriptor {
    /// The JSON bytes of a [`ShareDescriptor`].
    #[serde(with = "serde_b64")]
    pub bytes: Vec<u8>,
    /// Ed25519 signature over `"healthlock/v1/descriptor\n" ‖ bytes`.
    #[serde(with = "serde_b64")]
    pub signature: Vec<u8>,
}

fn signed_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_LABEL.len() + bytes.len());
    m.extend_from_slice(SIGNING_LABEL);
    m.extend_from_slice(bytes);
    m
}

impl ShareDescriptor {
    /// Serializes and signs with the share's key.
    pub fn sign(&self, key: &SigningKey) -> SignedDescriptor {
        let bytes = serde_json::to_vec(self).expect("descriptor serializes");
        let signature = key.sign(&signed_message(&bytes)).to_bytes().to_vec();
        SignedDescriptor { bytes, signature }
    }

    /// The entry for `id`, if the record is in the share.
    pub fn entry(&self, id: &RecordId) -> Option<&DescriptorEntry> {
        self.records.iter().find(|e| &e.id == id)
    }
}

impl SignedDescriptor {
    /// Verifies the signature with `key` (derived by the verifier), then parses.
    pub fn verify(&self, key: &VerifyingKey) -> Result<ShareDescriptor, CryptoError> {
        let sig = Signature::from_slice(&self.signature).map_err(|_| CryptoError::BadSignature)?;
        key.verify_strict(&signed_message(&self.bytes), &sig)
            .map_err(|_| CryptoError::BadSignature)?;
        self.parse_unverified()
    }

    /// Parses without checking the signature. Only for the server, which cannot verify who signed
    /// and uses the content only to check it against its own records.
    pub fn parse_unverified(&self) -> Result<ShareDescriptor, CryptoError> {
        let d: ShareDescriptor = serde_json::from_slice(&self.bytes)
            .map_err(|_| CryptoError::Encoding("share descriptor"))?;
        if d.v != DESCRIPTOR_VERSION {
            return Err(CryptoError::Encoding("share descriptor version"));
        }
        Ok(d)
    }

    /// Checks the signature against a public key given as hex (the server's check at creation).
    pub fn verify_with_hex(&self, key_hex: &str) -> Result<ShareDescriptor, CryptoError> {
        self.verify(&crate::keys::parse_verifying_key(key_hex)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::ShareSecret;

    fn sample(s: &ShareSecret) -> ShareDescriptor {
        ShareDescriptor {
            v: 1,
            share_id: s.share_id(),
            origin: "http://127.0.0.1:8080".into(),
            patient: UserId::random(),
            patient_recipient: age::x25519::Identity::generate().to_public().to_string(),
            role: Role::Pharmacist,
            created: 1,
            expires: 2,
            records: vec![DescriptorEntry {
                id: RecordId::random(),
                category: Category::Prescription,
                size: 10,
                hash: format!("blake3:{}", "00".repeat(32)),
                envelope_sha256: "11".repeat(32),
                meta_sha256: "22".repeat(32),
            }],
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let s = ShareSecret::generate();
        let d = sample(&s);
        let signed = d.sign(&s.signing_key());
        let vk = s.signing_key().verifying_key();
        assert_eq!(signed.verify(&vk).unwrap(), d);

        let mut tampered = signed.clone();
        let text = String::from_utf8(tampered.bytes.clone()).unwrap();
        tampered.bytes = text.replace("\"size\":10", "\"size\":9").into_bytes();
        assert!(matches!(
            tampered.verify(&vk),
            Err(CryptoError::BadSignature)
        ));

        let other = ShareSecret::generate().signing_key().verifying_key();
        assert!(signed.verify(&other).is_err());
    }

    #[test]
    fn a_descriptor_signed_before_blake3_names_the_hash_sha256_and_still_reads() {
        let s = ShareSecret::generate();
        let mut d = sample(&s);
        d.records[0].hash = "33".repeat(32);
        let mut text = String::from_utf8(d.sign(&s.signing_key()).bytes).unwrap();
        assert!(text.contains(",\"hash\":\""));
        text = text.replace(",\"hash\":\"", ",\"sha256\":\"");
        let before = SignedDescriptor {
            signature: s
                .signing_key()
                .sign(&signed_message(text.as_bytes()))
                .to_bytes()
                .to_vec(),
            bytes: text.into_bytes(),
        };
        assert_eq!(before.verify(&s.signing_key().verifying_key()).unwrap(), d);
    }
}
