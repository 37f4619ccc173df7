//! A live dashboard of this machine, served by the framework: CPU, memory, load and network
//! polled from /proc with `#[sse_poll]`, alarms with an `#[sse_topic]` type, the runtime's own
//! figures (`operator`), and a page that subscribes to all of them on one `EventSource`
//! (the multi-topic route `/sse`).
//!
//! `cargo run -p dashboard` then open the printed URL. `--addr HOST:PORT` (or `DASHBOARD_ADDR`)
//! changes the address (default 127.0.0.1:3000; the host may be a name, like `localhost`); `RUST_LOG` the log level. `--redis URL` (or
//! `DASHBOARD_REDIS`) runs it as one of several instances on that Redis: an alarm raised on one
//! reaches the pages served by every other, the thresholds are shared, and each poller runs
//! on one instance at a time. `--session SECS` sets how long a browser's session lasts (the
//! process view needs one; default 3600).

mod api;
mod events;
mod metrics;
mod operator;
mod session;

use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use sse_runtime::backplane::Backplane;
use sse_runtime::contract::Contract;
use sse_runtime::multi::MultiHandler;
use sse_runtime::{Manager, WriteDeadline};

const INDEX: &str = include_str!("../static/index.html");
const SCRIPT: &str = include_str!("../static/app.js");
const STYLE: &str = include_str!("../static/style.css");
const ICON: &str = include_str!("../static/icon.svg");

const USAGE: &str = "usage: dashboard [--addr HOST:PORT] [--redis redis://HOST:PORT] [--session SECS] | --contract DIR   (default address 127.0.0.1:3000, in-process, sessions of an hour; --contract writes the event contract's files to DIR and exits)";

struct Options {
    /// `HOST:PORT`; the host may be a name (`localhost`), resolved when binding.
    addr: String,
    redis: Option<String>,
    session: Duration,
}

/// The event contract of the dashboard's SSE routes.
fn contract() -> Contract {
    Contract::new("dashboard", env!("CARGO_PKG_VERSION"))
        .description(
            "A live dashboard of this machine: /proc samples, alarms, the runtime's own figures.",
        )
        .multi_topic_route("/sse")
}

/// The contract's files, as `cargo xtask contract` writes them and the page's type check
/// reads them: `asyncapi.json`, `openapi.json` and `events.d.ts`.
fn contract_files() -> [(&'static str, String); 3] {
    let contract = contract();
    let json = |document: serde_json::Value| {
        let mut text = serde_json::to_string_pretty(&document).expect("JSON");
        text.push('\n');
        text
    };
    [
        ("asyncapi.json", json(contract.asyncapi())),
        ("openapi.json", json(contract.openapi())),
        ("events.d.ts", contract.typescript()),
    ]
}

fn write_contract(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in contract_files() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut addr = std::env::var("DASHBOARD_ADDR").ok();
    let mut redis = std::env::var("DASHBOARD_REDIS").ok();
    let mut session = Duration::from_secs(3600);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next(),
            "--redis" => redis = args.next(),
            "--session" => {
                let secs = args.next().and_then(|s| s.parse().ok()).filter(|s| *s > 0);
                let Some(secs) = secs else {
                    eprintln!("--session takes a number of seconds above 0; {USAGE}");
                    std::process::exit(2);
                };
                session = Duration::from_secs(secs);
            }
            "--contract" => {
                let Some(dir) = args.next() else {
                    eprintln!("--contract takes a directory; {USAGE}");
                    std::process::exit(2);
                };
                if let Err(error) = write_contract(std::path::Path::new(&dir)) {
                    eprintln!("cannot write the contract to {dir}: {error}");
                    std::process::exit(1);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}; {USAGE}");
                std::process::exit(2);
            }
        }
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    Options {
        addr,
        redis,
        session,
    }
}

/// With `--redis`: the global manager (behind `router()` and `publish_alarm`) runs over that
/// Redis, and so do the thresholds.
async fn join_cluster(url: &str) {
    let fail = |error: &dyn std::fmt::Display| -> ! {
        eprintln!("--redis {url}: {error}");
        std::process::exit(2);
    };
    let backplane = Backplane::redis(url).unwrap_or_else(|e| fail(&e));
    Manager::builder()
        .backplane(backplane)
        .install()
        .unwrap_or_else(|e| fail(&e));
    events::share_thresholds_through(url)
        .await
        .unwrap_or_else(|e| fail(&e));
}

fn app() -> axum::Router {
    let topics = sse_runtime::router();
    // One connection for every panel: GET /sse?topic=/sse/system&topic=/sse/alarms&...
    topics
        .clone()
        .route("/sse", get(MultiHandler::new(topics).max_topics(8)))
        .route(
            "/favicon.ico",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], ICON) }),
        )
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .route(
            "/api/thresholds",
            get(api::get_thresholds).post(api::set_thresholds),
        )
        .route("/api/session", axum::routing::post(session::open))
        .route("/api/stats", get(api::stats))
        .route("/api/stats/wait", get(api::wait_for_stats))
        .route("/api/topics", get(api::topics))
        .route("/api/info", get(api::info))
        // The event contract: every SSE route, its events and their payloads' JSON Schemas.
        .route("/asyncapi.json", contract().route())
        // The SSE routes for OpenAPI 3.2 (`text/event-stream` with an `itemSchema`).
        .route("/openapi.json", contract().openapi_route())
        // The typed client module, which the page imports (and pages of other applications can).
        .route("/sse-client.js", sse_runtime::contract::client_route())
        .route(
            "/metrics",
            get(|| async {
                METRICS
                    .get()
                    .map(|handle| handle.render())
                    .unwrap_or_default()
            }),
        )
}

/// The Prometheus recorder of the runtime's metrics (`sse_runtime::telemetry`), installed at
/// start-up; `GET /metrics` renders it.
static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: ending open streams");
    Manager::global().shutdown();
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = options();
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => drop(METRICS.set(handle)),
        Err(error) => tracing::warn!(%error, "no /metrics: the recorder could not be installed"),
    }
    if let Some(url) = &options.redis {
        join_cluster(url).await;
    }
    let listener = match sse_runtime::serve::bind(options.addr.as_str()).await {
        Ok(listener) => listener,
        Err(error) => {
            let hint = if error.kind() == std::io::ErrorKind::InvalidInput {
                " (expected HOST:PORT, like 127.0.0.1:3000 or localhost:3000)"
            } else {
                ""
            };
            eprintln!("cannot listen on {}: {error}{hint}", options.addr);
            std::process::exit(2);
        }
    };
    session::configure(listener.local_addr()?.port(), options.session);
    let url = format!("http://{}/", listener.local_addr()?);
    println!("dashboard listening on {url}");
    tracing::info!(%url, routes = ?sse_runtime::routes::registered_routes().iter().map(|r| r.path).collect::<Vec<_>>(), "serving");
    let deadline = Manager::global().heartbeat();
    // The framework's server: SSE streams go straight to the socket; stalled clients are closed
    // after the write deadline.
    sse_runtime::serve::serve_with_shutdown(
        WriteDeadline::new(listener, deadline),
        app(),
        shutdown_signal(),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sse_runtime::contract::Contract;

    /// Every SSE route of the dashboard is in its contract with its payload's schema, and the
    /// document is valid AsyncAPI for the official parser.
    #[test]
    fn the_event_contract_is_complete_and_valid_asyncapi() {
        let contract = Contract::new("dashboard", "test").multi_topic_route("/sse");
        assert_eq!(contract.missing_schemas(), Vec::<&str>::new());
        let document = contract.asyncapi();
        let addresses: Vec<&str> = document["channels"]
            .as_object()
            .unwrap()
            .values()
            .map(|channel| channel["address"].as_str().unwrap())
            .collect();
        assert_eq!(
            addresses,
            [
                "/sse",
                "/sse/alarms",
                "/sse/process",
                "/sse/runtime",
                "/sse/system"
            ]
        );
        let (valid, diagnostics) = sse_integration_tests::asyncapi_parser(&document);
        assert!(valid, "{diagnostics}");
    }

    /// The OpenAPI document of the dashboard's routes goes through utoipa's model (to merge
    /// into an application's document) without losing anything of its payloads' schemas.
    #[test]
    fn the_openapi_document_is_utoipas_model_without_a_loss() {
        let contract = super::contract();
        let model = contract
            .utoipa()
            .expect("utoipa's model holds the document");
        assert_eq!(serde_json::to_value(model).unwrap(), contract.openapi());
    }

    /// The page is type-checked against the contract: `tsc --checkJs` on `static/app.js`,
    /// which imports the typed client as the server serves it (`./sse-client.js`, with the
    /// crate's declarations) and whose handlers' payloads are typed from
    /// `contract/events.d.ts` (reading a field a payload does not have, or handling an event
    /// a route never sends, fails here).
    #[test]
    fn the_page_type_checks_against_the_event_contract() {
        use sse_runtime::contract::{CLIENT_DTS, CLIENT_JS};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        // The page's files as the browser sees them: app.js next to the client it imports.
        let tree = std::env::temp_dir().join(format!("dashboard-page-{}", std::process::id()));
        let files = [
            (
                "static/app.js",
                std::fs::read_to_string(dir.join("static/app.js")).unwrap(),
            ),
            ("static/sse-client.js", CLIENT_JS.to_owned()),
            ("static/sse-client.d.ts", CLIENT_DTS.to_owned()),
            (
                "contract/events.d.ts",
                std::fs::read_to_string(dir.join("contract/events.d.ts")).unwrap(),
            ),
        ];
        for (name, text) in files {
            let path = tree.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let (valid, errors) =
            sse_integration_tests::tsc(&tree.join("static"), &["--allowJs", "--checkJs", "app.js"]);
        std::fs::remove_dir_all(&tree).unwrap();
        assert!(valid, "static/app.js: {errors}");
    }

    /// The contract's files in the repository are the code's: a change to a payload type or a
    /// route that was not generated again fails here.
    #[test]
    fn the_checked_in_contract_is_the_codes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
        for (name, expected) in super::contract_files() {
            let path = dir.join(name);
            let found = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                found == expected,
                "{} is stale: run `cargo xtask contract`",
                path.display()
            );
        }
    }
}
