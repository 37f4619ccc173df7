//! Microbenchmarks of the hot paths: `cargo bench -p sse-runtime --bench fanout`.
//!
//! - publishing to a topic nobody watches (a map lookup under a read lock);
//! - publishing to 1 / 10 / 100 / 10 000 in-process subscribers, and delivering to all of them;
//! - frame encoding; subscribe + unsubscribe.

use std::task::{Context, Poll, Waker};

use serde::Serialize;
use sse_runtime::{Manager, frame, subscription::Subscription};

fn main() {
    divan::main();
}

#[derive(Serialize)]
struct Reading {
    seq: u64,
    device: &'static str,
    value: f64,
}

fn reading(seq: u64) -> Reading {
    Reading {
        seq,
        device: "pump-17",
        value: 21.5,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[divan::bench]
fn publish_no_subscriber(bencher: divan::Bencher) {
    let manager = Manager::new();
    let _other = runtime().block_on(async { manager.subscribe("other").unwrap() });
    bencher.bench_local(|| manager.publish(divan::black_box("nobody"), &reading(1)));
}

/// Serialize once, append, wake N subscribers (they are not read: only the publish side).
#[divan::bench(args = [1, 10, 100, 10_000])]
fn publish(bencher: divan::Bencher, subscribers: usize) {
    let rt = runtime();
    let manager = Manager::builder().max_lag(usize::MAX / 2).build().unwrap();
    let _subs: Vec<Subscription> = rt.block_on(async {
        (0..subscribers)
            .map(|_| manager.subscribe("t").unwrap())
            .collect()
    });
    let mut seq = 0;
    bencher.bench_local(|| {
        seq += 1;
        manager.publish("t", &reading(seq));
    });
}

/// One publish and its delivery to every subscriber (each copies out its frames).
#[divan::bench(args = [1, 10, 100, 10_000])]
fn publish_and_deliver(bencher: divan::Bencher, subscribers: usize) {
    let rt = runtime();
    let manager = Manager::new();
    let mut subs: Vec<Subscription> = rt.block_on(async {
        (0..subscribers)
            .map(|_| manager.subscribe("t").unwrap())
            .collect()
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut seq = 0;
    bencher.bench_local(|| {
        seq += 1;
        manager.publish("t", &reading(seq));
        for sub in &mut subs {
            match sub.poll_recv(&mut cx) {
                Poll::Ready(Some(chunk)) => drop(divan::black_box(chunk)),
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    });
}

#[divan::bench]
fn encode_frame_64b(bencher: divan::Bencher) {
    let data = br#"{"seq":123456,"device":"pump-17","value":21.5,"unit":"celsius"}"#;
    bencher
        .bench_local(|| frame::event(Some("18c2f0a9d3e00-123456"), None, divan::black_box(data)));
}

#[divan::bench]
fn encode_json_frame(bencher: divan::Bencher) {
    bencher.bench_local(|| frame::json_event(None, None, divan::black_box(&reading(7))).unwrap());
}

#[divan::bench]
fn subscribe_unsubscribe(bencher: divan::Bencher) {
    let rt = runtime();
    let manager = Manager::new();
    let _keep = rt.block_on(async { manager.subscribe("t").unwrap() });
    let _guard = rt.enter();
    bencher.bench_local(|| drop(manager.subscribe("t").unwrap()));
}

#[divan::bench]
fn subscribe_unsubscribe_new_topic(bencher: divan::Bencher) {
    let rt = runtime();
    let manager = Manager::builder()
        .retention(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let _guard = rt.enter();
    bencher.bench_local(|| drop(manager.subscribe("fresh").unwrap()));
}
