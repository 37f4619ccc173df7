//! `cargo run -p orders -- [--addr HOST:PORT] [--database URL]`: the orders service on
//! PostgreSQL (default `postgres://postgres@127.0.0.1:5432/test`, or `DATABASE_URL`).
//! Watch with `cargo run -p sse-tail -- http://127.0.0.1:3001/sse/orders/open` and add orders
//! with `curl -d '{"item":"bolts","quantity":40,"status":"open"}' -H 'content-type: application/json' http://127.0.0.1:3001/orders`.

use std::process::exit;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut addr = "127.0.0.1:3001".to_owned();
    let mut database = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            ("--database", Some(value)) => database = value,
            _ => {
                eprintln!("usage: orders [--addr HOST:PORT] [--database URL]");
                exit(2);
            }
        }
    }
    let pool = orders::pool(&database).unwrap_or_else(|error| {
        eprintln!("--database {database}: {error}");
        exit(2)
    });
    if let Err(error) = orders::migrate(&pool).await {
        eprintln!("cannot prepare the orders table on {database}: {error}");
        exit(1);
    }
    let listener = sse_runtime::serve::bind(&addr)
        .await
        .unwrap_or_else(|error| {
            eprintln!("cannot listen on {addr}: {error}");
            exit(1)
        });
    println!("orders listening on http://{addr}/ (stream: /sse/orders/{{status}})");
    sse_runtime::serve(listener, orders::app(pool)).await;
}
