//! Publishing by topic name: to the live broadcaster, to its retained history, nowhere, or,
//! with a backplane, to the broker.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::Hub;
use super::registry::Found;
use crate::producer;
use crate::publish::{Outcome, PublishError};
use crate::remote::Outgoing;
use crate::topic::{Published, Recorded};

impl Hub {
    /// Publishes to the topic called `name`, wherever its history is (with a backplane: through
    /// the broker, fire-and-forget); `encode` runs only when the event will be recorded.
    pub(crate) fn publish(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) {
        match &self.broker {
            Some(broker) => {
                if let Ok(message) = self.outgoing(name, event, encode) {
                    broker.publish(message);
                }
            }
            None => {
                let _ = self.publish_here(name, event, encode);
            }
        }
    }

    /// Publishes and reports what became of the event.
    pub(crate) async fn publish_confirmed(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outcome, PublishError> {
        match &self.broker {
            Some(broker) => {
                let message = self.outgoing(name, event, encode)?;
                broker.publish_confirmed(message).await
            }
            None => self.publish_here(name, event, encode),
        }
    }

    /// An event for the broker, under the settings of the local topic if there is one (else
    /// the manager's). An event over the size limit is counted and refused here.
    fn outgoing(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outgoing, PublishError> {
        let live = self.registry.read().live.get(name).map(|l| l.topic.clone());
        let settings = match &live {
            Some(topic) => topic.settings(),
            None => (false, self.config.limits),
        };
        let data = encode()?;
        let listened = live.is_some();
        let topic = live.map_or_else(|| Arc::from(name), |topic| topic.name.clone());
        let mut message = producer::outgoing(&self.counters, topic, event, &data, settings)?;
        message.listened = listened;
        Ok(message)
    }

    /// Publishes in this process: to the live topic, or its retained history, or nowhere.
    fn publish_here(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outcome, PublishError> {
        let now = Instant::now();
        let live = match self.find(name, now) {
            Found::Live(topic) => Some(topic),
            Found::Retained => None,
            Found::Nowhere => return Ok(Outcome::Unwatched),
        };
        let mut data = encode()?;
        if let Some(topic) = live {
            match topic.publish(event, data) {
                Published::Recorded(recorded) => return self.recorded(name, recorded),
                Published::Closed(returned) => data = returned,
            }
        }
        // The topic emptied (or came back) since the lookup. Under the registry's read lock its
        // history cannot move again: record the event wherever it is now.
        let registry = self.registry.read();
        if let Some(live) = registry.live.get(name) {
            if let Published::Recorded(recorded) = live.topic.publish(event, data) {
                return self.recorded(name, recorded);
            }
        } else if let Some(retained) = registry.retained.get(name).filter(|r| r.until > now) {
            let recorded = retained.history.lock().record(event, data);
            return self.recorded(name, recorded);
        }
        Ok(Outcome::Unwatched)
    }

    /// Counts what became of a recorded event, as an outcome.
    fn recorded(&self, name: &str, recorded: Recorded) -> Result<Outcome, PublishError> {
        producer::tally(&self.counters, name, recorded);
        match recorded {
            Recorded::Appended(id) => Ok(Outcome::Sent(id)),
            Recorded::Duplicate => Ok(Outcome::Duplicate),
            Recorded::TooLarge(size) => Err(PublishError::TooLarge {
                size,
                limit: self.config.limits.max_event_bytes,
            }),
        }
    }

    /// Where a publish to `name` goes: its live broadcaster, its retained history, or nowhere.
    fn find(&self, name: &str, now: Instant) -> Found {
        let registry = self.registry.read();
        if let Some(live) = registry.live.get(name) {
            return Found::Live(live.topic.clone());
        }
        match registry.retained.get(name) {
            Some(retained) if retained.until > now => Found::Retained,
            _ => Found::Nowhere,
        }
    }
}
