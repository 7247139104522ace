//! The one place that reads the system clock. Everything else takes `now` as a parameter.

use std::time::SystemTime;

/// The current time.
#[allow(clippy::disallowed_methods)] // the single sanctioned clock read
pub fn now() -> SystemTime {
    SystemTime::now()
}
