//! Spec: the delivery hot path allocates nothing per event (issue 15).
//!
//! Counted with a counting global allocator, so this file holds one test: nothing else may
//! allocate while it counts.
//!
//! - Publishing serializes an event once and encodes it once, whatever the number of
//!   subscribers: the allocations of a publish do not grow with them (and include making the
//!   encoded frame shareable, so that no reader has to).
//! - A subscriber that reads one event at a time (the usual case: it is woken per event)
//!   allocates nothing: the frame it writes is the shared encoded one.
//! - A subscriber that is behind reads its backlog as one coalesced chunk: one buffer per
//!   read, however many events it holds, so less than one allocation per event. (Through
//!   `sse_runtime::serve`, which copies the frames into a buffer it reuses, not even that:
//!   tests/serve_allocations.rs.)

use std::task::{Context, Poll, Waker};

use sse_runtime::Manager;
use sse_runtime::subscription::Subscription;

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads what `subscription` has now; the number of events read.
fn read(subscription: &mut Subscription, cx: &mut Context<'_>) -> usize {
    let mut events = 0;
    while let Poll::Ready(Some(chunk)) = subscription.poll_recv(cx) {
        events += chunk.windows(2).filter(|w| w == b"\n\n").count();
    }
    events
}

#[derive(serde::Serialize)]
struct Reading {
    device: u32,
    value: f64,
}

#[test]
fn delivering_an_event_allocates_nothing_per_subscriber() {
    const SUBSCRIBERS: usize = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let manager = Manager::builder().history(64).build().unwrap();
    let mut subscribers: Vec<Subscription> = (0..SUBSCRIBERS)
        .map(|_| manager.subscribe("readings").unwrap())
        .collect();
    let reading = Reading {
        device: 7,
        value: 21.5,
    };
    // Warm-up: the first publish and read may grow the log and the wakers' slots.
    for _ in 0..2 {
        manager.publish("readings", &reading);
        for subscriber in &mut subscribers {
            read(subscriber, &mut cx);
        }
    }

    // One event at a time, as a woken subscriber reads it.
    let ((), publish) = allocations(|| manager.publish("readings", &reading));
    let (delivered, reads) = allocations(|| {
        subscribers
            .iter_mut()
            .map(|s| read(s, &mut cx))
            .sum::<usize>()
    });
    assert_eq!(delivered, SUBSCRIBERS);
    eprintln!("one publish: {publish} allocations; {SUBSCRIBERS} deliveries: {reads}");
    assert!(
        publish <= 5,
        "a publish serializes and encodes once: {publish} allocations"
    );
    assert_eq!(
        reads, 0,
        "delivering one event to each subscriber allocates"
    );

    // A backlog of 10 events, read as one coalesced chunk per subscriber.
    for _ in 0..10 {
        manager.publish("readings", &reading);
    }
    let (delivered, reads) = allocations(|| {
        subscribers
            .iter_mut()
            .map(|s| read(s, &mut cx))
            .sum::<usize>()
    });
    assert_eq!(delivered, 10 * SUBSCRIBERS);
    eprintln!("{delivered} deliveries from a backlog of 10: {reads} allocations");
    assert!(
        reads <= SUBSCRIBERS as u64,
        "at most one buffer per coalesced read: {reads}"
    );
}
