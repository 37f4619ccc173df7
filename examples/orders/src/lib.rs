//! A service whose SSE stream is polled from PostgreSQL: the open orders of one status, read
//! through a connection pool while somebody watches.
//!
//! How app state reaches a poller: `sse_runtime::router()` mounts routes that every
//! `#[sse_poll]` in the binary registered, so they cannot share the application's `State<S>`
//! type. Shared state goes in a request extension instead, with one layer on the whole router
//! (`.layer(Extension(pool))`), and the poll function takes it as `Extension<Pool>`. A poller
//! sees the extensions a layer adds (it never sees a subscriber's headers, cookies or address),
//! and it re-reads them before every poll, so it always uses the pool, never one connection.
//!
//! ```no_run
//! # async fn run() -> Result<(), orders::Error> {
//! let pool = orders::pool("postgres://postgres@127.0.0.1:5432/test")?;
//! orders::migrate(&pool).await?;
//! let listener = sse_runtime::serve::bind("127.0.0.1:3001").await?;
//! sse_runtime::serve(listener, orders::app(pool)).await;
//! # Ok(())
//! # }
//! ```

use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use sse_runtime::{PollError, sse_poll};

/// What setting up the pool or the table can fail with.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One order, as the stream sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: i64,
    pub item: String,
    pub quantity: i32,
}

/// What `POST /orders` takes.
#[derive(Debug, Deserialize, Serialize)]
pub struct NewOrder {
    pub item: String,
    pub quantity: i32,
    pub status: String,
}

/// The open orders of `status`, newest first, polled every 500 ms while the route
/// `/sse/orders/{status}` has subscribers (one poller per status, shared by all of them).
/// Change detection (on for polled routes) sends a list only when it differs from the last.
#[sse_poll(interval = "500ms", path = "/sse/orders/{status}")]
pub async fn orders(
    Extension(pool): Extension<Pool>,
    Path(status): Path<String>,
) -> Result<Vec<Order>, PollError> {
    let client = pool.get().await.map_err(unavailable)?;
    let rows = client
        .query(
            "SELECT id, item, quantity FROM orders WHERE status = $1 ORDER BY id DESC LIMIT 100",
            &[&status],
        )
        .await
        .map_err(unavailable)?;
    Ok(rows
        .iter()
        .map(|row| Order {
            id: row.get(0),
            item: row.get(1),
            quantity: row.get(2),
        })
        .collect())
}

/// A database error as the stream's error event: `503` with the reason.
fn unavailable(error: impl std::fmt::Display) -> PollError {
    PollError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("database: {error}"),
    )
}

/// `POST /orders`: stores an order; the poller of its status sends it on its next poll.
async fn create(
    Extension(pool): Extension<Pool>,
    Json(order): Json<NewOrder>,
) -> Result<Json<Order>, (StatusCode, String)> {
    let fail = |error: &dyn std::fmt::Display| (StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    let client = pool.get().await.map_err(|e| fail(&e))?;
    let row = client
        .query_one(
            "INSERT INTO orders (item, quantity, status) VALUES ($1, $2, $3) RETURNING id",
            &[&order.item, &order.quantity, &order.status],
        )
        .await
        .map_err(|e| fail(&e))?;
    Ok(Json(Order {
        id: row.get(0),
        item: order.item,
        quantity: order.quantity,
    }))
}

/// The service: every SSE route of the binary, `POST /orders`, and the pool for all of them.
pub fn app(pool: Pool) -> Router {
    sse_runtime::router()
        .route("/orders", post(create))
        .layer(Extension(pool))
}

/// A pool of at most 8 connections to `url` (`postgres://user@host:port/database`).
pub fn pool(url: &str) -> Result<Pool, Error> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(8).build()?)
}

/// Creates the `orders` table if it is not there.
pub async fn migrate(pool: &Pool) -> Result<(), Error> {
    pool.get()
        .await?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS orders (
                id BIGSERIAL PRIMARY KEY,
                item TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                status TEXT NOT NULL
            )",
        )
        .await?;
    Ok(())
}
