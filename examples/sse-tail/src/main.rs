//! `sse-tail URL [--last-event-id ID] [--once]`: prints every event of an SSE stream, one line
//! each (`id event data`), what `curl -N` shows but parsed. Like a browser's `EventSource` it
//! reconnects when the stream ends, after the server's `retry:` hint, sending the last id it saw.
//!
//! ```sh
//! cargo run -p dashboard &
//! cargo run -p sse-tail -- http://127.0.0.1:3000/sse/system
//! ```

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;

struct Args {
    url: String,
    last_event_id: Option<String>,
    once: bool,
}

fn args() -> Args {
    let usage = "usage: sse-tail URL [--last-event-id ID] [--once]";
    let mut url = None;
    let mut last_event_id = None;
    let mut once = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--last-event-id" => last_event_id = Some(args.next().unwrap_or_else(|| fail(usage))),
            "--once" => once = true,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => fail(usage),
        }
    }
    Args {
        url: url.unwrap_or_else(|| fail(usage)),
        last_event_id,
        once,
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let Args {
        url,
        mut last_event_id,
        once,
    } = args();
    let client = reqwest::Client::new();
    let mut retry = Duration::from_secs(3);
    loop {
        let mut request = client.get(&url).header("accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            request = request.header("last-event-id", id);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                eprintln!("connected to {url} ({})", response.status());
                let mut events = response.bytes_stream().eventsource();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            if let Some(ms) = event.retry {
                                retry = ms;
                            }
                            if !event.id.is_empty() {
                                last_event_id = Some(event.id.clone());
                            }
                            println!("{} {} {}", event.id, event.event, event.data);
                        }
                        Err(error) => {
                            eprintln!("stream error: {error}");
                            break;
                        }
                    }
                }
                eprintln!("stream ended");
            }
            Ok(response) => {
                // A browser does not retry an HTTP error either.
                eprintln!("{url}: {}", response.status());
                std::process::exit(1);
            }
            Err(error) => eprintln!("{url}: {error}"),
        }
        if once {
            return;
        }
        eprintln!("reconnecting in {retry:?}");
        tokio::time::sleep(retry).await;
    }
}
