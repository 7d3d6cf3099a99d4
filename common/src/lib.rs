//! Shared building blocks of HealthLock: identifiers, the role policy, key derivation,
//! the share-token format, age envelopes, the signed share descriptor and the HTTP wire types.
//!
//! Both the server and the CLI depend on this crate, so every rule that both sides must agree on
//! lives here exactly once. It has no networking, runtime or storage dependencies.
//!
//! ```
//! use healthlock_common::token::ShareSecret;
//!
//! let secret = ShareSecret::generate();
//! let token = secret.to_token();
//! let link = format!("https://clinic.example/s#{token}");
//! let parsed = healthlock_common::token::parse_link_or_token(&link).unwrap();
//! assert_eq!(parsed.secret.share_id(), secret.share_id());
//! assert_eq!(parsed.origin.as_deref(), Some("https://clinic.example"));
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod body_hash;
pub mod body_stream;
pub mod descriptor;
pub mod durable_write;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod kdf;
pub mod keys;
pub mod policy;
pub mod record_seal;
pub mod time;
pub mod token;

pub use error::CryptoError;
pub use ids::{RecordId, ShareId, UserId};
pub use policy::{Category, Role};

/// Fills `buf` with bytes from the operating system's CSPRNG.
///
/// Panics only if the OS has no randomness to give, in which case no key could be made safely.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}
