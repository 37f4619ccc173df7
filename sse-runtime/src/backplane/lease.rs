//! One poller per topic across the cluster: [`Leased`] wraps a topic's poller so that it runs
//! only on the instance holding the topic's lease.
//!
//! Every instance with local subscribers of a polled topic contends: it tries to take the lease
//! every quarter of its time to live, and at once when the holder hands it over. The holder
//! polls, renews every third of the lease's time, and stops polling as soon as the lease has
//! lapsed by its own clock (so a holder that was paused or cut off never polls beside its
//! successor); the broker refuses its publishes once another instance holds the lease
//! (fencing). When the holder's last local subscriber leaves, it stops and hands over.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::producer::{PollingService, StopFuture, TopicPublisher};
use crate::remote::{Lease, Publish};

/// A poller that runs only while this instance holds its topic's lease.
pub(crate) struct Leased {
    inner: Arc<dyn PollingService>,
    broker: Arc<dyn Broker>,
    run: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Leased {
    pub(crate) fn new(inner: Arc<dyn PollingService>, broker: Arc<dyn Broker>) -> Self {
        Self {
            inner,
            broker,
            run: Mutex::new(None),
        }
    }
}

impl PollingService for Leased {
    fn start(&self, publisher: TopicPublisher) {
        let token = CancellationToken::new();
        let task = tokio::spawn(keep(
            self.inner.clone(),
            self.broker.clone(),
            publisher,
            token.clone(),
        ));
        if let Some((old, _)) = self.run.lock().replace((token, task)) {
            old.cancel();
        }
    }

    fn stop(&self) -> StopFuture<'_> {
        let run = self.run.lock().take();
        Box::pin(async move {
            if let Some((token, task)) = run {
                token.cancel();
                if let Err(error) = task.await {
                    tracing::error!(%error, "lease keeper failed");
                }
            }
        })
    }
}

/// Why a lead ended.
enum Ended {
    /// Stopped here (the last local subscriber left, or shutdown): hand over.
    Stopped,
    /// The lease lapsed or passed to another instance: contend again.
    Lost,
}

/// Contends for the lease, polls while holding it, hands it over when stopped.
async fn keep(
    inner: Arc<dyn PollingService>,
    broker: Arc<dyn Broker>,
    publisher: TopicPublisher,
    stop: CancellationToken,
) {
    let Some(topic) = publisher.topic() else {
        return;
    };
    let ttl = broker.lease_ttl();
    let handover = broker.handover(&topic);
    loop {
        let lease = Arc::new(Lease::new(broker.lease_token()));
        loop {
            let sent = Instant::now();
            let acquired = tokio::select! {
                () = stop.cancelled() => return,
                acquired = broker.acquire(&topic, &lease.token) => acquired,
            };
            if acquired == Ok(true) {
                lease.held_from(sent, ttl);
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ttl / 4) => {}
                () = handover.notified() => {}
            }
        }
        tracing::debug!(%topic, "lease taken: polling here");
        broker.leading(true);
        let sink: Arc<dyn Publish> = broker.clone();
        inner.start(publisher.fenced(sink, lease.clone()));
        let ended = loop {
            tokio::select! {
                () = stop.cancelled() => break Ended::Stopped,
                () = tokio::time::sleep(ttl / 3) => {}
            }
            let sent = Instant::now();
            match broker.renew(&topic, &lease.token).await {
                Ok(true) => lease.held_from(sent, ttl),
                Ok(false) => break Ended::Lost,
                // Unreachable broker: hold on while our own clock says the lease lasts.
                Err(_) => {}
            }
            if !lease.is_held() {
                break Ended::Lost;
            }
        };
        lease.lose();
        inner.stop().await;
        broker.leading(false);
        match ended {
            Ended::Stopped => {
                broker.release(&topic, &lease.token).await;
                tracing::debug!(%topic, "lease handed over");
                return;
            }
            Ended::Lost => tracing::info!(%topic, "lease lost: another instance polls"),
        }
    }
}
