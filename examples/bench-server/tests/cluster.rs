//! One poll per cluster: bench-server processes on one real `redis-server` poll a polled topic
//! on one instance at a time, under a lease. When the holder is killed, another instance takes
//! the poll over within about the lease's TTL; when the holder is paused past its TTL and
//! resumed, nothing it produces reaches anyone any more (it stops polling by its own clock and
//! the broker fences its publishes), so two instances' polls never interleave.

use std::time::Duration;

use sse_integration_tests::{RedisServer, SseClient};
use tokio::time::Instant;

mod common;
use common::Node;

const LEASE: Duration = Duration::from_millis(600);

/// A bench-server process over `redis`, with the lease and a heartbeat for these tests.
fn start(redis: &RedisServer) -> Node {
    Node::start(&[
        ("BACKPLANE", redis.url().as_str()),
        ("LEASE_MS", &LEASE.as_millis().to_string()),
        ("HEARTBEAT_MS", "200"),
    ])
}

/// The next poll result on `client`: which instance polled it, and its counter there.
async fn next_poll(client: &mut SseClient) -> (u64, u64) {
    let event = client.event().await;
    let value: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    (
        value["port"].as_u64().unwrap(),
        value["n"].as_u64().unwrap(),
    )
}

/// Two instances, a client on each; returns them with the holder first.
async fn two_nodes_polling(redis: &RedisServer) -> ([Node; 2], [SseClient; 2]) {
    let nodes = [start(redis), start(redis)];
    let mut clients = [
        SseClient::connect(&nodes[0].url("/poll/x")).await,
        SseClient::connect(&nodes[1].url("/poll/x")).await,
    ];
    let (holder, _) = next_poll(&mut clients[0]).await;
    // Both see the same instance's polls.
    for client in &mut clients {
        for _ in 0..3 {
            assert_eq!(next_poll(client).await.0, holder, "one instance polls");
        }
    }
    if holder == nodes[0].port() {
        (nodes, clients)
    } else {
        let [a, b] = nodes;
        let [ca, cb] = clients;
        ([b, a], [cb, ca])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_moves_to_another_instance_within_the_lease_ttl_when_its_holder_is_killed() {
    let redis = RedisServer::start().await;
    let ([mut holder, survivor], [_, mut client]) = two_nodes_polling(&redis).await;
    let survivor_port = survivor.port();
    assert_eq!(
        survivor.stats().await["backplane"]["leases"],
        0,
        "the survivor does not poll"
    );
    holder.child.kill().unwrap();
    let killed = Instant::now();
    loop {
        let (port, _) = next_poll(&mut client).await;
        if port == survivor_port {
            break;
        }
        assert_eq!(port, holder.port());
    }
    let moved = killed.elapsed();
    // The lease expires within its TTL of the last renewal; contenders retry every quarter.
    assert!(moved < LEASE * 2, "took over after {moved:?}");
    for _ in 0..5 {
        assert_eq!(
            next_poll(&mut client).await.0,
            survivor_port,
            "polls never come from two instances"
        );
    }
    assert_eq!(survivor.stats().await["backplane"]["leases"], 1);
    let _ = holder.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lease_is_fenced_off_when_it_resumes() {
    let redis = RedisServer::start().await;
    let ([holder, other], [mut holder_client, mut client]) = two_nodes_polling(&redis).await;
    let (holder_port, other_port) = (holder.port(), other.port());
    holder.signal("-STOP");
    loop {
        if next_poll(&mut client).await.0 == other_port {
            break;
        }
    }
    // Paused well past its TTL while the other instance polls, then resumed.
    for _ in 0..10 {
        assert_eq!(next_poll(&mut client).await.0, other_port);
    }
    holder.signal("-CONT");
    // From now on both clients see only the new holder's polls: nothing the resumed instance
    // polled or published while it believed it held the lease gets through.
    for _ in 0..20 {
        assert_eq!(next_poll(&mut client).await.0, other_port, "fenced");
    }
    let mut seen_new = false;
    for _ in 0..40 {
        let (port, _) = next_poll(&mut holder_client).await;
        if port == other_port {
            seen_new = true;
        } else {
            assert!(
                !seen_new,
                "an old poll of {holder_port} after the new holder's"
            );
        }
    }
    assert!(
        seen_new,
        "the resumed instance's client follows the new holder"
    );
    let stats = holder.stats().await;
    assert_eq!(stats["backplane"]["leases"], 0, "{stats}");
}
