//! Fixed-window rate limits per key (an account, a client address, an action), in memory.
//! Limits reset on restart; that is acceptable for throttling guessers, and the passcode lock,
//! which must not reset, lives in the store.

use crate::error::ApiError;
use healthlock_common::api::ErrorCode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Requests per minute that each kind of key may make.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Logins per account name (per client address: 3× logins and registrations, 6× prelogins).
    pub login_per_min: u32,
    /// Share challenges and opens per account (per client address: twice).
    pub open_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_per_min: 10,
            open_per_min: 60,
        }
    }
}

/// The counters.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts one request for `key`; refuses with 429 and `Retry-After` past `limit` a minute.
    pub fn check(&self, key: &str, limit: u32) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut map = self.windows.lock().map_err(ApiError::internal)?;
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = map.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > limit {
            let retry = WINDOW
                .saturating_sub(now.duration_since(*start))
                .as_secs()
                .max(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("too many attempts; try again in {retry} s"),
            )
            .retry_after(retry));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_per_key() {
        let rl = RateLimiter::default();
        for _ in 0..3 {
            rl.check("a", 3).unwrap();
        }
        let err = rl.check("a", 3).unwrap_err();
        assert_eq!(err.body.code, ErrorCode::RateLimited);
        assert!(err.body.retry_after.is_some_and(|s| (1..=60).contains(&s)));
        rl.check("b", 3).unwrap();
    }
}
