//! Why the broker failed a call (re-exported as `backplane::BrokerError`; a module of its own so
//! that `publish` names it without depending on `backplane`), typed so that a caller can act on it: retry a timeout, alert
//! on a lost connection, report a script error.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why the broker failed a call (a publish, a lease, a sync). What the engine reported, when it
/// reported something, is the [`source`](Error::source) (with the `redis` feature, a
/// `redis::RedisError`).
///
/// ```
/// use sse_runtime::backplane::{BrokerError, BrokerErrorKind};
///
/// fn worth_retrying(error: &BrokerError) -> bool {
///     matches!(error.kind(), BrokerErrorKind::Timeout | BrokerErrorKind::ConnectionLost)
/// }
/// assert!(!worth_retrying(&BrokerError::stopped()));
/// ```
#[derive(Clone)]
pub struct BrokerError {
    kind: BrokerErrorKind,
    /// What the engine said, or what this side found wrong with the reply.
    detail: Detail,
}

#[derive(Clone)]
#[cfg_attr(
    not(feature = "redis"),
    allow(
        dead_code,
        reason = "made by the broker engines, and none is compiled in"
    )
)]
enum Detail {
    None,
    Text(String),
    Source(Arc<dyn Error + Send + Sync>),
}

/// What kind of failure a [`BrokerError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokerErrorKind {
    /// No answer within the response timeout (the engine replaces the connection: a silent
    /// one is how a dropped NAT entry or a failover shows).
    Timeout,
    /// The connection is down, was refused, or broke during the call.
    ConnectionLost,
    /// The broker answered with an error: a script or command failed there (an out-of-memory
    /// broker, a read-only replica, a script the broker refused).
    Script,
    /// The broker answered something this version of the engine does not understand.
    UnexpectedReply,
    /// The backplane stopped (its manager is gone).
    Stopped,
}

#[cfg_attr(
    not(feature = "redis"),
    allow(
        dead_code,
        reason = "made by the broker engines, and none is compiled in"
    )
)]
impl BrokerError {
    /// A failure of `kind` with the engine's own error as its source.
    pub(crate) fn new(kind: BrokerErrorKind, source: impl Error + Send + Sync + 'static) -> Self {
        Self {
            kind,
            detail: Detail::Source(Arc::new(source)),
        }
    }

    /// A failure of `kind` this side found, described.
    pub(crate) fn described(kind: BrokerErrorKind, what: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Detail::Text(what.into()),
        }
    }

    /// A reply this side could not read, described.
    pub(crate) fn unexpected(what: impl Into<String>) -> Self {
        Self::described(BrokerErrorKind::UnexpectedReply, what)
    }

    /// The backplane's tasks are gone.
    pub fn stopped() -> Self {
        Self {
            kind: BrokerErrorKind::Stopped,
            detail: Detail::None,
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> BrokerErrorKind {
        self.kind
    }
}

impl BrokerErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Timeout => "the broker did not answer in time",
            Self::ConnectionLost => "the connection to the broker is lost",
            Self::Script => "the broker failed the command",
            Self::UnexpectedReply => "the broker's reply is not understood",
            Self::Stopped => "the backplane stopped",
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        match &self.detail {
            Detail::None => Ok(()),
            Detail::Text(text) => write!(f, ": {text}"),
            Detail::Source(source) => write!(f, ": {source}"),
        }
    }
}

impl fmt::Debug for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("BrokerError");
        debug.field("kind", &self.kind);
        match &self.detail {
            Detail::None => {}
            Detail::Text(text) => {
                debug.field("detail", text);
            }
            Detail::Source(source) => {
                debug.field("source", source);
            }
        }
        debug.finish()
    }
}

impl Error for BrokerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.detail {
            Detail::Source(source) => Some(&**source as &(dyn Error + 'static)),
            Detail::None | Detail::Text(_) => None,
        }
    }
}

/// Two errors are equal when they are of the same kind and say the same (so that a
/// `Result<Outcome, PublishError>` compares in tests).
impl PartialEq for BrokerError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.to_string() == other.to_string()
    }
}

impl Eq for BrokerError {}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for BrokerError {
    fn from(error: redis::RedisError) -> Self {
        let kind = if error.is_timeout() {
            BrokerErrorKind::Timeout
        } else if matches!(
            error.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            BrokerErrorKind::UnexpectedReply
        } else if error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_io_error()
            || error.is_unrecoverable_error()
        {
            BrokerErrorKind::ConnectionLost
        } else {
            BrokerErrorKind::Script
        };
        Self::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_error_is_the_source_and_is_named_in_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply from 10.0.0.1");
        let error = BrokerError::new(BrokerErrorKind::Timeout, io);
        assert_eq!(error.kind(), BrokerErrorKind::Timeout);
        assert_eq!(
            error.to_string(),
            "the broker did not answer in time: no reply from 10.0.0.1"
        );
        let source = error.source().expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(BrokerError::unexpected("status").source().is_none());
        assert_eq!(BrokerError::stopped().to_string(), "the backplane stopped");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_errors_are_told_apart_by_kind() {
        let io = |kind| redis::RedisError::from(std::io::Error::from(kind));
        let kind = |error: redis::RedisError| BrokerError::from(error).kind();
        assert_eq!(
            kind(io(std::io::ErrorKind::TimedOut)),
            BrokerErrorKind::Timeout
        );
        assert_eq!(
            kind(io(std::io::ErrorKind::ConnectionReset)),
            BrokerErrorKind::ConnectionLost
        );
        assert_eq!(
            kind(io(std::io::ErrorKind::ConnectionRefused)),
            BrokerErrorKind::ConnectionLost
        );
        let server = redis::make_extension_error("OOM".into(), Some("command not allowed".into()));
        let error = BrokerError::from(server);
        assert_eq!(error.kind(), BrokerErrorKind::Script);
        let source = error
            .source()
            .and_then(|s| s.downcast_ref::<redis::RedisError>());
        assert_eq!(source.and_then(redis::RedisError::code), Some("OOM"));
        let parse = redis::RedisError::from((redis::ErrorKind::Parse, "bad reply"));
        assert_eq!(kind(parse), BrokerErrorKind::UnexpectedReply);
    }
}
