//! Pollers: bound to the first and last subscriber of their topic, polling at once and then on
//! the interval, publishing data and error payloads, stopping on a condition, calling the stop
//! callback exactly once per start. (Ports the Go package's polling tests.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{next_events, take_events};
use http::StatusCode;
use sse_runtime::{
    Manager, PollError, polling::DEFAULT_API_VERSION, polling::DEFAULT_INTERVAL, polling::Polling,
    polling::PollingService, subscription::SubscribeOptions,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A counter shared with a poll function.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A callback that counts its calls in `counter` (for `on_stop`).
fn increments(counter: &Arc<AtomicUsize>) -> impl Fn() + Send + Sync + 'static {
    let counter = counter.clone();
    move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A poller returning the number of its poll (1, 2, ...).
fn counting(polls: &Arc<AtomicUsize>) -> impl PollingService + use<> {
    let polls = polls.clone();
    Polling::new(move |_cancel| {
        let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, PollError>(n) }
    })
}

#[test]
fn defaults_are_five_seconds_and_v1() {
    let polling = Polling::new(|_| async { Ok::<_, PollError>(()) });
    assert_eq!(polling.polling_interval(), DEFAULT_INTERVAL);
    assert_eq!(DEFAULT_INTERVAL, Duration::from_secs(5));
    assert_eq!(polling.polling_api_version(), DEFAULT_API_VERSION);
    assert_eq!(DEFAULT_API_VERSION, "v1");
}

#[test]
fn options_are_applied() {
    let polling = Polling::new(|_| async { Ok::<_, PollError>(()) })
        .interval(Duration::from_millis(250))
        .api_version("v3");
    assert_eq!(polling.polling_interval(), Duration::from_millis(250));
    assert_eq!(polling.polling_api_version(), "v3");
}

/// A zero interval is a caller's value, not a reason to panic: it would poll in a busy loop,
/// so it falls back to the default, and polls go at that pace.
#[tokio::test(start_paused = true)]
async fn a_zero_interval_falls_back_to_the_default_instead_of_panicking() {
    let manager = Manager::new();
    let polls = counter();
    let polling = Polling::new({
        let polls = polls.clone();
        move |_| {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, PollError>(n) }
        }
    })
    .interval(Duration::ZERO);
    assert_eq!(polling.polling_interval(), DEFAULT_INTERVAL);
    let started = Instant::now();
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    assert_eq!(next_events(&mut sub).await[0].data, "1");
    assert_eq!(next_events(&mut sub).await[0].data, "2");
    assert_eq!(started.elapsed(), DEFAULT_INTERVAL);
}

#[tokio::test(start_paused = true)]
async fn first_poll_is_immediate_then_one_per_default_interval() {
    let manager = Manager::new();
    let polls = counter();
    let started = Instant::now();
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(counting(&polls)))
        .unwrap();
    let first = next_events(&mut sub).await;
    assert_eq!(first[0].data, "1");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no wait before the first poll"
    );
    let second = next_events(&mut sub).await;
    assert_eq!(second[0].data, "2");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let third = next_events(&mut sub).await;
    assert_eq!(third[0].data, "3");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_custom_interval_is_honoured() {
    let manager = Manager::new();
    let polls = counter();
    let polling = Polling::new({
        let polls = polls.clone();
        move |_| {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, PollError>(n) }
        }
    })
    .interval(Duration::from_millis(300));
    let started = Instant::now();
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    take_events(&mut sub, 4).await;
    assert_eq!(started.elapsed(), Duration::from_millis(900));
}

#[tokio::test]
async fn polling_starts_once_on_first_subscribe_and_stops_on_last() {
    let manager = Manager::new();
    let stops = counter();
    let make = |stops: &Arc<AtomicUsize>| {
        Polling::new(|_| async { Ok::<_, PollError>("tick") }).on_stop(increments(stops))
    };
    let mut a = manager
        .subscribe_with("t", SubscribeOptions::new().polling(make(&stops)))
        .unwrap();
    assert_eq!(manager.stats().pollers, 1);
    // A second handler invocation brings its own poller: it is not started.
    let b = manager
        .subscribe_with("t", SubscribeOptions::new().polling(make(&stops)))
        .unwrap();
    assert_eq!(manager.stats().pollers, 1);
    assert!(manager.topics()[0].polled);
    assert_eq!(next_events(&mut a).await[0].data, "\"tick\"");
    drop(a);
    assert_eq!(manager.stats().pollers, 1, "still one subscriber");
    drop(b);
    manager.wait_until(|s| s.pollers == 0).await;
    assert_eq!(
        stops.load(Ordering::SeqCst),
        1,
        "the started poller stopped once; the unused one never ran"
    );
}

#[tokio::test]
async fn unsubscribe_does_not_wait_for_the_poller_to_stop() {
    // Without linger, the last subscriber out removes the topic at once.
    let manager = Manager::builder()
        .poller_linger(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let polling = Polling::new({
        let (release, entered) = (release.clone(), entered.clone());
        move |_cancel| {
            let (release, entered) = (release.clone(), entered.clone());
            async move {
                entered.notify_one();
                // Ignores its cancellation token: only dropping the future ends it.
                release.notified().await;
                Ok::<_, PollError>(())
            }
        }
    });
    let sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    entered.notified().await;
    drop(sub); // returns at once although the poll is stuck
    assert_eq!(manager.stats().topics, 0);
    manager.wait_until(|s| s.pollers == 0).await;
}

#[tokio::test]
async fn the_poll_function_gets_a_token_cancelled_on_stop() {
    let manager = Manager::new();
    let cancelled = Arc::new(Notify::new());
    let polling = Polling::new({
        let cancelled = cancelled.clone();
        move |cancel: sse_runtime::CancellationToken| {
            let cancelled = cancelled.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                cancelled.notify_one();
            });
            async { Ok::<_, PollError>(0) }
        }
    });
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    next_events(&mut sub).await; // the poll has run and handed its token on
    drop(sub);
    cancelled.notified().await;
}

#[tokio::test]
async fn data_is_published_as_json() {
    let manager = Manager::new();
    let polling =
        Polling::new(|_| async { Ok::<_, PollError>(serde_json::json!({"devices": ["a", "b"]})) });
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    assert_eq!(
        next_events(&mut sub).await[0].json(),
        serde_json::json!({"devices": ["a", "b"]})
    );
}

#[tokio::test]
async fn an_error_with_a_status_is_published_with_that_status() {
    let manager = Manager::new();
    let polling = Polling::new(|_| async {
        Err::<(), _>(PollError::new(StatusCode::NOT_FOUND, "device 7 not found"))
    })
    .api_version("v3");
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    assert_eq!(
        next_events(&mut sub).await[0].json(),
        serde_json::json!({"apiVersion": "v3", "statusCode": 404, "message": "device 7 not found"})
    );
}

#[tokio::test]
async fn a_library_error_is_published_as_a_generic_500_with_the_default_api_version() {
    let manager = Manager::new();
    let polling = Polling::new(|_| async { "x".parse::<u32>().map_err(PollError::from) });
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    assert_eq!(
        next_events(&mut sub).await[0].json(),
        serde_json::json!({"apiVersion": "v1", "statusCode": 500, "message": "internal error"}),
        "its text stays on the server"
    );
}

#[tokio::test]
async fn a_panicking_poll_function_is_reported_and_polling_goes_on() {
    let manager = Manager::new();
    let polls = counter();
    let polling = Polling::new({
        let polls = polls.clone();
        move |_| {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("sensor exploded");
                }
                Ok::<_, PollError>(n)
            }
        }
    })
    .interval(Duration::from_millis(10));
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    let events = take_events(&mut sub, 2).await;
    assert_eq!(
        events[0].json(),
        serde_json::json!({"apiVersion": "v1", "statusCode": 500, "message": "internal error"}),
        "the panic's message stays on the server"
    );
    assert_eq!(events[1].data, "1", "the next poll ran");
}

#[tokio::test]
async fn the_stop_condition_stops_after_publishing_and_calls_the_callback_once() {
    let manager = Manager::new();
    let polls = counter();
    let stops = counter();
    let polling = Polling::new({
        let polls = polls.clone();
        move |_| {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, PollError>(n) }
        }
    })
    .interval(Duration::from_millis(5))
    .stop_when(|n: &usize| *n == 3)
    .on_stop(increments(&stops));
    let polling = Arc::new(polling);
    let sub = manager
        .subscribe_with("t", SubscribeOptions::new().shared_polling(polling.clone()))
        .unwrap();
    let mut sub = sub;
    let events = take_events(&mut sub, 3).await;
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    // The loop ends by itself; no fourth poll ever happens.
    while polling.is_running() {
        tokio::task::yield_now().await;
    }
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    drop(sub); // the manager's stop after a self-stop is a no-op
    manager.wait_until(|s| s.pollers == 0).await;
    assert_eq!(stops.load(Ordering::SeqCst), 1, "exactly once per start");
}

#[tokio::test]
async fn the_stop_condition_is_not_tested_on_errors() {
    let manager = Manager::new();
    let polls = counter();
    let tested = counter();
    let polling = Polling::new({
        let polls = polls.clone();
        move |_| {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(PollError::new(StatusCode::BAD_GATEWAY, "upstream down"))
                } else {
                    Ok(n)
                }
            }
        }
    })
    .interval(Duration::from_millis(5))
    .stop_when({
        let tested = tested.clone();
        move |_: &usize| {
            tested.fetch_add(1, Ordering::SeqCst);
            true
        }
    });
    // Off, so the second (identical) error payload is sent too.
    let options = SubscribeOptions::new()
        .polling(polling)
        .change_detection(false);
    let mut sub = manager.subscribe_with("t", options).unwrap();
    let events = take_events(&mut sub, 3).await;
    assert_eq!(events[0].json()["statusCode"], 502);
    assert_eq!(events[1].json()["statusCode"], 502);
    assert_eq!(events[2].data, "2");
    assert_eq!(
        tested.load(Ordering::SeqCst),
        1,
        "tested once, on the one success"
    );
}

#[tokio::test]
async fn stop_before_start_is_a_no_op_and_stop_is_idempotent() {
    let stops = counter();
    let polling = Polling::new(|_| async { Ok::<_, PollError>(()) }).on_stop(increments(&stops));
    polling.stop().await;
    polling.stop().await;
    assert_eq!(
        stops.load(Ordering::SeqCst),
        0,
        "never started, never stopped"
    );
    assert!(!polling.is_running());
}

#[tokio::test]
async fn the_stop_callback_runs_once_per_start() {
    let manager = Manager::new();
    let stops = counter();
    let polling =
        Arc::new(Polling::new(|_| async { Ok::<_, PollError>(()) }).on_stop(increments(&stops)));
    for round in 1..=3 {
        let mut sub = manager
            .subscribe_with("t", SubscribeOptions::new().shared_polling(polling.clone()))
            .unwrap();
        next_events(&mut sub).await;
        drop(sub);
        manager.wait_until(|s| s.pollers == 0).await;
        assert_eq!(stops.load(Ordering::SeqCst), round);
        polling.stop().await; // a repeated stop adds nothing
        assert_eq!(stops.load(Ordering::SeqCst), round);
    }
}
