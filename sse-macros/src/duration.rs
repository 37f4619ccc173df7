//! Compile-time parsing of `interval = "..."`.

use std::time::Duration;

use syn::LitStr;

use crate::ctxt::Ctxt;

/// Parses a humantime-style duration (`"5s"`, `"250ms"`, `"1m 30s"`); it must be positive.
pub(crate) fn parse(ctxt: &mut Ctxt, lit: &LitStr) -> Option<Duration> {
    let text = lit.value();
    match humantime::parse_duration(&text) {
        Ok(duration) if duration.is_zero() => {
            ctxt.error(
                lit,
                format!("interval {text:?} is zero; it must be positive, like \"5s\""),
            );
            None
        }
        Ok(duration) if u64::try_from(duration.as_nanos()).is_err() => {
            ctxt.error(lit, format!("interval {text:?} is too long"));
            None
        }
        Ok(duration) => Some(duration),
        Err(error) => {
            ctxt.error(
                lit,
                format!("invalid interval {text:?} ({error}); expected a positive duration with a unit, like \"5s\", \"250ms\" or \"1m 30s\""),
            );
            None
        }
    }
}
