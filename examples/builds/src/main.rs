//! `cargo run -p builds -- [--addr HOST:PORT]`: the build-status service (default
//! `127.0.0.1:3002`; port 0 picks a free one, and the line it prints says which).
//!
//! Try it: `curl -X POST http://127.0.0.1:3002/builds`, watch with
//! `cargo run -p sse-tail -- http://127.0.0.1:3002/sse/builds/1`, log a line with
//! `curl -d '{"text":"compiling"}' -H 'content-type: application/json' http://127.0.0.1:3002/builds/1/log`
//! and end it with `curl -d '{"passed":true}' -H 'content-type: application/json' http://127.0.0.1:3002/builds/1/finish`.
//! SIGTERM (or Ctrl-C) stops it: it stops accepting, ends every open stream with a frame that
//! says when to come back, and exits once all connections are closed.

use std::io::IsTerminal;
use std::process::exit;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let mut addr = "127.0.0.1:3002".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            _ => {
                eprintln!("usage: builds [--addr HOST:PORT]");
                exit(2);
            }
        }
    }
    let listener = sse_runtime::serve::bind(&addr)
        .await
        .unwrap_or_else(|error| {
            eprintln!("cannot listen on {addr}: {error}");
            exit(1)
        });
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("builds listening on http://{local}/");
    let app = builds::app(builds::Builds::default());
    // The server shuts the SSE manager down itself once the signal comes: open streams end.
    sse_runtime::serve_with_shutdown(listener, app, terminated()).await;
    println!("builds stopped");
}

/// SIGTERM (what a container runtime or systemd sends) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}
