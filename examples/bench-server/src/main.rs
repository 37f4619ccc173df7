//! The benchmark server: SSE fan-out written against the framework's public API only, the way
//! a user would. Other tools drive it, so its protocol is fixed:
//!
//! - `GET /sse/{topic}`: an SSE stream of the topic;
//! - `GET /sse?topic=/sse/a&topic=/poll/b`: several of those topic routes (up to 16) on one
//!   stream (`MultiHandler`: each event's type is its topic's path, its id a composite);
//! - `POST /publish/{topic}` with a JSON body: publishes it to the topic (fire-and-forget),
//!   `204 No Content`; with `?confirm`, answers once it is sent (`413` if too large, `503` with
//!   the reason if the broker did not take it);
//! - `GET /stats`: `{"topics": .., "subscribers": .., ...}`;
//! - `GET /metrics`: the runtime's metrics in Prometheus text (see `sse_runtime::telemetry`),
//!   unless `METRICS=0`, which installs no recorder;
//! - `GET /poll/{topic}`: a polled topic (`{"n": <counter>, "port": <this server's port>}`,
//!   every 100 ms, while subscribed), for the subscribe/unsubscribe churn scenario and, with a
//!   backplane, to see which instance polls.
//!
//! Environment: `PORT` (default 8080; listens on 127.0.0.1), `HEARTBEAT_MS` (default 30000),
//! `HISTORY` (events kept per topic for resume; default the runtime's), `BATCH_MS` (write
//! batching window; default 0, off), `SERVE` (`direct`, the default: `sse_runtime::serve`, which
//! writes SSE streams straight to the socket; `axum`: `axum::serve`), `BACKPLANE` (a
//! `redis://host:port` URL: run as one hub with every instance on that Redis; unset: in-process),
//! `BACKPLANE_CLUSTER` (comma-separated `redis://host:port` seed nodes of a Redis Cluster, in
//! place of `BACKPLANE`), `LEASE_MS` (the poll lease's TTL with a backplane), the caps `MAX_STREAMS`,
//! `MAX_STREAMS_PER_IP`, `MAX_TOPICS`, `MAX_POLLERS`, `MAX_POLLERS_PER_IP` (unset: the runtime's defaults; over one,
//! a client gets `503`, or `429` per IP, with `Retry-After`), and `TRUSTED_PROXIES`
//! (comma-separated address ranges, e.g. `127.0.0.1/32,::1/128` behind a local nginx: requests
//! from them are counted by the client they forward), and `REFUSALS` (`stream`, the default:
//! a refusal is a `200` event stream holding a `refused` event, which a browser comes back
//! from; `status`: a plain `503`/`429`, for load generators that count them), `TLS_CERT` and
//! `TLS_KEY` (PEM paths: serve HTTPS, with HTTP/2 for clients that offer it, unless `HTTP2=0`;
//! SIGHUP reloads both files). `SERVE=hyper` runs HTTP/1.1 on hyper's engine instead of the
//! framework's. Prints `bench-server listening on http://ADDR` (`https://` with TLS) once it
//! accepts (`PORT=0` picks a free port). Exits cleanly on SIGTERM or SIGINT.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sse_runtime::backplane::Backplane;
use sse_runtime::client_addr::Cidr;
use sse_runtime::multi::MultiHandler;
use sse_runtime::publish::PublishError;
use sse_runtime::serve::Tls;
use sse_runtime::subscription::RefusalAnswer;
use sse_runtime::{
    Manager, PollError, Server, SseHandler, WriteDeadline, polling::Polling, stats::Stats,
};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a non-negative integer, got {value:?}")),
        Err(_) => default,
    }
}

/// Fire-and-forget, the way the `publish_*` helpers publish; with `?confirm`, answers once the
/// event is sent (in-process at once; with a backplane once the broker has it), so a client
/// publishing as fast as it can is slowed to what the broker takes instead of overflowing the
/// fire-and-forget queue.
async fn publish(
    State(manager): State<Manager>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    Json(value): Json<serde_json::Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let topic = format!("/sse/{topic}");
    if query.as_deref() != Some("confirm") {
        manager.publish(&topic, &value);
        return Ok(StatusCode::NO_CONTENT);
    }
    match manager.publish_confirmed(&topic, &value).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(error @ PublishError::TooLarge { .. }) => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, error.to_string()))
        }
        Err(error) => Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
}

async fn stats(State(manager): State<Manager>) -> Json<Stats> {
    Json(manager.stats())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let port = env_number("PORT", 8080);
    let heartbeat = Duration::from_millis(env_number("HEARTBEAT_MS", 30_000));
    let mut builder = Manager::builder()
        .heartbeat(heartbeat)
        .write_batch(Duration::from_millis(env_number("BATCH_MS", 0)));
    let cap = |name: &str| {
        std::env::var(name)
            .is_ok()
            .then(|| env_number(name, 0) as usize)
    };
    if let Some(streams) = cap("MAX_STREAMS") {
        builder = builder.max_streams(streams);
    }
    if let Some(streams) = cap("MAX_STREAMS_PER_IP") {
        builder = builder.max_streams_per_client(streams);
    }
    if let Some(topics) = cap("MAX_TOPICS") {
        builder = builder.max_topics(topics);
    }
    if let Some(pollers) = cap("MAX_POLLERS") {
        builder = builder.max_pollers(pollers);
    }
    if let Some(pollers) = cap("MAX_POLLERS_PER_IP") {
        builder = builder.max_pollers_per_client(pollers);
    }
    if let Ok(ranges) = std::env::var("TRUSTED_PROXIES") {
        let ranges: Vec<Cidr> = ranges
            .split(',')
            .filter(|range| !range.trim().is_empty())
            .map(|range| {
                range
                    .parse()
                    .unwrap_or_else(|e| panic!("TRUSTED_PROXIES: {e}"))
            })
            .collect();
        builder = builder.trusted_proxies(ranges);
    }
    match std::env::var("REFUSALS").as_deref() {
        Ok("status") => builder = builder.refusal_answer(RefusalAnswer::Status),
        Ok("stream") | Err(_) => {}
        Ok(other) => panic!("REFUSALS must be `stream` or `status`, got {other:?}"),
    }
    if let Ok(history) = std::env::var("HISTORY") {
        builder = builder.history(history.parse().expect("HISTORY must be an integer"));
    }
    let backplane = match (
        std::env::var("BACKPLANE"),
        std::env::var("BACKPLANE_CLUSTER"),
    ) {
        (Ok(url), _) => Some(Backplane::redis(&url).unwrap_or_else(|e| panic!("BACKPLANE: {e}"))),
        (_, Ok(nodes)) => Some(
            Backplane::redis_cluster(nodes.split(',').map(str::trim))
                .unwrap_or_else(|e| panic!("BACKPLANE_CLUSTER: {e}")),
        ),
        _ => None,
    };
    if let Some(mut backplane) = backplane {
        if let Ok(ms) = std::env::var("LEASE_MS") {
            let ms = ms.parse().expect("LEASE_MS must be an integer");
            backplane = backplane.lease_ttl(Duration::from_millis(ms));
        }
        builder = builder.backplane(backplane);
    }
    let manager = builder.build().unwrap_or_else(|e| panic!("{e}"));
    // The system's deepest accept queue: a reconnect wave of every client at once is queued,
    // not dropped and retried a second later (see `sse_runtime::serve::bind`).
    let listener = sse_runtime::serve::bind(("127.0.0.1", port as u16)).await?;
    let port = listener.local_addr()?.port();

    let metrics = (std::env::var("METRICS").as_deref() != Ok("0")).then(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only metrics recorder")
    });
    // The topic routes, also served together on one connection at `GET /sse?topic=...`.
    let topics = Router::new()
        .route("/sse/{topic}", get(SseHandler::new(&manager)))
        .route(
            "/poll/{topic}",
            get(SseHandler::new(&manager).polling(move |_request| {
                let polls = std::sync::atomic::AtomicU64::new(0);
                Polling::new(move |_cancel| {
                    let n = polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move { Ok::<_, PollError>(serde_json::json!({ "n": n, "port": port })) }
                })
                .interval(Duration::from_millis(100))
            })),
        );
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let rendered = metrics.as_ref().map(|handle| handle.render());
                async move { rendered.ok_or((StatusCode::NOT_FOUND, "METRICS=0: no recorder")) }
            }),
        )
        .route("/publish/{topic}", post(publish))
        .route("/stats", get(stats))
        .with_state(manager.clone())
        .route(
            "/sse",
            get(MultiHandler::new(topics.clone()).max_topics(16)),
        )
        .merge(topics);

    let tls = match (std::env::var("TLS_CERT"), std::env::var("TLS_KEY")) {
        (Ok(cert), Ok(key)) => {
            let tls = Tls::from_pem_files(&cert, &key)
                .unwrap_or_else(|error| panic!("TLS_CERT={cert} TLS_KEY={key}: {error}"));
            reload_on_sighup(tls.clone(), cert, key);
            Some(tls)
        }
        (Err(_), Err(_)) => None,
        _ => panic!("TLS_CERT and TLS_KEY go together"),
    };
    println!(
        "bench-server listening on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    let shutdown = {
        let manager = manager.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            manager.shutdown();
        }
    };
    let listener = WriteDeadline::new(listener, heartbeat);
    let engine = std::env::var("SERVE");
    match engine.as_deref() {
        Ok("axum") if tls.is_some() => panic!("TLS_CERT needs SERVE=direct or SERVE=hyper"),
        Ok("axum") => {
            // No peer address under `axum::serve` with a wrapped listener: the per-IP cap
            // applies under `direct` only.
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Ok("direct" | "hyper") | Err(_) => {
            let mut server = Server::new(app);
            if engine.as_deref() == Ok("hyper") {
                server = server.hyper();
            }
            if let Some(tls) = tls {
                server = server
                    .tls(tls)
                    .http2(std::env::var("HTTP2").as_deref() != Ok("0"));
            }
            server.run_with_shutdown(listener, shutdown).await;
            Ok(())
        }
        Ok(other) => panic!("SERVE must be `direct`, `hyper` or `axum`, got {other:?}"),
    }
}

/// Reloads the certificate and key on every SIGHUP (a renewal), keeping the old pair when the
/// new one does not load.
fn reload_on_sighup(tls: Tls, cert: String, key: String) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match tls.reload(&cert, &key) {
                Ok(()) => println!("bench-server reloaded {cert}"),
                Err(error) => eprintln!("bench-server kept its certificate: {error}"),
            }
        }
    });
}
