//! Account keys: an age X25519 identity (decrypts the vault's envelopes) and an Ed25519 key
//! (signs). Made on the client at registration and stored on the server only wrapped.

use crate::CryptoError;
use age::secrecy::ExposeSecret;
use bech32::ToBase32;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The age identity whose X25519 secret is exactly `seed`.
///
/// age has no constructor from bytes, so this goes through the standard Bech32 text form; the
/// result is an ordinary age identity that the reference `age` tool accepts.
pub fn identity_from_seed(seed: &[u8; 32]) -> age::x25519::Identity {
    let text = Zeroizing::new(
        bech32::encode("age-secret-key-", seed.to_base32(), bech32::Variant::Bech32)
            .expect("a fixed valid HRP and 32 bytes always encode")
            .to_uppercase(),
    );
    text.parse()
        .expect("a Bech32 AGE-SECRET-KEY of 32 bytes is a valid identity")
}

/// Parses an `AGE-SECRET-KEY-1…` string.
pub fn parse_identity(s: &str) -> Result<age::x25519::Identity, CryptoError> {
    s.trim()
        .parse()
        .map_err(|_| CryptoError::Encoding("age identity"))
}

/// Parses an `age1…` recipient string.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, CryptoError> {
    s.trim()
        .parse()
        .map_err(|_| CryptoError::Encoding("age recipient"))
}

/// An Ed25519 key from 32 secret bytes.
pub fn signing_key_from_seed(seed: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(seed)
}

/// Parses a hex Ed25519 public key.
pub fn parse_verifying_key(hex: &str) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
    let bytes: [u8; 32] = crate::encoding::unhex(hex, "ed25519 public key")?
        .try_into()
        .map_err(|_| CryptoError::Encoding("ed25519 public key"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| CryptoError::Encoding("ed25519 public key"))
}

/// A user's private keys. No `Serialize`, a redacted `Debug`; the secret form is produced only by
/// [`AccountKeys::to_secret_json`], whose output zeroizes on drop.
pub struct AccountKeys {
    /// Decrypts the envelopes of the user's records.
    pub age: age::x25519::Identity,
    /// Signs on the user's behalf.
    pub signing: SigningKey,
}

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKeys({}, <redacted>)", self.recipient())
    }
}

#[derive(Serialize, Deserialize)]
struct SecretForm {
    age: String,
    ed25519: String,
}

impl AccountKeys {
    /// Fresh random keys.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(crate::random_bytes::<32>());
        Self {
            age: age::x25519::Identity::generate(),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The public age recipient (`age1…`) that records are sealed to.
    pub fn recipient(&self) -> String {
        self.age.to_public().to_string()
    }

    /// The public Ed25519 key, hex.
    pub fn verifying_key_hex(&self) -> String {
        crate::encoding::hex(self.signing.verifying_key().as_bytes())
    }

    /// The keys as a small JSON document. Secret: write it only to a 0600 file or into an age file.
    pub fn to_secret_json(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(crate::encoding::hex(self.signing.as_bytes()));
        let form = SecretForm {
            age: self.age.to_string().expose_secret().to_owned(),
            ed25519: seed.to_string(),
        };
        let json = Zeroizing::new(serde_json::to_string(&form).expect("strings serialize"));
        let SecretForm { age, ed25519 } = form;
        drop((Zeroizing::new(age), Zeroizing::new(ed25519)));
        json
    }

    /// Reads keys written by [`AccountKeys::to_secret_json`].
    pub fn from_secret_json(json: &[u8]) -> Result<Self, CryptoError> {
        let form: SecretForm =
            serde_json::from_slice(json).map_err(|_| CryptoError::Encoding("account keys"))?;
        let form = (Zeroizing::new(form.age), Zeroizing::new(form.ed25519));
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            crate::encoding::unhex(&form.1, "ed25519 seed")?
                .try_into()
                .map_err(|_| CryptoError::Encoding("ed25519 seed"))?,
        );
        Ok(Self {
            age: parse_identity(&form.0)?,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The keys encrypted (as an age file) to the password-derived wrap identity.
    pub fn wrap(&self, wrap: &age::x25519::Identity) -> Vec<u8> {
        crate::envelope::seal(&wrap.to_public(), self.to_secret_json().as_bytes())
    }

    /// Decrypts keys wrapped by [`AccountKeys::wrap`]; fails on a wrong password.
    pub fn unwrap(wrapped: &[u8], wrap: &age::x25519::Identity) -> Result<Self, CryptoError> {
        let json = crate::envelope::open(wrap, wrapped)?;
        Self::from_secret_json(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recipient was computed by the reference `age-keygen -y` from the Bech32 identity.
    #[test]
    fn seed_identity_known_answer() {
        let id = identity_from_seed(&[7u8; 32]);
        assert_eq!(
            id.to_public().to_string(),
            "age1zwlyl6h27gzv0lfntr7fcqrjrzqazap8sy5zylkxwneh7llf0dksu37mwt"
        );
    }

    #[test]
    fn wrap_round_trip_and_wrong_key() {
        let keys = AccountKeys::generate();
        let wrap = identity_from_seed(&[1u8; 32]);
        let wrapped = keys.wrap(&wrap);
        let back = AccountKeys::unwrap(&wrapped, &wrap).unwrap();
        assert_eq!(back.recipient(), keys.recipient());
        assert_eq!(back.verifying_key_hex(), keys.verifying_key_hex());
        assert!(AccountKeys::unwrap(&wrapped, &identity_from_seed(&[2u8; 32])).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let keys = AccountKeys::generate();
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains("AGE-SECRET-KEY"));
    }
}
