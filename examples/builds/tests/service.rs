//! The builds service as it is deployed: its own binary on a free port, stopped with SIGTERM.
//!
//! Spec: a build's stream sends it as `build` events while it runs, then the finished build,
//! an `end` event and its end; log lines posted through a handler that takes `State` arrive on
//! `/sse/build-log` as `line` events; the `TraceLayer` around `router()` logs the end of every
//! SSE stream it traced; the CORS layer answers other origins; a rerun is seen by the next
//! subscriber. SIGTERM ends every open stream (its last frame says when to come back) and the
//! process exits 0 once they are closed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use builds::{Build, LogLine, NewLine, Outcome, Status};
use sse_integration_tests::{PATIENCE, SseClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The service's process and what it printed so far.
struct Service {
    child: Child,
    base: String,
    printed: Arc<(Mutex<Vec<String>>, Notify)>,
}

impl Service {
    async fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_builds"))
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the builds binary starts");
        let printed: Arc<(Mutex<Vec<String>>, Notify)> = Arc::default();
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let sink = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.0.lock().unwrap().push(line);
                sink.1.notify_waiters();
            }
        });
        let mut service = Self {
            child,
            base: String::new(),
            printed,
        };
        let line = service.printed(|line| line.contains("listening on")).await;
        let url = line.split_once("http://").expect("the address").1;
        service.base = format!("http://{}", url.trim_end_matches('/'));
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until the service has printed a line that `matches`, and returns it.
    async fn printed(&self, matches: impl Fn(&str) -> bool) -> String {
        let (lines, changed) = &*self.printed;
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(line) = lines.lock().unwrap().iter().find(|l| matches(l)) {
                    return line.clone();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the service did not print the expected line; it printed:\n{}",
                lines.lock().unwrap().join("\n")
            )
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> T {
        let mut request = reqwest::Client::new().post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap().error_for_status().unwrap();
        response.json().await.unwrap()
    }

    /// Sends SIGTERM, as a container runtime does.
    fn terminate(&self) {
        unsafe extern "C" {
            fn kill(pid: i32, signal: i32) -> i32;
        }
        const SIGTERM: i32 = 15;
        let pid = i32::try_from(self.child.id().expect("still running")).unwrap();
        assert!(pid > 1);
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        assert_eq!(unsafe { kill(pid, SIGTERM) }, 0, "SIGTERM sent");
    }
}

fn build_of(event: &eventsource_stream::Event) -> Build {
    assert_eq!(event.event, "build", "{event:?}");
    serde_json::from_str(&event.data).unwrap()
}

#[tokio::test]
async fn a_build_is_followed_to_its_end_and_its_log_arrives_as_it_is_written() {
    let service = Service::start().await;
    let started: Build = service.post("/builds", None).await;
    assert_eq!(started.status, Status::Running);
    let id = started.id;

    let mut build = SseClient::connect(&service.url(&format!("/sse/builds/{id}"))).await;
    assert_eq!(build.status, 200);
    assert_eq!(build_of(&build.event().await), started);
    let mut log = SseClient::connect(&service.url("/sse/build-log")).await;
    log.position().await;

    let response = reqwest::Client::new()
        .post(service.url(&format!("/builds/{id}/log")))
        .header("origin", "https://ci.example")
        .json(&NewLine {
            text: "compiling".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "*",
        "the CORS layer answers another origin"
    );
    let line = log.event().await;
    assert_eq!(line.event, "line");
    let line: LogLine = serde_json::from_str(&line.data).unwrap();
    assert_eq!((line.build, line.text.as_str()), (id, "compiling"));
    assert_eq!(
        build_of(&build.event().await).lines,
        1,
        "the poller saw the line"
    );

    let finished: Build = service
        .post(
            &format!("/builds/{id}/finish"),
            Some(serde_json::to_value(Outcome { passed: true }).unwrap()),
        )
        .await;
    assert_eq!(build_of(&build.event().await), finished);
    assert_eq!(build.event().await.event, "end");
    assert!(build.next().await.is_none(), "the stream ends after `end`");
    // The TraceLayer saw the stream end, in the span of its request.
    service
        .printed(|line| {
            line.contains("end of stream") && line.contains(&format!("/sse/builds/{id}"))
        })
        .await;
}

#[tokio::test]
async fn a_rerun_build_runs_for_whoever_watches_next() {
    let service = Service::start().await;
    let Build { id, .. } = service.post("/builds", None).await;
    let mut first = SseClient::connect(&service.url(&format!("/sse/builds/{id}"))).await;
    build_of(&first.event().await);
    let _: Build = service
        .post(
            &format!("/builds/{id}/finish"),
            Some(serde_json::to_value(Outcome { passed: false }).unwrap()),
        )
        .await;
    assert_eq!(build_of(&first.event().await).status, Status::Failed);
    first.until_end().await;

    let rerun: Build = service.post(&format!("/builds/{id}/rerun"), None).await;
    assert_eq!(rerun.status, Status::Running);
    // The newest value may come first (the failed run, until the restarted poller's first
    // poll); the running build follows, and the stream does not end.
    let mut next = SseClient::connect(&service.url(&format!("/sse/builds/{id}"))).await;
    loop {
        let event = next.event().await;
        assert_ne!(event.event, "end", "a rerun build's stream goes on");
        if build_of(&event).status == Status::Running {
            assert_eq!(build_of(&event), rerun);
            break;
        }
    }
}

#[tokio::test]
async fn sigterm_ends_the_open_streams_and_the_process_exits() {
    let mut service = Service::start().await;
    let mut log = SseClient::connect(&service.url("/sse/build-log")).await;
    log.position().await;
    let Build { id, .. } = service.post("/builds", None).await;
    let mut build = SseClient::connect(&service.url(&format!("/sse/builds/{id}"))).await;
    build_of(&build.event().await);

    service.terminate();
    log.until_end().await;
    build.until_end().await;
    let status = tokio::time::timeout(PATIENCE, service.child.wait())
        .await
        .expect("the process exits once its streams are closed")
        .unwrap();
    assert!(status.success(), "{status}");
    service.printed(|line| line == "builds stopped").await;
}
