//! Compile-time parsing of `interval = "..."` and `retention = "..."`.

use std::time::Duration;

/// Parses a humantime-style duration (`"5s"`, `"250ms"`, `"1m 30s"`); it must be positive and
/// fit in nanoseconds as a `u64`. The error is the message to show.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "interval {text:?} is zero; it must be positive, like \"5s\""
        )),
        Ok(duration) if u64::try_from(duration.as_nanos()).is_err() => {
            Err(format!("interval {text:?} is too long"))
        }
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "invalid interval {text:?} ({error}); expected a positive duration with a unit, like \"5s\", \"250ms\" or \"1m 30s\""
        )),
    }
}

/// Parses a retention time: like [`parse`], but zero is allowed (no retention).
pub(crate) fn parse_retention(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if u64::try_from(duration.as_nanos()).is_err() => {
            Err(format!("retention {text:?} is too long"))
        }
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "invalid retention {text:?} ({error}); expected a duration with a unit, like \"60s\" or \"0s\" for none"
        )),
    }
}
