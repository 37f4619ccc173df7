//! Scale-out over Redis: several instances (managers with their own listeners and their own
//! broker connections) on one real `redis-server` of the test's own act as one hub. A publish
//! on any instance reaches the subscribers of every instance exactly once, in order, under the
//! same ids; a client resumes on another instance; Redis going away and coming back (or its
//! pub/sub connection being killed) never ends a stream, and delivery recovers by itself;
//! clients whose history was lost get exactly one `reset`; when everyone has left, nothing is
//! held anywhere and every Redis key has a TTL.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::faults::{
    assert_followed_everything, cut_until_done, follow, publish_paced,
};
use sse_integration_tests::{CuttingProxy, PATIENCE, Redis, RedisServer, SseClient, TestServer};
use sse_runtime::backplane::Backplane;
use sse_runtime::publish::Outcome;
use sse_runtime::{Manager, SseHandler};

/// One instance: a manager over `redis` and its own HTTP listener serving `/feed`.
struct Instance {
    manager: Manager,
    server: TestServer,
}

impl Instance {
    async fn start(redis: &Redis) -> Self {
        Self::on(redis.backplane("test:"), |builder| builder).await
    }

    async fn start_with(
        redis: &RedisServer,
        configure: impl FnOnce(
            sse_runtime::manager::ManagerBuilder,
        ) -> sse_runtime::manager::ManagerBuilder,
    ) -> Self {
        Self::start_at(&redis.url(), configure).await
    }

    /// On the Redis at `url` (e.g. through a proxy).
    async fn start_at(
        url: &str,
        configure: impl FnOnce(
            sse_runtime::manager::ManagerBuilder,
        ) -> sse_runtime::manager::ManagerBuilder,
    ) -> Self {
        Self::on(
            Backplane::redis(url).unwrap().key_prefix("test:"),
            configure,
        )
        .await
    }

    async fn on(
        backplane: Backplane,
        configure: impl FnOnce(
            sse_runtime::manager::ManagerBuilder,
        ) -> sse_runtime::manager::ManagerBuilder,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let manager = configure(Manager::builder().backplane(backplane))
            .heartbeat(Duration::from_millis(200))
            .build()
            .unwrap();
        let app = Router::new()
            .route("/feed", get(SseHandler::new(&manager).topic("feed")))
            .route("/other", get(SseHandler::new(&manager).topic("other")));
        let server = TestServer::start_direct(app, PATIENCE).await;
        Self { manager, server }
    }

    fn url(&self) -> String {
        self.server.url("/feed")
    }

    /// Waits until `n` local topics have their broker view (ids, history): from then on every
    /// event published anywhere reaches their subscribers.
    async fn synced(&self, n: usize) {
        tokio::time::timeout(
            PATIENCE,
            self.manager
                .wait_until(|s| s.backplane.is_some_and(|b| b.synced >= n) && s.subscribers >= n),
        )
        .await
        .expect("topics sync with the broker in time");
    }
}

async fn values(client: &mut SseClient, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = client.event().await;
        assert_ne!(event.event, "reset", "no reset expected: {event:?}");
        out.push((event.id, event.data.parse().expect("a number")));
    }
    out
}

/// Three instances, each with one client of `/feed` whose subscription is placed.
async fn three_with_a_client_each(redis: &Redis) -> ([Instance; 3], Vec<SseClient>) {
    let instances = [
        Instance::start(redis).await,
        Instance::start(redis).await,
        Instance::start(redis).await,
    ];
    let mut clients = Vec::new();
    for instance in &instances {
        clients.push(SseClient::connect(&instance.url()).await);
        instance.synced(1).await;
    }
    (instances, clients)
}

async fn a_publish_on_one_instance_reaches_every_instance_once_in_order_with_the_same_ids(
    redis: Redis,
) {
    let (instances, mut clients) = three_with_a_client_each(&redis).await;
    for n in 0..200u64 {
        instances[0].manager.publish("feed", &n);
    }
    let mut seen = Vec::new();
    for client in &mut clients {
        seen.push(values(client, 200).await);
    }
    let expected: Vec<u64> = (0..200).collect();
    for received in &seen {
        assert_eq!(
            received.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(received, &seen[0], "same ids on every instance");
    }
    let sequences: Vec<u64> = seen[0]
        .iter()
        .map(|(id, _)| {
            id.parse::<sse_runtime::event_id::EventId>()
                .unwrap()
                .sequence()
        })
        .collect();
    assert_eq!(sequences, (1..=200).collect::<Vec<_>>());
}

async fn concurrent_publishes_from_three_instances_reach_everyone_in_one_order(redis: Redis) {
    let (instances, mut clients) = three_with_a_client_each(&redis).await;
    const EACH: u64 = 300;
    let publishers: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let manager = instance.manager.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    manager.publish("feed", &(i as u64 * 1_000_000 + n));
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let total = 3 * EACH as usize;
    let mut seen = Vec::new();
    for client in &mut clients {
        seen.push(values(client, total).await);
    }
    for received in &seen {
        assert_eq!(
            received, &seen[0],
            "every subscriber: the same events, ids and order"
        );
    }
    for i in 0..3u64 {
        let own: Vec<u64> = seen[0]
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v / 1_000_000 == i)
            .collect();
        assert_eq!(
            own,
            (0..EACH).map(|n| i * 1_000_000 + n).collect::<Vec<_>>(),
            "each publisher's events in its order"
        );
    }
}

async fn a_client_resumes_on_another_instance_with_exactly_what_it_missed(redis: Redis) {
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut client = SseClient::connect(&a.url()).await;
    a.synced(1).await;
    for n in 0..10u64 {
        a.manager.publish("feed", &n);
    }
    let first = values(&mut client, 10).await;
    drop(client);
    tokio::time::timeout(PATIENCE, a.manager.wait_until(|s| s.subscribers == 0))
        .await
        .unwrap();
    // Nobody listens now; the history is retained in Redis. Published on B, which has no
    // subscriber of the topic either.
    for n in 10..25u64 {
        assert!(matches!(
            b.manager.publish_confirmed("feed", &n).await,
            Ok(Outcome::Sent(_))
        ));
    }
    let last = &first.last().unwrap().0;
    let mut resumed = SseClient::connect_with(&b.url(), Some(last)).await;
    let rest = values(&mut resumed, 15).await;
    assert_eq!(
        rest.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        (10..25).collect::<Vec<_>>()
    );
    // And live from there, published on A.
    b.synced(1).await;
    a.manager.publish("feed", &25u64);
    assert_eq!(values(&mut resumed, 1).await[0].1, 25);
}

/// Spec (issue 32): a client cut before the topic's first event holds the position its stream
/// gave it (`<epoch>-0`); the broker keeps that position for the retention time, so what is
/// published meanwhile, on any instance, reaches it when it resumes on another, with no reset.
async fn a_client_cut_before_the_first_event_resumes_on_another_instance_without_a_gap(
    redis: Redis,
) {
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut client = SseClient::connect(&a.url()).await;
    let (position, events) = client.position().await;
    assert!(events.is_empty(), "{events:?}");
    let position_id: sse_runtime::event_id::EventId = position.parse().unwrap();
    assert_eq!(position_id.sequence(), 0, "{position}");
    drop(client);
    tokio::time::timeout(PATIENCE, a.manager.wait_until(|s| s.subscribers == 0))
        .await
        .unwrap();
    for n in 0..3u64 {
        assert!(matches!(
            b.manager.publish_confirmed("feed", &n).await,
            Ok(Outcome::Sent(_))
        ));
    }
    let mut resumed = SseClient::connect_with(&b.url(), Some(&position)).await;
    let rest = values(&mut resumed, 3).await;
    let seen: Vec<(u64, u64, u64)> = rest
        .iter()
        .map(|(id, v)| {
            let id: sse_runtime::event_id::EventId = id.parse().unwrap();
            (id.epoch(), id.sequence(), *v)
        })
        .collect();
    let epoch = position_id.epoch();
    assert_eq!(seen, [(epoch, 1, 0), (epoch, 2, 1), (epoch, 3, 2)]);
}

async fn publishing_to_a_topic_nobody_watches_records_nothing(redis: Redis) {
    let a = Instance::start(&redis).await;
    assert_eq!(
        a.manager.publish_confirmed("nobody", &1).await,
        Ok(Outcome::Unwatched)
    );
    assert_eq!(
        redis.keys("*").await,
        Vec::<String>::new(),
        "no key was created"
    );
}

async fn after_everyone_leaves_nothing_is_held_and_every_key_expires(redis: Redis) {
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut clients = vec![
        SseClient::connect(&a.url()).await,
        SseClient::connect(&b.url()).await,
    ];
    a.synced(1).await;
    b.synced(1).await;
    a.manager.publish("feed", &1);
    for client in &mut clients {
        assert_eq!(values(client, 1).await[0].1, 1);
    }
    drop(clients);
    for instance in [&a, &b] {
        tokio::time::timeout(
            PATIENCE,
            instance
                .manager
                .wait_until(|s| s.topics == 0 && s.backplane.unwrap().watched == 0),
        )
        .await
        .expect("the topic and its broker subscription are gone");
    }
    // The unsubscribes are confirmed before `watched` drops; the channel has no subscriber.
    assert_eq!(redis.channels("test:{*").await, Vec::<String>::new());
    let keys = redis.keys("test:*").await;
    assert!(
        !keys.is_empty(),
        "the history is retained for the retention time"
    );
    for key in keys {
        let ttl = redis.pttl(&key).await;
        assert!(ttl > 0, "{key} has a TTL, got {ttl}");
    }
}

/// What a reconnecting client saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    /// A `reset`, with its reason.
    Reset(String),
    Value(u64),
}

/// A client that follows `url` as a browser does: on every end of the stream it reconnects
/// (at once) with the last id it received, a reset's included.
fn follower(url: String) -> tokio::sync::mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut last_id: Option<String> = None;
        loop {
            let mut client = SseClient::connect_with(&url, last_id.as_deref()).await;
            if tx.send(Seen::Connected).is_err() {
                return;
            }
            while let Some(Ok(event)) = client.next_raw().await {
                last_id = Some(event.id.clone());
                let seen = if event.event == "reset" {
                    let reset: serde_json::Value =
                        serde_json::from_str(&event.data).expect("a reset's JSON");
                    Seen::Reset(reset["reason"].as_str().expect("a reason").to_owned())
                } else {
                    Seen::Value(event.data.parse().expect("a number"))
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>, seen: Seen) {
    let got = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the follower goes on in time");
    assert_eq!(got, Some(seen));
}

/// Two instances on `redis` (a 50 ms retry hint), a follower connected to each, the feed
/// synced on both.
async fn two_followed(
    redis: &RedisServer,
) -> (
    Instance,
    Instance,
    [tokio::sync::mpsc::UnboundedReceiver<Seen>; 2],
) {
    let fast_retry = |b: sse_runtime::manager::ManagerBuilder| b.retry(Duration::from_millis(50));
    let a = Instance::start_with(redis, fast_retry).await;
    let b = Instance::start_with(redis, fast_retry).await;
    let mut followers = [follower(a.url()), follower(b.url())];
    for f in &mut followers {
        expect(f, Seen::Connected).await;
    }
    a.synced(1).await;
    b.synced(1).await;
    (a, b, followers)
}

/// Spec (issue 28, part 3): Redis restarted without persistence loses every topic's history.
/// While it is away the streams stay open; once it is back each open stream gets one `reset`
/// in the stream (`history-lost`) and goes on live in the new numbering: no stream is ended,
/// so no client reconnects (the clients of every instance would otherwise come back at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_streams_open_and_each_gets_one_reset_in_the_stream() {
    let mut redis = RedisServer::start().await;
    let (a, b, mut followers) = two_followed(&redis).await;
    for n in 0..10u64 {
        a.manager.publish("feed", &n);
    }
    for f in &mut followers {
        for n in 0..10 {
            expect(f, Seen::Value(n)).await;
        }
    }

    redis.kill();
    // A publish while the broker is away fails fast, and the streams stay open (heartbeats).
    let during = tokio::time::timeout(PATIENCE, a.manager.publish_confirmed("feed", &99u64))
        .await
        .expect("publish_confirmed never hangs");
    assert!(during.is_err(), "{during:?}");
    tokio::time::timeout(
        PATIENCE,
        a.manager.wait_until(|s| !s.backplane.unwrap().connected),
    )
    .await
    .expect("the lost connection is noticed");
    for f in &mut followers {
        assert!(
            f.try_recv().is_err(),
            "nothing happened to the stream while Redis was away"
        );
    }

    redis.restart().await;
    // Redis came back empty: the topic's epoch is new, so each stream is told once, in the
    // stream (a reconnect would show as `Connected` first).
    for f in &mut followers {
        expect(f, Seen::Reset("history-lost".into())).await;
    }
    for n in 10..20u64 {
        b.manager.publish("feed", &n);
    }
    for f in &mut followers {
        for n in 10..20 {
            expect(f, Seen::Value(n)).await;
        }
        assert!(f.try_recv().is_err(), "one reset, no other event");
    }
    let stats = a.manager.stats().backplane.unwrap();
    assert!(stats.connected && stats.reconnects >= 1, "{stats:?}");
}

/// Spec (issue 28, part 3): after a Redis restart, until the instances have subscribed again,
/// Redis knows of nobody listening to a topic; an instance that has the topic live (streams
/// open on it) still records what it publishes there instead of dropping it as unwatched,
/// and every stream gets it right after its `reset`. (Here Redis refuses `SUBSCRIBE` from
/// each start until the test allows it, so the publish lands before any subscription.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_before_the_instances_subscribe_again_after_a_restart_is_kept() {
    let mut redis = RedisServer::start_with(&[
        "--user",
        "default",
        "on",
        "nopass",
        "~*",
        "&*",
        "+@all",
        "-subscribe",
    ])
    .await;
    let allow_subscribe = async |redis: &RedisServer| {
        let allowed = redis
            .command(&["ACL", "SETUSER", "default", "+subscribe"])
            .await;
        assert!(allowed.is_some_and(|r| r.starts_with("+OK")), "ACL SETUSER");
    };
    allow_subscribe(&redis).await;
    let (a, b, mut followers) = two_followed(&redis).await;
    a.manager.publish("feed", &1u64);
    for f in &mut followers {
        expect(f, Seen::Value(1)).await;
    }

    redis.kill();
    for instance in [&a, &b] {
        tokio::time::timeout(
            PATIENCE,
            instance
                .manager
                .wait_until(|s| !s.backplane.unwrap().connected),
        )
        .await
        .expect("the lost connection is noticed");
    }
    redis.restart().await;
    let sent = tokio::time::timeout(PATIENCE, a.manager.publish_confirmed("feed", &2u64))
        .await
        .expect("publish_confirmed never hangs");
    assert!(matches!(sent, Ok(Outcome::Sent(_))), "{sent:?}");
    allow_subscribe(&redis).await;
    for f in &mut followers {
        expect(f, Seen::Reset("history-lost".into())).await;
        expect(f, Seen::Value(2)).await;
    }
}

async fn a_killed_pubsub_connection_recovers_without_losing_or_resetting_anything(redis: Redis) {
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut followers = [follower(a.url()), follower(b.url())];
    for f in &mut followers {
        expect(f, Seen::Connected).await;
    }
    a.synced(1).await;
    b.synced(1).await;
    a.manager.publish("feed", &0u64);
    for f in &mut followers {
        expect(f, Seen::Value(0)).await;
    }
    let killed = redis.kill_pubsub_clients().await;
    assert_eq!(killed, 2, "both instances' pub/sub connections");
    // Published while nobody listens: recorded in the topic's stream all the same.
    for n in 1..=20u64 {
        let outcome = b.manager.publish_confirmed("feed", &n).await;
        assert!(matches!(outcome, Ok(Outcome::Sent(_))), "{outcome:?}");
    }
    for f in &mut followers {
        for n in 1..=20 {
            expect(f, Seen::Value(n)).await;
        }
    }
    for instance in [&a, &b] {
        let stats = instance.manager.stats().backplane.unwrap();
        assert!(stats.reconnects >= 1, "{stats:?}");
    }
    for f in &mut followers {
        assert!(
            f.try_recv().is_err(),
            "the stream was never cut, nothing was reset"
        );
    }
}

/// A connection that dies without a word (no FIN, no RST: a NAT entry dropped, a middlebox
/// gone) is found by the liveness probe on the pub/sub connection: B, whose connections to
/// Redis go through a proxy that falls silent, reconnects by itself and its client gets every
/// event published meanwhile on A, in order, without a reset or a reconnect of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_is_found_by_the_probe_and_nothing_is_lost() {
    let redis = RedisServer::start().await;
    let proxy = CuttingProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let a = Instance::start_with(&redis, |builder| builder).await;
    let b = Instance::start_at(&format!("redis://{}", proxy.addr), |builder| builder).await;
    let mut follower = follower(b.url());
    expect(&mut follower, Seen::Connected).await;
    b.synced(1).await;
    a.manager.publish("feed", &0u64);
    expect(&mut follower, Seen::Value(0)).await;

    let before = proxy.accepted();
    proxy.freeze_all();
    for n in 1..=20u64 {
        let outcome = a.manager.publish_confirmed("feed", &n).await;
        assert!(matches!(outcome, Ok(Outcome::Sent(_))), "{outcome:?}");
    }
    // The probe (a PING a second, 2 s to answer) notices; B reconnects through the proxy and
    // catches up from the topic's stream.
    for n in 1..=20 {
        expect(&mut follower, Seen::Value(n)).await;
    }
    let stats = b.manager.stats().backplane.unwrap();
    assert!(stats.connected && stats.reconnects >= 1, "{stats:?}");
    assert!(proxy.accepted() > before, "B made new connections to Redis");
    assert!(
        follower.try_recv().is_err(),
        "the client's stream was never cut, nothing was reset"
    );
}

/// 100 clients follow 10 000 events published on one instance while a random 10 % of the
/// connections of every instance is cut every 100 ms; each reconnects to a random instance.
async fn clients_cut_at_random_resume_on_random_instances_with_everything_in_order(redis: Redis) {
    const CLIENTS: usize = 100;
    const EVENTS: usize = 10_000;
    let mut instances = Vec::new();
    let mut cutters = Vec::new();
    let mut urls = Vec::new();
    for seed in 0..3u64 {
        let backplane = redis.backplane("test:");
        let manager = Manager::builder()
            .backplane(backplane)
            .history(EVENTS)
            .build()
            .unwrap();
        let anchor = manager.subscribe("feed").unwrap(); // the topic outlives any one client
        let (listener, cutter) = sse_integration_tests::CuttableListener::bind(0x5eed + seed).await;
        let app = Router::new().route("/feed", get(SseHandler::new(&manager).topic("feed")));
        let server = TestServer::serve_direct(listener, app);
        urls.push(server.url("/feed"));
        cutters.push(cutter);
        instances.push((manager, server, anchor));
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(follow(urls.clone(), EVENTS, i as u64)))
        .collect();
    for (manager, ..) in &instances {
        tokio::time::timeout(
            PATIENCE,
            manager
                .wait_until(|s| s.subscribers > CLIENTS / 10 && s.backplane.unwrap().synced == 1),
        )
        .await
        .unwrap_or_else(|_| {
            let dead = clients.iter().filter(|c| c.is_finished()).count();
            let all: Vec<_> = instances
                .iter()
                .map(|(m, ..)| m.stats().subscribers)
                .collect();
            panic!("clients connect to every instance ({dead} clients ended): {all:?}")
        });
    }
    let publisher = publish_paced(instances[0].0.clone(), "feed", EVENTS);
    let cuts = cut_until_done(&cutters, &clients).await;
    publisher.await.unwrap();
    let reconnects = assert_followed_everything(clients, EVENTS).await;
    eprintln!(
        "{CLIENTS} clients x {EVENTS} events over 3 instances: {cuts} cuts, {reconnects} reconnects"
    );
    assert!(
        cuts >= 10 && reconnects >= 10,
        "the run was disturbed: {cuts} cuts, {reconnects} reconnects"
    );
}

/// Each test above, on one `redis-server` and on a Redis Cluster (three masters with a
/// replica each), each run with its own.
macro_rules! on_one_redis_and_on_a_cluster {
    ($($test:ident),* $(,)?) => {
        mod one_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Redis::one().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Redis::cluster().await).await;
                }
            )*
        }
    };
}

on_one_redis_and_on_a_cluster!(
    a_publish_on_one_instance_reaches_every_instance_once_in_order_with_the_same_ids,
    concurrent_publishes_from_three_instances_reach_everyone_in_one_order,
    a_client_resumes_on_another_instance_with_exactly_what_it_missed,
    a_client_cut_before_the_first_event_resumes_on_another_instance_without_a_gap,
    publishing_to_a_topic_nobody_watches_records_nothing,
    after_everyone_leaves_nothing_is_held_and_every_key_expires,
    clients_cut_at_random_resume_on_random_instances_with_everything_in_order,
    a_killed_pubsub_connection_recovers_without_losing_or_resetting_anything,
);
