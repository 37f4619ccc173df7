//! `sse_runtime::serve` frames HTTP/1.1 like hyper: the same bytes go to `serve` and to
//! `axum::serve` (hyper), both on loopback with the same `Router`, and the test compares the
//! framing decisions: which requests the handlers saw and with which bodies (where each
//! request ends), which were refused, and whether the connection stayed open for the next.
//!
//! Rule: `serve` may be stricter than hyper (refuse, or close, where hyper goes on), never more
//! lenient: everything it hands a handler, hyper hands the handler too, request by request.
//! Seeded with the shapes of the issue and request smuggling's classics, each with the
//! expected relation; then a seeded generator combines tricky pieces into more requests.
//! `SSE_DIFFERENTIAL_CASES` sets how many (default 2000; CI runs the default) and
//! `SSE_DIFFERENTIAL_SEED` the seed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use sse_integration_tests::TestServer;
use sse_runtime::{Manager, SseHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every request the handlers see is echoed: method, path and the body they read, so a
/// difference in where a request ends shows up as a different echo.
async fn echo(request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await;
    let body = match body {
        Ok(bytes) => format!("{:?}", String::from_utf8_lossy(&bytes)),
        Err(_) => "<body error>".to_owned(),
    };
    let text = format!("{} {} {body}", parts.method, parts.uri.path());
    ([("x-method", parts.method.to_string())], text)
}

/// A handler that never reads the body.
async fn no_read(method: Method) -> impl IntoResponse {
    (
        [("x-method", method.to_string())],
        format!("noread {method}"),
    )
}

fn app(manager: &Manager) -> Router {
    Router::new()
        .route("/sse", get(SseHandler::new(manager).topic("t")))
        .route("/noread", any(no_read))
        .fallback(echo)
}

/// What a connection's bytes came to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    responses: Vec<Answer>,
    /// The final request (a probe with `Connection: close`) was answered: the connection was
    /// still open and in sync after the case's requests.
    probe_answered: bool,
    /// The server neither answered further nor closed within the wait.
    hung: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// A handler answered; its echo.
    Handled(String),
    /// An SSE stream started.
    Stream,
    /// The server refused the request itself (any 4xx/5xx without an echo).
    Refused(u16),
}

const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// How long a connection that neither answers nor closes is given: it is waiting for bytes
/// that will not come (a body longer than what was sent), the same on both servers.
const HANG: Duration = Duration::from_secs(3);

async fn run(addr: SocketAddr, case: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = case.to_vec();
    bytes.extend_from_slice(PROBE);
    // The server may close before reading everything (a refusal): that is an outcome too.
    let _ = stream.write_all(&bytes).await;
    let mut received = Vec::new();
    let hung = loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(HANG, stream.read(&mut chunk)).await {
            Err(_) => break true,
            Ok(Ok(0) | Err(_)) => break false,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    };
    let mut responses = parse(&received);
    let probe_answered = responses.last() == Some(&Answer::Handled("GET /probe \"\"".into()));
    if probe_answered {
        responses.pop();
    }
    Outcome {
        responses,
        probe_answered,
        hung,
    }
}

/// Splits what a server sent into responses.
fn parse(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = response.parse(bytes) else {
            return answers;
        };
        let status = response.code.unwrap();
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let method = header("x-method");
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let sse = header("content-type").is_some_and(|v| v.contains("event-stream"));
        bytes = &bytes[len..];
        if (100..200).contains(&status) {
            continue;
        }
        let bodiless = method.as_deref() == Some("HEAD") || status == 204 || status == 304;
        let body: Vec<u8> = if bodiless {
            Vec::new()
        } else if chunked {
            let mut body = Vec::new();
            loop {
                let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
                    bytes = &[];
                    break;
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&bytes[..line_end]).trim(), 16)
                        .unwrap_or(0);
                bytes = &bytes[line_end + 2..];
                if size == 0 {
                    bytes = bytes.get(2..).unwrap_or(&[]);
                    break;
                }
                let take = size.min(bytes.len());
                body.extend_from_slice(&bytes[..take]);
                bytes = bytes.get(take + 2..).unwrap_or(&[]);
            }
            body
        } else if let Some(length) = length {
            let take = length.min(bytes.len());
            let body = bytes[..take].to_vec();
            bytes = &bytes[take..];
            body
        } else {
            std::mem::take(&mut bytes).to_vec()
        };
        answers.push(match (sse, method) {
            (true, _) if status == 200 => Answer::Stream,
            (_, Some(_)) => Answer::Handled(String::from_utf8_lossy(&body).into_owned()),
            _ => Answer::Refused(status),
        });
    }
}

/// How `serve`'s outcome relates to hyper's.
#[derive(Debug, PartialEq, Eq)]
enum Relation {
    Same,
    /// `serve` refused or closed where hyper went on; everything before was the same.
    Stricter,
    /// `serve` handed a handler something hyper did not, or split requests differently.
    Different,
}

fn relate(serve: &Outcome, hyper: &Outcome) -> Relation {
    if serve == hyper {
        return Relation::Same;
    }
    // Responses `serve` sent that hyper's sequence does not have at the same place, ignoring
    // refusals (a refusal hands nothing to a handler).
    let handled = |answers: &[Answer]| -> Vec<Answer> {
        answers
            .iter()
            .filter(|a| !matches!(a, Answer::Refused(_)))
            .cloned()
            .collect()
    };
    let (s, h) = (handled(&serve.responses), handled(&hyper.responses));
    let prefix = s.len() <= h.len() && s[..] == h[..s.len()];
    let serve_stopped = !serve.probe_answered && !serve.hung;
    if prefix && (s.len() < h.len() || hyper.probe_answered || hyper.hung) && serve_stopped {
        return Relation::Stricter;
    }
    if prefix
        && s.len() == h.len()
        && serve.probe_answered == hyper.probe_answered
        && serve.hung == hyper.hung
    {
        // The same requests reached the handlers, and the connection ended the same way; only
        // refusal codes differ.
        return Relation::Same;
    }
    Relation::Different
}

struct Servers {
    serve: TestServer,
    hyper: TestServer,
    _manager: Manager,
}

async fn servers() -> Servers {
    let manager = Manager::new();
    Servers {
        serve: TestServer::start_direct(app(&manager), Duration::from_secs(30)).await,
        hyper: TestServer::start(app(&manager), Duration::from_secs(30)).await,
        _manager: manager,
    }
}

async fn compare(servers: &Servers, case: &[u8]) -> (Relation, Outcome, Outcome) {
    let (serve, hyper) = tokio::join!(run(servers.serve.addr, case), run(servers.hyper.addr, case));
    (relate(&serve, &hyper), serve, hyper)
}

/// The shapes of the issue and the smuggling classics, each with the relation it must have and
/// why, where `serve` is deliberately stricter.
fn seeds() -> Vec<(&'static str, Vec<u8>, Relation)> {
    use Relation::{Same, Stricter};
    let r = |s: &str| s.as_bytes().to_vec();
    vec![
        ("plain GET", r("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), Same),
        (
            "POST with a body",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            Same,
        ),
        (
            "pipelined GETs",
            r("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        (
            "CL +2 smuggling",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            Same,
        ),
        (
            "CL -1",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            Same,
        ),
        (
            "CL with hex",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc"),
            Same,
        ),
        (
            "CL overflowing u64",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Same,
        ),
        (
            "two different CLs",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            Same,
        ),
        (
            "comma-listed different CLs",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd"),
            Same,
        ),
        // hyper accepts a repeated identical header (not a comma list); serve refuses both.
        (
            "two identical CLs",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            Stricter,
        ),
        (
            "comma-listed identical CLs",
            r("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
            Same,
        ),
        // serve refuses chunked request bodies (501) and every CL+TE combination.
        (
            "TE chunked",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            Stricter,
        ),
        (
            "CL + TE",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            Stricter,
        ),
        (
            "TE casing",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            Stricter,
        ),
        (
            "TE not last chunked",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            Same,
        ),
        (
            "TE identity",
            r(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc",
            ),
            Same,
        ),
        (
            "obs-fold",
            r("GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"),
            Same,
        ),
        ("bare LF line ends", r("GET /a HTTP/1.1\nHost: x\n\n"), Same),
        (
            "NUL in a value",
            r("GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            Same,
        ),
        (
            "CR in a value",
            r("GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
            Same,
        ),
        (
            "space before colon",
            r("GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"),
            Same,
        ),
        (
            "absolute-form target",
            r("GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        ("missing Host", r("GET /a HTTP/1.1\r\n\r\n"), Same),
        ("HTTP/0.9", r("GET /a\r\n\r\n"), Same),
        ("HTTP/1.0", r("GET /a HTTP/1.0\r\n\r\n"), Same),
        // serve closes every HTTP/1.0 connection after its response; hyper honours keep-alive.
        (
            "HTTP/1.0 keep-alive",
            r("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            Stricter,
        ),
        (
            "HTTP/1.0 with Expect",
            r("POST /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"),
            Same,
        ),
        (
            "Connection: keep-alive, close",
            r("GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n"),
            Same,
        ),
        (
            "Connection: Upgrade, Close",
            r("GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n"),
            Same,
        ),
        (
            "two Connection headers",
            r("GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"),
            Same,
        ),
        (
            "unread body, all sent",
            r("POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            Same,
        ),
        (
            "unread body, expect",
            r(
                "POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            ),
            Same,
        ),
        (
            "HEAD on a route",
            r("HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        (
            "HEAD on the SSE route",
            r("HEAD /sse HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        (
            "pipelining after an SSE GET",
            r("GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        (
            "lowercase method",
            r("get /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        (
            "lowercase version",
            r("GET /a http/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
        ("HTTP/1.2", r("GET /a HTTP/1.2\r\nHost: x\r\n\r\n"), Same),
        (
            "leading empty lines",
            r("\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Same,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_frames_the_seeded_shapes_like_hyper_or_stricter_where_documented() {
    let servers = servers().await;
    let mut failures = Vec::new();
    let results =
        futures_util::future::join_all(seeds().into_iter().map(|(name, case, expected)| {
            let servers = &servers;
            async move {
                let (relation, serve, hyper) = compare(servers, &case).await;
                (name, expected, relation, serve, hyper)
            }
        }))
        .await;
    for (name, expected, relation, serve, hyper) in results {
        eprintln!("{name:32} {relation:?}\n    serve {serve:?}\n    hyper {hyper:?}");
        if relation != expected {
            failures.push(format!("{name}: expected {expected:?}, got {relation:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// xorshift64*, reproducible from its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// One generated request (or several): tricky pieces of each part of a request, combined.
fn generate(random: &mut Random) -> Vec<u8> {
    let methods = ["GET", "POST", "PUT", "get", "OPTIONS", "G\0T"];
    let targets = [
        "/a",
        "/noread",
        "/a?q=1",
        "http://x/abs",
        "*",
        "/a%00",
        "//a",
        "/a b",
    ];
    let versions = [
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "",
    ];
    let lengths = [
        "3",
        "3",
        "+3",
        "03",
        "3, 3",
        "3,4",
        " 3",
        "3 ",
        "-3",
        "",
        "0x3",
        "18446744073709551616",
        "2",
        "4",
    ];
    let encodings = [
        "chunked",
        "Chunked",
        " chunked",
        "chunked, identity",
        "identity",
        "gzip, chunked",
        "xchunked",
        "chunked\t",
    ];
    let connections = [
        "close",
        "keep-alive",
        "Keep-Alive, Close",
        "upgrade",
        "close, close",
        "",
    ];
    let others = [
        "Expect: 100-continue",
        "X-A: 1\r\n 2",
        "X-B: a\0b",
        "X-C:",
        ": empty-name",
        "Host: y",
        "X-D: \u{e9}",
    ];
    let eol = if random.one_in(8) { "\n" } else { "\r\n" };
    let mut request = format!(
        "{} {} {}{eol}",
        random.pick(&methods),
        random.pick(&targets),
        random.pick(&versions)
    );
    if !random.one_in(6) {
        request.push_str(&format!("Host: x{eol}"));
    }
    let chunked_body = random.one_in(4);
    for _ in 0..random.next() % 4 {
        let header = match random.next() % 4 {
            0 => format!("Content-Length: {}", random.pick(&lengths)),
            1 => format!("Transfer-Encoding: {}", random.pick(&encodings)),
            2 => format!("Connection: {}", random.pick(&connections)),
            _ => random.pick(&others).to_owned(),
        };
        request.push_str(&header);
        request.push_str(eol);
    }
    request.push_str(eol);
    if chunked_body {
        request.push_str("3\r\nabc\r\n0\r\n\r\n");
    } else if random.one_in(2) {
        request.push_str("abc");
    }
    if random.one_in(3) {
        request.push_str("GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    request.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_never_more_lenient_than_hyper_on_generated_requests() {
    let cases: usize = std::env::var("SSE_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("SSE_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let servers = servers().await;
    let mut random = Random(seed | 1);
    let generated: Vec<Vec<u8>> = (0..cases).map(|_| generate(&mut random)).collect();
    // Bounded concurrency: loopback only, at most 32 connections per server at a time.
    let semaphore = tokio::sync::Semaphore::new(32);
    let results = futures_util::future::join_all(generated.iter().map(|case| {
        let (servers, semaphore) = (&servers, &semaphore);
        async move {
            let _permit = semaphore.acquire().await.unwrap();
            compare(servers, case).await
        }
    }))
    .await;
    let (mut same, mut stricter, mut different) = (0, 0, Vec::new());
    for (case, (relation, serve, hyper)) in generated.iter().zip(results) {
        match relation {
            Relation::Same => same += 1,
            Relation::Stricter => {
                stricter += 1;
                eprintln!(
                    "stricter: {:?}\n    serve {serve:?}\n    hyper {hyper:?}",
                    String::from_utf8_lossy(case)
                );
            }
            Relation::Different => different.push(format!(
                "{:?}\n    serve {serve:?}\n    hyper {hyper:?}",
                String::from_utf8_lossy(case)
            )),
        }
    }
    eprintln!(
        "{cases} generated cases (seed {seed:#x}): {same} same, {stricter} stricter, {} different",
        different.len()
    );
    assert!(different.is_empty(), "{}", different.join("\n"));
}
