//! Times are whole seconds since the Unix epoch; durations are written like `90m`, `24h`, `7d`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `30s`, `90m`, `24h`, `7d` or `2w` into seconds. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30m, 24h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("invalid duration {s:?}: must be positive and reasonable"))
}

/// A short human form of a span of seconds: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn human_span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=5_399 => format!("{} min", secs / 60),
        5_400..=172_799 => format!("{} h", (secs + 1_800) / 3_600),
        _ => format!("{} d", (secs + 43_200) / 86_400),
    }
}

/// `in 3 h` or `2 h ago` for a moment relative to now.
pub fn relative(at: u64) -> String {
    let now = now();
    if at >= now {
        format!("in {}", human_span(at - now))
    } else {
        format!("{} ago", human_span(now - at))
    }
}

/// RFC 3339 UTC form of a Unix time, e.g. `2026-12-04T16:17:28Z`.
pub fn rfc3339(t: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), 86_400);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_401_048), "2026-12-04T16:17:28Z");
        assert_eq!(human_span(7_200), "2 h");
        assert_eq!(human_span(30), "30 s");
    }
}
