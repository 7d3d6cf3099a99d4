//! Password → keys, on the client only (design property 2).
//!
//! `K = Argon2id(password, salt)`; `auth = HKDF(K, "healthlock/v1/auth")` is what the server
//! verifies (it stores only `Argon2id(auth)`), and `wrap = HKDF(K, "healthlock/v1/wrap")` seeds the
//! age identity that the account's private keys are encrypted to. The server never sees `K`,
//! `wrap` or the password, and nothing it stores lets it skip the Argon2id cost of a guess.

use crate::CryptoError;
use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Argon2id cost parameters, stored per account so they can be raised later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The floor the design sets: 64 MiB, 3 passes, 4 lanes. The server refuses weaker accounts.
    pub const MINIMUM: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };

    /// Refuses parameters below [`KdfParams::MINIMUM`] or absurdly high (a denial of service on clients).
    pub fn check(&self) -> Result<(), CryptoError> {
        let min = Self::MINIMUM;
        if self.m_kib < min.m_kib || self.t < min.t || self.p < min.p {
            return Err(CryptoError::Kdf(format!(
                "parameters below the minimum m={} KiB, t={}, p={}",
                min.m_kib, min.t, min.p
            )));
        }
        if self.m_kib > 4 * 1024 * 1024 || self.t > 64 || self.p > 64 {
            return Err(CryptoError::Kdf("parameters are unreasonably high".into()));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::MINIMUM
    }
}

/// The Argon2id output `K`. Never leaves the client; zeroized on drop.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Derives `K` from the password and the account's salt.
pub fn derive_master_key(
    password: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<MasterKey, CryptoError> {
    params.check()?;
    let p = Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(password, salt, &mut out[..])
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(MasterKey(out))
}

/// HKDF-SHA256 expansion of 32 bytes of key material for one purpose.
pub(crate) fn hkdf32(ikm: &[u8], info: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, ikm)
        .expand(info.as_bytes(), &mut out[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

impl MasterKey {
    /// The value the server authenticates (it stores only an Argon2id hash of it).
    pub fn auth_value(&self) -> Zeroizing<[u8; 32]> {
        hkdf32(&self.0[..], "healthlock/v1/auth")
    }

    /// The age identity that the account's private keys are wrapped to.
    pub fn wrap_identity(&self) -> age::x25519::Identity {
        crate::keys::identity_from_seed(&hkdf32(&self.0[..], "healthlock/v1/wrap"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::hex;

    /// Known-answer vector, computed independently (Python argon2-cffi + cryptography
    /// HKDF, and `age-keygen -y` for the recipient): pins the whole password → auth / wrap chain, so a change of
    /// parameters, labels or libraries cannot silently lock every user out.
    #[test]
    fn known_answer() {
        let k = derive_master_key(
            b"correct horse battery staple",
            b"healthlock-salt!",
            &KdfParams::MINIMUM,
        )
        .unwrap();
        assert_eq!(
            hex(&k.auth_value()[..]),
            "beeceea4523030914ce9790460c94e8d3cfe10cb4220a8ffc43c23e096bc81e9"
        );
        assert_eq!(
            k.wrap_identity().to_public().to_string(),
            "age1989e86w6evclrmphh2sqaff7sx23yy3le63c50vhq7zllpr4fc6s2nadl9"
        );
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        };
        assert!(derive_master_key(b"pw", b"saltsaltsaltsalt", &weak).is_err());
    }

    #[test]
    fn different_passwords_differ() {
        let a = derive_master_key(b"a", b"saltsaltsaltsalt", &KdfParams::MINIMUM).unwrap();
        let b = derive_master_key(b"b", b"saltsaltsaltsalt", &KdfParams::MINIMUM).unwrap();
        assert_ne!(a.auth_value(), b.auth_value());
    }
}
