//! The pub/sub listener: one task owns the dedicated pub/sub connection, applies the hub's
//! watch and unwatch orders in order, dispatches frames to their topics, probes the connection
//! and, when it died, reconnects with backoff, resubscribes and resyncs every topic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{Client, Value};
use tokio::sync::mpsc;

use super::sync::{release, sync};
use super::{BACKOFF_MAX, BACKOFF_MIN, PROBE_EVERY, PROBE_TIMEOUT, RESPONSE_TIMEOUT, Shared};
use crate::remote::frame_id;
use crate::topic::{Applied, Topic};

/// Work for the pub/sub task, in the order the hub decided it.
pub(super) enum Control {
    Watch(Arc<Topic>),
    Unwatch(Arc<Topic>),
    /// A fresh snapshot for a watched topic (while disconnected, the reconnect syncs it).
    Sync(Arc<Topic>),
}

/// Owns the pub/sub connection: serialises subscribe and unsubscribe in the hub's order,
/// dispatches messages to the topics, probes the connection and reconnects it.
pub(super) async fn listening(
    shared: Arc<Shared>,
    client: Client,
    mut orders: mpsc::UnboundedReceiver<Control>,
) {
    let mut watched: HashMap<String, Arc<Topic>> = HashMap::new();
    let probe_channel = shared.probe_channel();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let connected = async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            let mut channels: Vec<&str> = watched.keys().map(String::as_str).collect();
            channels.push(&probe_channel);
            sink.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        let (mut sink, mut stream) = match tokio::time::timeout(RESPONSE_TIMEOUT, connected).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(_)) | Err(_) => {
                // Orders still apply while away: the topics change, the subscriptions follow
                // on reconnect.
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        order = orders.recv() => match order {
                            None => return,
                            Some(order) => apply_offline(&shared, &mut watched, order),
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        shared.connected.store(true, Ordering::Relaxed);
        shared.changed.notify_waiters();
        if !first {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(topics = watched.len(), "backplane: reconnected; resyncing");
        }
        first = false;
        // Whatever was published while away comes from the streams.
        for topic in watched.values() {
            tokio::spawn(sync(shared.clone(), topic.clone()));
        }
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let lost = loop {
            tokio::select! {
                order = orders.recv() => {
                    let Some(order) = order else { return };
                    let result = match order {
                        Control::Watch(topic) => {
                            let channel = shared.channel(&topic.name);
                            watched.insert(channel.clone(), topic.clone());
                            shared.watched.store(watched.len(), Ordering::Relaxed);
                            let subscribed = sink.subscribe(&channel).await;
                            tokio::spawn(sync(shared.clone(), topic));
                            subscribed
                        }
                        Control::Unwatch(topic) => {
                            let channel = shared.channel(&topic.name);
                            if !watched.get(&channel).is_some_and(|t| Arc::ptr_eq(t, &topic)) {
                                continue;
                            }
                            watched.remove(&channel);
                            let unsubscribed = sink.unsubscribe(&channel).await;
                            if unsubscribed.is_ok() {
                                tokio::spawn(release(shared.clone(), topic));
                            }
                            shared.watched.store(watched.len(), Ordering::Relaxed);
                            shared.changed.notify_waiters();
                            unsubscribed
                        }
                        Control::Sync(topic) => {
                            if watched.get(&shared.channel(&topic.name)).is_some_and(|t| Arc::ptr_eq(t, &topic)) {
                                shared.resyncs.fetch_add(1, Ordering::Relaxed);
                                tokio::spawn(sync(shared.clone(), topic));
                            }
                            Ok(())
                        }
                    };
                    if let Err(error) = result {
                        break error.to_string();
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break "connection closed".to_owned() };
                    let channel = message.get_channel_name();
                    if let Some(topic) = watched.get(channel) {
                        dispatch(&shared, topic, message.get_payload_bytes());
                    }
                }
                _ = probe.tick() => {
                    let ping = tokio::time::timeout(PROBE_TIMEOUT, sink.ping::<Value>()).await;
                    match ping {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break "probe timed out".to_owned(),
                    }
                }
            }
        };
        shared.connected.store(false, Ordering::Relaxed);
        shared.changed.notify_waiters();
        // What silenced this connection may have silenced the other one too.
        shared.commands.replace_current();
        tracing::warn!(error = %lost, "backplane: pub/sub connection lost; reconnecting");
    }
}

/// An order while disconnected: only the bookkeeping; the reconnect subscribes what is left.
pub(super) fn apply_offline(
    shared: &Arc<Shared>,
    watched: &mut HashMap<String, Arc<Topic>>,
    order: Control,
) {
    match order {
        Control::Watch(topic) => {
            watched.insert(shared.channel(&topic.name), topic);
        }
        Control::Unwatch(topic) => {
            let channel = shared.channel(&topic.name);
            if watched
                .get(&channel)
                .is_some_and(|t| Arc::ptr_eq(t, &topic))
            {
                watched.remove(&channel);
                tokio::spawn(release(shared.clone(), topic));
            }
        }
        Control::Sync(_) => {}
    }
    shared.watched.store(watched.len(), Ordering::Relaxed);
    shared.changed.notify_waiters();
}

/// One pub/sub message for a listened-to topic.
pub(super) fn dispatch(shared: &Arc<Shared>, topic: &Arc<Topic>, payload: &[u8]) {
    match payload.first() {
        Some(b'i') => {
            let Some(id) = frame_id(payload) else {
                tracing::warn!(topic = %topic.name, "backplane: frame without an id; ignored");
                return;
            };
            match topic.apply(id, Bytes::copy_from_slice(payload)) {
                Applied::Done => {}
                Applied::Fetch => {
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(sync(shared.clone(), topic.clone()));
                }
            }
        }
        Some(b'!') => {
            let channel = shared.channel(&topic.name);
            if let Some(notify) = shared
                .handovers
                .lock()
                .get(&channel)
                .and_then(Weak::upgrade)
            {
                notify.notify_one();
            }
        }
        _ => {}
    }
}
