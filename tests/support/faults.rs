//! The pieces of the fault-injection runs: clients that follow a feed through cut connections,
//! a paced publisher, the cutting loop, and the check that every client got everything.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sse_runtime::Manager;
use tokio::task::JoinHandle;

use crate::Cutter;

/// What a follower ends with: the values received, connections made and resets seen.
pub type Followed = (Vec<u64>, usize, usize);

/// A client that follows one of `urls` until it has `total` events, reconnecting with its last
/// id whenever the connection drops, each time to a random one of `urls` (drawn from `seed`).
pub async fn follow(urls: Vec<String>, total: usize, mut seed: u64) -> Followed {
    let http = reqwest::Client::new();
    let (mut values, mut connections, mut resets) = (Vec::with_capacity(total), 0, 0);
    let mut last_id: Option<String> = None;
    while values.len() < total {
        // splitmix64: every url is as likely, from the first connection on.
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let url = &urls[((z ^ (z >> 31)) % urls.len() as u64) as usize];
        let mut request = http.get(url);
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        // A connection cut before its response came back is simply tried again.
        let Ok(response) = request.send().await else {
            continue;
        };
        assert_eq!(response.status(), 200);
        connections += 1;
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            last_id = Some(event.id.clone());
            if event.event == "reset" {
                eprintln!("reset after {} values: {}", values.len(), event.data);
                resets += 1;
                continue;
            }
            values.push(event.data.parse().expect("a number"));
            if values.len() == total {
                break;
            }
        }
    }
    (values, connections, resets)
}

/// Publishes 1..=`events` to `topic` at 5 000 events per second, so cuts land all through.
pub fn publish_paced(manager: Manager, topic: &'static str, events: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for value in 1..=events {
            manager.publish(topic, &value);
            if value % 5 == 0 {
                tick.tick().await;
            }
        }
    })
}

/// Cuts a random 10 % of the connections of every cutter every 100 ms until every follower has
/// finished; returns how many were cut.
pub async fn cut_until_done(cutters: &[Cutter], followers: &[JoinHandle<Followed>]) -> usize {
    let mut cuts = 0;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.tick().await;
    while !followers.iter().all(|f| f.is_finished()) {
        every.tick().await;
        for cutter in cutters {
            cuts += cutter.cut_random(0.10);
        }
    }
    cuts
}

/// Asserts every follower got 1..=`events` complete, in order, once, with no reset; returns
/// the reconnects they made.
pub async fn assert_followed_everything(
    followers: Vec<JoinHandle<Followed>>,
    events: usize,
) -> usize {
    let expected: Vec<u64> = (1..=events as u64).collect();
    let mut reconnects = 0;
    for follower in followers {
        let (values, connections, resets) = follower.await.unwrap();
        assert_eq!(resets, 0, "everything missed was still in the history");
        assert!(values == expected, "complete, in order, once");
        reconnects += connections - 1;
    }
    reconnects
}
