//! The `Date` header every response carries (RFC 9110 6.6.1), formatted once a second.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// `Sun, 06 Nov 1994 08:49:37 GMT`: always 29 bytes.
const LEN: usize = 29;

struct Cached {
    second: u64,
    text: [u8; LEN],
}

thread_local! {
    // Per thread, so formatting needs no lock; each thread re-formats at most once a second.
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, text: [0; LEN] }) };
}

/// Appends the current date in IMF-fixdate form.
pub(super) fn write(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with_borrow_mut(|cached| {
        if cached.second != second {
            let text = httpdate::fmt_http_date(now);
            cached.text.copy_from_slice(&text.as_bytes()[..LEN]);
            cached.second = second;
        }
        out.extend_from_slice(&cached.text);
    });
}
