//! The one place that reads the system clock. Everything else takes `now` as a parameter.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time.
#[allow(clippy::disallowed_methods)] // the single sanctioned clock read
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the epoch (negative before it): how tokens, CRLs and certificates state time.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
