//! `sse_runtime::serve::bind`: the listening socket queues a reconnect wave instead of dropping
//! it. The kernel completes a client's connection once it is in the listener's accept queue,
//! before the server accepts it; a SYN that finds the queue full is dropped, and the client's
//! kernel sends it again 1 s later, then 3 s, 7 s. So a listener that accepts nothing must
//! take as many connections at once as the system's `net.core.somaxconn` allows
//! (`tokio::net::TcpListener::bind` asks for 128, as std's does: 129 of this test's 2 048
//! connections got in; Linux's default `somaxconn` is 4096).

use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::TcpStream;

/// The system's cap on an accept queue (Linux); 4096 where it cannot be read.
fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

#[tokio::test]
async fn a_bound_listener_queues_as_many_connections_at_once_as_the_system_allows() {
    let wave = somaxconn().min(2048);
    assert!(
        wave > 129,
        "net.core.somaxconn is {wave}: this machine queues no more than tokio's default, so \
         the test cannot tell the two apart"
    );
    let listener = sse_runtime::serve::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every connection must be queued by the kernel, none dropped. A dropped
    // SYN would come back after 1 s only to find the queue still full, so it never connects.
    let connected = join_all((0..wave).map(|_| async move {
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .is_ok_and(|stream| stream.is_ok())
    }))
    .await;
    let queued = connected.iter().filter(|&&ok| ok).count();
    assert_eq!(queued, wave, "connections queued before any accept");
    drop(listener);
}

#[tokio::test]
async fn binding_an_address_in_use_is_an_error_and_a_name_resolves_like_tokios() {
    let listener = sse_runtime::serve::bind("localhost:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    let error = sse_runtime::serve::bind(addr).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}
