//! The hub's timers: the end of a polled topic's linger, and the sweeper of expired
//! histories. Each is a task holding the hub weakly, started under the registry lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Hub;
use crate::topic::Topic;

impl Hub {
    /// Starts the task that ends the linger of a polled topic: at `at`, or later if it was
    /// emptied again meanwhile, it removes the topic and stops its poller, unless a subscriber
    /// joined. Called under the registry's write lock; false outside a tokio runtime.
    pub(super) fn start_linger(self: &Arc<Self>, topic: Arc<Topic>, at: Instant) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut at = at;
            let poller = loop {
                tokio::time::sleep_until(at).await;
                let Some(hub) = hub.upgrade() else { return };
                let mut registry = hub.registry.write();
                let Some(live) = registry
                    .live
                    .get_mut(&topic.name)
                    .filter(|live| Arc::ptr_eq(&live.topic, &topic))
                else {
                    return;
                };
                match live.idle_since {
                    Some(since) if since + hub.config.linger > Instant::now() => {
                        at = since + hub.config.linger;
                    }
                    Some(_) if topic.close_if_idle() => {
                        let poller = hub.remove(&mut registry, &topic);
                        drop(registry);
                        break (hub, poller);
                    }
                    _ => {
                        live.lingering = false;
                        return;
                    }
                }
            };
            let (hub, poller) = poller;
            if let Some(poller) = poller {
                hub.stop_poller(poller);
            }
            hub.changed.notify_waiters();
            tracing::debug!(topic = %topic.name, "lingering poller stopped");
        });
        true
    }

    /// Starts the task that drops expired histories on a timer (at most once a second), so they
    /// go even if nobody subscribes again; it ends when none is left, or with the hub. Called
    /// under the registry's write lock; false outside a tokio runtime (the histories are then
    /// swept on activity only).
    pub(super) fn start_sweeper(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(hub) = hub.upgrade() else { return };
                let now = Instant::now();
                let (next, swept) = {
                    let mut registry = hub.registry.write();
                    let swept = registry.drop_expired(now);
                    let next = registry.retained.values().map(|r| r.until).min();
                    registry.sweeper = next.is_some();
                    (next, swept)
                };
                if swept {
                    hub.changed.notify_waiters();
                }
                let Some(next) = next else { return };
                drop(hub);
                let at = next.max(now + Duration::from_secs(1));
                tokio::time::sleep_until(at).await;
            }
        });
        true
    }
}
