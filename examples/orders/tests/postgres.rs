//! The orders example against the machine's PostgreSQL (127.0.0.1:5432, or `DATABASE_URL`):
//! an `#[sse_poll]` function reads app state (a connection pool) through `Extension`.
//!
//! Spec: the pool added with one `.layer(Extension(pool))` reaches the poll function on every
//! poll; a subscriber gets the rows of its status, then each change as the poller sees it; two
//! subscribers of one status share one poller, and another status gets its own. Each run uses a
//! database of its own, dropped at the end.

use std::time::Duration;

use orders::{NewOrder, Order};
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::Manager;

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh database on the server of `admin_url`, dropped by [`Scratch::drop_now`].
struct Scratch {
    admin: deadpool_postgres::Pool,
    name: String,
    url: String,
}

impl Scratch {
    async fn create() -> Self {
        let admin = orders::pool(&admin_url()).unwrap();
        let name = format!("sse_orders_{}", std::process::id());
        let client = admin.get().await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL at {} is needed for this test: {error}",
                admin_url()
            )
        });
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&statement).await.unwrap();
        }
        let admin_url = admin_url();
        let (server, _database) = admin_url
            .rsplit_once('/')
            .expect("a URL ending in /database");
        let url = format!("{server}/{name}");
        Self { admin, name, url }
    }

    async fn drop_now(self) {
        let client = self.admin.get().await.unwrap();
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

async fn place(server: &TestServer, item: &str, quantity: i32, status: &str) -> Order {
    reqwest::Client::new()
        .post(server.url("/orders"))
        .json(&NewOrder {
            item: item.into(),
            quantity,
            status: status.into(),
        })
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn orders_of(client: &mut SseClient) -> Vec<Order> {
    serde_json::from_str(&client.event().await.data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_reads_the_database_through_the_pool_in_an_extension() {
    let scratch = Scratch::create().await;
    let pool = orders::pool(&scratch.url).unwrap();
    orders::migrate(&pool).await.unwrap();
    let server = TestServer::start(orders::app(pool), Duration::from_secs(30)).await;
    let manager = Manager::global();

    let bolts = place(&server, "bolts", 40, "open").await;
    let mut open = SseClient::connect(&server.url("/sse/orders/open")).await;
    assert_eq!(open.status, 200);
    assert_eq!(orders_of(&mut open).await, std::slice::from_ref(&bolts));

    let nuts = place(&server, "nuts", 12, "open").await;
    place(&server, "washers", 5, "shipped").await;
    assert_eq!(
        orders_of(&mut open).await,
        [nuts.clone(), bolts.clone()],
        "the next poll sees the new open order, not the shipped one"
    );

    let mut second = SseClient::connect(&server.url("/sse/orders/open")).await;
    assert_eq!(
        orders_of(&mut second).await,
        [nuts, bolts],
        "the newest list at once"
    );
    let mut shipped = SseClient::connect(&server.url("/sse/orders/shipped")).await;
    assert_eq!(orders_of(&mut shipped).await[0].item, "washers");
    let stats = manager.stats();
    assert_eq!(
        (stats.subscribers, stats.pollers),
        (3, 2),
        "one poller per status"
    );

    drop((open, second, shipped));
    manager.wait_until(|stats| stats.pollers == 0).await;
    server.stop().await;
    scratch.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extension_layer_the_route_says_what_is_missing() {
    let app = sse_runtime::router(); // no .layer(Extension(pool))
    let server = TestServer::start(app, Duration::from_secs(30)).await;
    let response = reqwest::get(server.url("/sse/orders/open")).await.unwrap();
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Pool"),
        "the rejection names the missing extension: {body}"
    );
}
