//! Server settings: defaults, overridden by flags (see `bin/main.rs` and docs/operators-guide.md).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the server needs to run. Holds no secrets, so `Debug` is safe to log.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the store, blobs and invite spool live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// The origin clients sign for and links carry; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// Largest accepted upload body, bytes.
    pub max_upload: u64,
    /// Longest share lifetime, seconds.
    pub max_share_lifetime: u64,
    /// A session ends after this many idle seconds.
    pub session_idle: u64,
    /// A session ends this many seconds after login, however busy.
    pub session_lifetime: u64,
    /// Seconds a provider may download bodies after a successful open.
    pub grant_lifetime: u64,
    /// Whether webhooks may target loopback, private or link-local addresses.
    pub allow_private_webhooks: bool,
    /// Rate limits.
    pub limits: crate::ratelimit::Limits,
    /// Bytes of ciphertext one vault may hold.
    pub quota: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (for rate limits and audit).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("healthlock-data"),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_upload: 512 * 1024 * 1024,
            max_share_lifetime: 30 * 86_400,
            session_idle: 30 * 60,
            session_lifetime: 12 * 3600,
            grant_lifetime: 15 * 60,
            allow_private_webhooks: false,
            limits: Default::default(),
            quota: 10 << 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Parses sizes such as `512MiB`, `2GiB`, `100MB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}: use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("10").unwrap(), 10);
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("0").is_err());
    }
}
