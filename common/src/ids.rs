//! Identifier newtypes. Each is 128 random (or derived) bits shown as 32 lowercase hex digits,
//! so ids are safe in URLs, file names and logs, and carry no meaning.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self::from_bytes(&crate::random_bytes::<16>())
            }
            /// The id made of these 16 bytes.
            pub fn from_bytes(bytes: &[u8; 16]) -> Self {
                Self(crate::encoding::hex(bytes))
            }
            /// The id as 32 lowercase hex digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = crate::CryptoError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let ok = s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if ok { Ok(Self(s.to_owned())) } else { Err(crate::CryptoError::Encoding(stringify!($name))) }
            }
        }
        impl TryFrom<String> for $name {
            type Error = crate::CryptoError;
            fn try_from(s: String) -> Result<Self, Self::Error> { s.parse() }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String { id.0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({})", stringify!($name), self.0) }
        }
    };
}

hex_id!(
    /// An account.
    UserId
);
hex_id!(
    /// A record (one encrypted document) in a patient's vault.
    RecordId
);
hex_id!(
    /// A share, derived from the token's secret so the server can index it without learning it.
    ShareId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let id = RecordId::random();
        assert_eq!(id.as_str().parse::<RecordId>().unwrap(), id);
        assert!("../../etc/passwd".parse::<RecordId>().is_err());
        assert!(
            "ABCDEF00ABCDEF00ABCDEF00ABCDEF00"
                .parse::<RecordId>()
                .is_err()
        );
        assert!("abc".parse::<RecordId>().is_err());
    }
}
