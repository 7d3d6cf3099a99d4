//! The share token: 128 secret bits that open one share.
//!
//! A token is `hl1` followed by the lowercase, unpadded base32 of the 16-byte secret `S` and a
//! 2-byte checksum (`SHA-256("healthlock/v1/token-checksum" ‖ S)[..2]`), 32 characters in all, so a
//! typo is caught before anything is sent. A link is `ORIGIN/s#TOKEN`: the fragment is never sent
//! to any server. From `S`, HKDF-SHA256 derives, each under its own label:
//!
//! * the share id the server indexes (`healthlock/v1/share-id`, 16 bytes),
//! * the age identity that opens the share's envelopes (`healthlock/v1/share-age`),
//! * the Ed25519 key that proves possession and signs the descriptor (`healthlock/v1/share-sign`),
//! * the key of the passcode proof (`healthlock/v1/passcode`).

use crate::kdf::hkdf32;
use crate::{CryptoError, ShareId};
use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The version prefix of every token.
pub const TOKEN_PREFIX: &str = "hl1";
/// Secret bytes in a token.
pub const SECRET_LEN: usize = 16;
const CHECKSUM_LEN: usize = 2;

/// The secret `S` of a share. Redacted `Debug`, zeroized on drop, no `Serialize`.
#[derive(Clone)]
pub struct ShareSecret(Zeroizing<[u8; SECRET_LEN]>);

impl std::fmt::Debug for ShareSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareSecret(share {}, <redacted>)", self.share_id())
    }
}

fn checksum(secret: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = Sha256::new();
    h.update(b"healthlock/v1/token-checksum");
    h.update(secret);
    let d = h.finalize();
    [d[0], d[1]]
}

impl ShareSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        Self(Zeroizing::new(crate::random_bytes()))
    }

    /// The secret made of these bytes (tests and known-answer vectors).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The token text, `hl1…`. Secret: print it only to the patient.
    pub fn to_token(&self) -> String {
        let mut raw = Zeroizing::new([0u8; SECRET_LEN + CHECKSUM_LEN]);
        raw[..SECRET_LEN].copy_from_slice(&self.0[..]);
        raw[SECRET_LEN..].copy_from_slice(&checksum(&self.0[..]));
        format!(
            "{TOKEN_PREFIX}{}",
            BASE32_NOPAD.encode(&raw[..]).to_ascii_lowercase()
        )
    }

    /// The link a patient hands over: `ORIGIN/s#TOKEN`.
    pub fn to_link(&self, origin: &str) -> String {
        format!("{}/s#{}", origin.trim_end_matches('/'), self.to_token())
    }

    /// The id under which the server stores the share.
    pub fn share_id(&self) -> ShareId {
        let k = hkdf32(&self.0[..], "healthlock/v1/share-id");
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[..16]);
        ShareId::from_bytes(&id)
    }

    /// The age identity that opens the share's envelopes.
    pub fn age_identity(&self) -> age::x25519::Identity {
        crate::keys::identity_from_seed(&hkdf32(&self.0[..], "healthlock/v1/share-age"))
    }

    /// The Ed25519 key that proves possession and signs the descriptor.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&hkdf32(&self.0[..], "healthlock/v1/share-sign"))
    }

    /// Proof that the caller knows both `S` and the passcode: HMAC-SHA256 keyed by a key derived
    /// from `S`, over the passcode's digits. The server stores only an Argon2id hash of it.
    pub fn passcode_proof(&self, passcode: &str) -> [u8; 32] {
        let key = hkdf32(&self.0[..], "healthlock/v1/passcode");
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        mac.update(normalize_passcode(passcode).as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Signs the open challenge (see [`open_message`]).
    pub fn sign_open(&self, origin: &str, nonce: &str) -> Signature {
        self.signing_key()
            .sign(&open_message(origin, &self.share_id(), nonce))
    }
}

/// The bytes signed to open a share: domain label, the server's origin, the share id and the
/// server's single-use nonce, newline-separated.
pub fn open_message(origin: &str, share_id: &ShareId, nonce: &str) -> Vec<u8> {
    format!("healthlock/v1/open\n{origin}\n{share_id}\n{nonce}").into_bytes()
}

/// An open signature with what it must verify against, owned, so that proofs from concurrent
/// requests can be checked together ([`verify_opens`]).
pub struct OpenProof {
    key: VerifyingKey,
    message: Vec<u8>,
    /// `None` when the bytes are not a signature at all.
    signature: Option<Signature>,
}

impl OpenProof {
    /// The proof that `signature` claims: the share's key signed [`open_message`].
    pub fn new(
        key: VerifyingKey,
        origin: &str,
        share_id: &ShareId,
        nonce: &str,
        signature: &[u8],
    ) -> Self {
        Self {
            key,
            message: open_message(origin, share_id, nonce),
            signature: Signature::from_slice(signature).ok(),
        }
    }

    /// Checked alone, with the strict rules (no small-order key or `R`, canonical `s`).
    fn holds(&self) -> bool {
        self.signature
            .is_some_and(|sig| self.key.verify_strict(&self.message, &sig).is_ok())
    }
}

/// Checks many open proofs; returns, for each, whether it holds.
///
/// Ed25519 verification is most of the CPU an open costs the server (about 110 µs of 500 on the
/// development machine), and checking signatures together costs half as much each from eight on:
/// one equation over a linear combination (ed25519-dalek's `verify_batch`, with coefficients
/// derived by hashing every signature and message, so no signer can choose them). When that
/// equation fails, each proof is checked alone with
/// [`verify_strict`](VerifyingKey::verify_strict), so a bad signature costs its batch one more
/// pass and is refused on its own.
///
/// The batch equation is the cofactorless one, like `verify_strict`'s, but it cannot refuse a
/// small-order `R` the way `verify_strict` does, and may accept a signature whose `R` carries a
/// small-order component (with probability 1/8 to 1/2, by that component's order). Only the
/// holder of the share's key can make either: neither lets anyone without the secret open a
/// share, which is all an open proof must show (its nonce, not its signature's bytes, makes it
/// single-use). A small-order key turns batching off for the whole group (and the server never
/// stores one: a share's descriptor must verify with its key when the share is made).
pub fn verify_opens(proofs: &[OpenProof]) -> Vec<bool> {
    let batchable = proofs.len() > 1
        && proofs
            .iter()
            .all(|p| p.signature.is_some() && !p.key.is_weak());
    if batchable {
        let messages: Vec<&[u8]> = proofs.iter().map(|p| p.message.as_slice()).collect();
        let signatures: Vec<Signature> = proofs.iter().filter_map(|p| p.signature).collect();
        let keys: Vec<VerifyingKey> = proofs.iter().map(|p| p.key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![true; proofs.len()];
        }
    }
    proofs.iter().map(OpenProof::holds).collect()
}

/// A passcode with everything but its digits and letters removed, lowercased.
pub fn normalize_passcode(p: &str) -> String {
    p.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A fresh passcode to read out: 8 digits in two groups (about 26.6 bits; it is an online factor
/// that the server locks after 5 wrong tries).
pub fn generate_passcode() -> String {
    let bytes = crate::random_bytes::<8>();
    let digits: String = bytes
        .iter()
        .map(|b| char::from(b'0' + (u16::from(*b) * 10 / 256) as u8))
        .collect();
    format!("{}-{}", &digits[..4], &digits[4..])
}

/// What a link or bare token says.
#[derive(Debug)]
pub struct ParsedToken {
    /// The server origin from a link; `None` for a bare token.
    pub origin: Option<String>,
    /// The share's secret.
    pub secret: ShareSecret,
}

/// Parses `ORIGIN/s#hl1…` or a bare `hl1…` token (case and surrounding space ignored).
pub fn parse_link_or_token(input: &str) -> Result<ParsedToken, CryptoError> {
    let input = input.trim();
    let (origin, token) = match input.split_once('#') {
        Some((url, token)) => {
            let base = url.strip_suffix("/s").ok_or(CryptoError::MalformedToken(
                "a link must look like https://SERVER/s#hl1…",
            ))?;
            (Some(normalize_origin(base)?), token)
        }
        None => (None, input),
    };
    let token = token.trim().to_ascii_lowercase();
    let body = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(CryptoError::MalformedToken("a token starts with hl1"))?;
    let raw = Zeroizing::new(
        BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                CryptoError::MalformedToken("it contains characters that cannot be in a token")
            })?,
    );
    if raw.len() != SECRET_LEN + CHECKSUM_LEN {
        return Err(CryptoError::MalformedToken(
            "it has the wrong length (is it complete?)",
        ));
    }
    let (secret, sum) = raw.split_at(SECRET_LEN);
    if !bool::from(checksum(secret).ct_eq(sum)) {
        return Err(CryptoError::MalformedToken(
            "its checksum does not match (a typo?)",
        ));
    }
    let mut bytes = [0u8; SECRET_LEN];
    bytes.copy_from_slice(secret);
    Ok(ParsedToken {
        origin,
        secret: ShareSecret::from_bytes(bytes),
    })
}

/// Reduces a server URL to its origin, `scheme://host[:port]`, lowercase, without a path.
pub fn normalize_origin(url: &str) -> Result<String, CryptoError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or(CryptoError::MalformedToken(
        "a server address starts with http:// or https://",
    ))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(CryptoError::MalformedToken(
            "a server address starts with http:// or https://",
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || host.chars().any(|c| c.is_whitespace()) {
        return Err(CryptoError::MalformedToken(
            "the server address has no valid host",
        ));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Hex of an Ed25519 public key.
pub fn verifying_key_hex(key: &VerifyingKey) -> String {
    crate::encoding::hex(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> ShareSecret {
        ShareSecret::from_bytes(*b"0123456789abcdef")
    }

    /// Known-answer vector for the token text and every value derived from it, computed
    /// independently (Python hashlib/cryptography, `age-keygen -y`).
    #[test]
    fn known_answer() {
        let s = fixed();
        assert_eq!(s.to_token(), "hl1gaytemzugu3doobzmfrggzdfm2jl2");
        assert_eq!(s.share_id().as_str(), "ba08f0b372d5787bf9932427401abc8e");
        assert_eq!(
            s.age_identity().to_public().to_string(),
            "age1a4q737zynlvf2mel3p6f0fuvkaru0fu7j3nhqsr8ctumxfsexa9sput300"
        );
        assert_eq!(
            verifying_key_hex(&s.signing_key().verifying_key()),
            "9d97e6f8846b3d9b46b5f2b2e67c597fedaf77f585724898ada7080ac75902f0"
        );
        assert_eq!(
            crate::encoding::hex(&s.passcode_proof("1234-5678")),
            "c4ecebe04df1d281b4a7c47127f4b5d225646243cc5fce201f80f9b9db17801e"
        );
    }

    /// Proofs checked together give each proof the answer it gets alone: a batch of good ones
    /// holds, and one bad proof (wrong nonce, wrong key, not a signature, small-order key)
    /// fails alone without failing the others.
    #[test]
    fn proofs_checked_together_answer_each_as_alone() {
        let origin = "https://hl.example";
        let secrets: Vec<ShareSecret> = (0..9).map(|_| ShareSecret::generate()).collect();
        let proof = |s: &ShareSecret, nonce: &str, sig_nonce: &str| {
            let key = s.signing_key().verifying_key();
            let sig = s.sign_open(origin, sig_nonce).to_bytes();
            OpenProof::new(key, origin, &s.share_id(), nonce, &sig)
        };
        let good: Vec<OpenProof> = secrets.iter().map(|s| proof(s, "n1", "n1")).collect();
        assert_eq!(verify_opens(&good), vec![true; 9]);
        assert_eq!(verify_opens(&good[..1]), vec![true]);
        assert_eq!(verify_opens(&[]), Vec::<bool>::new());

        let mut mixed: Vec<OpenProof> = secrets.iter().map(|s| proof(s, "n2", "n2")).collect();
        mixed[3] = proof(&secrets[3], "n2", "another nonce");
        let (a, b) = (&secrets[5], &secrets[6]);
        mixed[5] = OpenProof::new(
            b.signing_key().verifying_key(),
            origin,
            &a.share_id(),
            "n2",
            &a.sign_open(origin, "n2").to_bytes(),
        );
        // Well-formed signatures only: the batch equation runs, fails, and each is checked alone.
        let mut expected = vec![true; 9];
        (expected[3], expected[5]) = (false, false);
        assert_eq!(verify_opens(&mixed), expected);

        // Not a signature at all: no batch; checked alone, the others still hold.
        mixed[7] = OpenProof::new(
            secrets[7].signing_key().verifying_key(),
            origin,
            &secrets[7].share_id(),
            "n2",
            b"not a signature",
        );
        let mut expected = vec![true; 9];
        (expected[3], expected[5], expected[7]) = (false, false, false);
        assert_eq!(verify_opens(&mixed), expected);

        // The identity is a small-order key: with s = 0 and R = the identity, the equation
        // holds for any message, so only the small-order check refuses it, alone or together.
        let identity = VerifyingKey::from_bytes(&{
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        })
        .unwrap();
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let weak =
            |nonce: &str| OpenProof::new(identity, origin, &secrets[0].share_id(), nonce, &forged);
        let mut with_weak: Vec<OpenProof> = secrets.iter().map(|s| proof(s, "n3", "n3")).collect();
        with_weak.push(weak("n3"));
        let mut expected = vec![true; 9];
        expected.push(false);
        assert_eq!(verify_opens(&with_weak), expected);
        assert_eq!(verify_opens(&[weak("n4"), weak("n5")]), vec![false, false]);
    }

    #[test]
    fn round_trip_link_and_token() {
        let s = ShareSecret::generate();
        let link = s.to_link("HTTPS://Clinic.Example:8443/");
        let p = parse_link_or_token(&link).unwrap();
        assert_eq!(p.origin.as_deref(), Some("https://clinic.example:8443"));
        assert_eq!(p.secret.share_id(), s.share_id());
        let p = parse_link_or_token(&format!("  {}  ", s.to_token().to_uppercase())).unwrap();
        assert!(p.origin.is_none());
        assert_eq!(p.secret.share_id(), s.share_id());
        assert_eq!(s.to_token().len(), 32);
    }

    #[test]
    fn altered_tokens_are_refused() {
        let t = fixed().to_token();
        // Change one character anywhere in the body: the checksum catches it.
        for i in 3..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let altered = String::from_utf8(b).unwrap();
            assert!(parse_link_or_token(&altered).is_err(), "{altered}");
        }
        assert!(parse_link_or_token(&t[..t.len() - 1]).is_err());
        assert!(parse_link_or_token("hl2abc").is_err());
        assert!(parse_link_or_token("").is_err());
        assert!(parse_link_or_token("ftp://x/s#hl1aaaa").is_err());
        assert!(parse_link_or_token("https://x/notshare#hl1aaaa").is_err());
    }

    #[test]
    fn open_signature_binds_origin_share_and_nonce() {
        let s = fixed();
        let vk = s.signing_key().verifying_key();
        let sig = s.sign_open("https://a.example", "n1").to_bytes();
        let id = s.share_id();
        let holds = |origin: &str, id: &ShareId, nonce: &str, sig: &[u8]| {
            verify_opens(&[OpenProof::new(vk, origin, id, nonce, sig)]) == [true]
        };
        assert!(holds("https://a.example", &id, "n1", &sig));
        assert!(!holds("https://b.example", &id, "n1", &sig));
        assert!(!holds("https://a.example", &id, "n2", &sig));
        assert!(!holds("https://a.example", &ShareId::random(), "n1", &sig));
        assert!(!holds("https://a.example", &id, "n1", &sig[..10]));
    }

    #[test]
    fn passcodes() {
        let p = generate_passcode();
        assert_eq!(p.len(), 9);
        let s = fixed();
        assert_eq!(s.passcode_proof("1234-5678"), s.passcode_proof("12345678"));
        assert_ne!(s.passcode_proof("1234-5678"), s.passcode_proof("1234-5679"));
    }
}
