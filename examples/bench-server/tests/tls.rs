//! Spec (issue 25, part 3): `bench-server` with `TLS_CERT` and `TLS_KEY` serves HTTPS, HTTP/2
//! to a client that offers it, and reloads both files on SIGHUP: new handshakes get the new
//! certificate, the open stream goes on. The process as operators run it, a real HTTP/2 client.

mod common;

use common::Node;
use sse_integration_tests::tls::{BodyEvents, H2Client, TestCert};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_server_serves_http2_over_tls_and_reloads_its_certificate_on_sighup() {
    let (old, new) = (TestCert::new(), TestCert::new());
    let dir = std::env::temp_dir().join(format!("bench-server-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let node = Node::start(&[
        ("TLS_CERT", cert.to_str().unwrap()),
        ("TLS_KEY", key.to_str().unwrap()),
    ]);
    let addr = node.addr.parse().unwrap();

    let mut client = H2Client::connect(&old, addr).await;
    let mut stream = BodyEvents::new(client.get("/sse/t").await);
    let published = client
        .send(http::Method::POST, "/publish/t?confirm", r#"{"n":1}"#)
        .await;
    assert!(published.status().is_success(), "{}", published.status());
    assert_eq!(stream.data(1).await, [r#"{"n":1}"#]);

    std::fs::write(&cert, &new.cert_pem).unwrap();
    std::fs::write(&key, &new.key_pem).unwrap();
    node.signal("-HUP");
    node.wait_for_line("bench-server reloaded").await;
    assert!(
        old.connect(addr, &[b"h2"]).await.is_err(),
        "the old certificate is gone"
    );
    let mut renewed = H2Client::connect(&new, addr).await;
    let published = renewed
        .send(http::Method::POST, "/publish/t?confirm", r#"{"n":2}"#)
        .await;
    assert!(published.status().is_success());
    assert_eq!(
        stream.data(1).await,
        [r#"{"n":2}"#],
        "the open stream goes on"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
