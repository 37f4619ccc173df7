//! Spec (issue 32, part 3): a server's graceful shutdown never hangs on open streams. When the
//! signal of `serve_with_shutdown` (or `Server::run_with_shutdown`, on either engine) completes,
//! the server shuts down the manager of every stream it served, so each stream ends (its last
//! frame says when to come back) and the server returns, although the signal never called
//! `Manager::shutdown` and the clients stay connected.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{PATIENCE, SseClient};
use sse_runtime::{CancellationToken, Manager, Server, SseHandler};

async fn shutdown_ends_streams(hyper: bool) {
    let manager = Manager::new();
    let other = Manager::new();
    let app = Router::new()
        .route("/feed", get(SseHandler::new(&manager).topic("feed")))
        .route("/idle", get(SseHandler::new(&other).topic("idle")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = CancellationToken::new();
    let server = Server::new(app);
    let server = if hyper { server.hyper() } else { server };
    let running =
        tokio::spawn(server.run_with_shutdown(listener, signal.clone().cancelled_owned()));

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(SseClient::connect(&format!("http://{addr}/feed")).await);
    }
    manager.wait_until(|s| s.subscribers == 3).await;
    signal.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server returns although its streams' clients stay")
        .unwrap();
    for client in &mut clients {
        client.until_end().await;
    }
    assert!(manager.is_shut_down(), "the streams' manager was shut down");
    assert!(
        !other.is_shut_down(),
        "a manager none of whose streams it served is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_shutdown_ends_open_streams_without_manager_shutdown_in_the_signal() {
    shutdown_ends_streams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_the_hyper_engine() {
    shutdown_ends_streams(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_runtime_serve_with_shutdown_at_the_crate_root_does_the_same() {
    let manager = Manager::new();
    let app = Router::new().route("/feed", get(SseHandler::new(&manager).topic("feed")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sse_runtime::serve_with_shutdown(listener, app, async {
        let _ = rx.await;
    }));
    let mut client = SseClient::connect(&format!("http://{addr}/feed")).await;
    manager.wait_until(|s| s.subscribers == 1).await;
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("returns promptly")
        .unwrap();
    client.until_end().await;
}
