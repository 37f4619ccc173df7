//! A TCP proxy on loopback that can go silent: [`Proxy::freeze`] stops forwarding on every
//! connection open at that moment while keeping it open, the way a connection dies behind a
//! NAT or a crashed middlebox: no FIN, no RST, just nothing. Connections made later are
//! forwarded normally. This is what a liveness probe exists to detect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    addr: SocketAddr,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection made to [`addr`](Self::addr) to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (frozen_below, next) = (frozen_below.clone(), next.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let number = next.fetch_add(1, Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(
                        client_read,
                        server_write,
                        number,
                        frozen_below.clone(),
                    ));
                    tokio::spawn(pump(
                        server_read,
                        client_write,
                        number,
                        frozen_below.clone(),
                    ));
                }
            }
        });
        Self {
            addr,
            frozen_below,
            next,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding on every connection open now; they stay open, silent.
    pub fn freeze(&self) {
        let open = self.next.load(Ordering::SeqCst);
        self.frozen_below.store(open, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if number < frozen_below.load(Ordering::SeqCst) {
            // Silent from now on, but open: hold both halves until the test ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
