//! A record's seal: the patient's Ed25519 signature over what they uploaded.
//!
//! The patient's CLI hashes the ciphertext as it sends it ([`crate::body_hash`]), then signs the
//! record's id, owner, category, size and hash, with the hashes of its envelope and sealed
//! metadata, using the account's signing key. Every later use on the patient's side (`share`,
//! `download`, `records`) checks the seal with the key the CLI holds, never one the server
//! supplies, so a server that plants a record in a vault, swaps one record's contents for
//! another's or changes a category is caught before the patient signs that record into a share.
//! The server checks the seal too, but only to refuse garbage: it never hashes an upload itself,
//! which saves it a full pass over every body.

use crate::body_hash::Algorithm;
use crate::encoding::{hex, sha256_hex, unhex};
use crate::{Category, CryptoError, RecordId, UserId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;

const SIGNING_LABEL: &[u8] = b"healthlock/v1/record\n";

/// What a seal covers, as the record stands in the vault.
#[derive(Clone, Copy)]
pub struct RecordSeal<'a> {
    /// The patient whose vault holds the record.
    pub owner: &'a UserId,
    /// The record.
    pub id: &'a RecordId,
    /// Its category (roles read by category, so it is part of what the patient vouches for).
    pub category: Category,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// The ciphertext's hash ([`crate::body_hash`]).
    pub hash: &'a str,
    /// The record key sealed to the patient.
    pub envelope: &'a [u8],
    /// Title and file name sealed to the record key.
    pub meta: &'a [u8],
}

/// The signed statement: fixed field order, so both sides build the same bytes.
#[derive(Serialize)]
struct Statement<'a> {
    v: u32,
    owner: &'a UserId,
    id: &'a RecordId,
    category: Category,
    size: u64,
    #[serde(flatten)]
    hash: HashField<'a>,
    envelope_sha256: String,
    meta_sha256: String,
}

/// The body hash's key in the statement: `v: 1` statements (bodies hashed with SHA-256, sealed
/// before BLAKE3) name it `sha256`, and must keep their exact bytes to verify; `v: 2` names it
/// `hash`, its value naming the algorithm.
#[derive(Serialize)]
enum HashField<'a> {
    #[serde(rename = "sha256")]
    Sha256(&'a str),
    #[serde(rename = "hash")]
    Hash(&'a str),
}

impl RecordSeal<'_> {
    fn message(&self) -> Vec<u8> {
        // A malformed hash is signed as it is, as `v: 2`: no seal over it will verify, because
        // the patient's CLI never signs one, and the server refuses it before it checks a seal.
        let (v, hash) = match Algorithm::of(self.hash) {
            Ok(Algorithm::Sha256) => (1, HashField::Sha256(self.hash)),
            _ => (2, HashField::Hash(self.hash)),
        };
        let statement = Statement {
            v,
            owner: self.owner,
            id: self.id,
            category: self.category,
            size: self.size,
            hash,
            envelope_sha256: sha256_hex(self.envelope),
            meta_sha256: sha256_hex(self.meta),
        };
        let mut m = SIGNING_LABEL.to_vec();
        m.extend_from_slice(&serde_json::to_vec(&statement).expect("statement serializes"));
        m
    }

    /// Signs with the patient's key; the seal as hex.
    pub fn sign(&self, key: &SigningKey) -> String {
        hex(&key.sign(&self.message()).to_bytes())
    }

    /// Checks a hex seal against the patient's public key.
    pub fn verify(&self, key: &VerifyingKey, seal: &str) -> Result<(), CryptoError> {
        let bytes = unhex(seal, "record seal")?;
        let sig =
            Signature::from_slice(&bytes).map_err(|_| CryptoError::Encoding("record seal"))?;
        key.verify_strict(&self.message(), &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_binds_every_field_and_the_key() {
        let key = SigningKey::from_bytes(&crate::random_bytes());
        let (owner, id, other_id) = (UserId::random(), RecordId::random(), RecordId::random());
        let hash = format!("blake3:{}", "ab".repeat(32));
        let seal = RecordSeal {
            owner: &owner,
            id: &id,
            category: Category::Lab,
            size: 100,
            hash: &hash,
            envelope: b"env",
            meta: b"meta",
        };
        let sig = seal.sign(&key);
        assert!(seal.verify(&key.verifying_key(), &sig).is_ok());

        let other_hash = format!("blake3:{}", "cd".repeat(32));
        // The same digest read as SHA-256.
        let other_algorithm = "ab".repeat(32);
        let altered = [
            RecordSeal {
                id: &other_id,
                ..seal
            },
            RecordSeal {
                category: Category::Prescription,
                ..seal
            },
            RecordSeal { size: 101, ..seal },
            RecordSeal {
                hash: &other_hash,
                ..seal
            },
            RecordSeal {
                hash: &other_algorithm,
                ..seal
            },
            RecordSeal {
                envelope: b"env2",
                ..seal
            },
            RecordSeal {
                meta: b"meta2",
                ..seal
            },
        ];
        for a in &altered {
            assert!(matches!(
                a.verify(&key.verifying_key(), &sig),
                Err(CryptoError::BadSignature)
            ));
        }
        let stranger = SigningKey::from_bytes(&crate::random_bytes()).verifying_key();
        assert!(seal.verify(&stranger, &sig).is_err());
        assert!(seal.verify(&key.verifying_key(), "00").is_err());
        assert!(seal.verify(&key.verifying_key(), "not hex").is_err());
    }

    #[test]
    fn a_seal_over_a_sha256_body_hash_keeps_the_bytes_sealed_before_blake3() {
        let (owner, id) = (UserId::random(), RecordId::random());
        let sha = "ab".repeat(32);
        let seal = RecordSeal {
            owner: &owner,
            id: &id,
            category: Category::Lab,
            size: 100,
            hash: &sha,
            envelope: b"env",
            meta: b"meta",
        };
        let before = format!(
            "healthlock/v1/record\n{{\"v\":1,\"owner\":\"{owner}\",\"id\":\"{id}\",\"category\":\"lab\",\
             \"size\":100,\"sha256\":\"{sha}\",\"envelope_sha256\":\"{}\",\"meta_sha256\":\"{}\"}}",
            sha256_hex(b"env"),
            sha256_hex(b"meta")
        );
        assert_eq!(String::from_utf8(seal.message()).unwrap(), before);
        let b3 = format!("blake3:{sha}");
        let now = String::from_utf8(RecordSeal { hash: &b3, ..seal }.message()).unwrap();
        assert!(now.contains("{\"v\":2,") && now.contains(&format!(",\"hash\":\"{b3}\",")));
    }
}
