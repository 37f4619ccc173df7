//! What became of a confirmed publish: [`Outcome`] and [`PublishError`].
//!
//! [`Manager::publish`](crate::Manager::publish) is fire-and-forget. When the caller needs to
//! know (the event's id, or that it was refused), [`Manager::publish_confirmed`] waits for
//! the answer; with a backplane, that is one round trip to the broker.
//!
//! ```
//! use sse_runtime::Manager;
//! use sse_runtime::publish::Outcome;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let manager = Manager::new();
//! // Nobody subscribed and no history retained: nothing is recorded.
//! assert_eq!(manager.publish_confirmed("t", &1).await, Ok(Outcome::Unwatched));
//! let _sub = manager.subscribe("t").unwrap();
//! let Ok(Outcome::Sent(id)) = manager.publish_confirmed("t", &2).await else { panic!() };
//! assert_eq!(id.sequence(), 1);
//! # }
//! ```
//!
//! [`Manager::publish_confirmed`]: crate::Manager::publish_confirmed

use std::fmt;

use crate::broker_error::BrokerError;
use crate::event_id::EventId;

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Recorded and sent under this id.
    Sent(EventId),
    /// Equal to the topic's previous event (change detection): not recorded, no id spent.
    Duplicate,
    /// Nobody subscribes to the topic (in the whole cluster, with a backplane) and no history
    /// of it is retained: nothing to record.
    Unwatched,
}

/// Why a publish was refused. Nothing was recorded and no id was spent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The value failed to serialize.
    Serialize(String),
    /// The encoded event is larger than the manager's `max_event_bytes`.
    TooLarge {
        /// The encoded frame's size in bytes (with a backplane, including the longest id line).
        size: usize,
        /// The limit it is over.
        limit: usize,
    },
    /// The backplane's queue is full: the broker is slower than the publishers, or down.
    Overflow,
    /// The broker did not answer or answered with an error: [`BrokerError::kind`] says which.
    Broker(BrokerError),
    /// A poller's lease was taken over by another instance: its publish is fenced off.
    Fenced,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serialize(error) => write!(f, "event payload failed to serialize: {error}"),
            Self::TooLarge { size, limit } => {
                write!(f, "event of {size} bytes is over max_event_bytes ({limit})")
            }
            Self::Overflow => f.write_str("the backplane's publish queue is full"),
            Self::Broker(error) => write!(f, "the broker failed: {error}"),
            Self::Fenced => f.write_str("the poller's lease has passed to another instance"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Broker(error) => Some(error),
            _ => None,
        }
    }
}
