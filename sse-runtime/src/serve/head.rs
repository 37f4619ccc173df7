//! A request head on the framework's engine: read and parsed within its limits, the body's
//! framing decided, or the request refused with a status that says why.

use std::io;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MAX_BODY, MAX_HEAD, MAX_HEADERS};

/// Why a request is refused before it reaches the router. The answer names the reason, and
/// the connection closes after it: where the request ends can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The head is over [`MAX_HEAD`], or has more than `MAX_HEADERS` fields.
    HeadTooLarge,
    /// The head does not parse (or a field is not a valid name or value).
    Malformed,
    /// Neither HTTP/1.0 nor HTTP/1.1.
    Version,
    /// `Transfer-Encoding` on a request: only `Content-Length` bodies are read here.
    TransferEncoding,
    /// A `Content-Length` that is not one value of digits only.
    ContentLength,
    /// A body over [`MAX_BODY`].
    BodyTooLarge,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed | Self::ContentLength => StatusCode::BAD_REQUEST,
            Self::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Self::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "request head too large",
            Self::Malformed => "malformed request head",
            Self::Version => "only HTTP/1.0 and HTTP/1.1 are served",
            Self::TransferEncoding => {
                "chunked request bodies are not supported here (Server::hyper supports them)"
            }
            Self::ContentLength => "Content-Length must be a single value of digits only",
            Self::BodyTooLarge => "request body too large",
        }
    }
}

/// What reading the next request head gave.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and unpacked at once; boxing would allocate per request"
)]
pub(super) enum Incoming {
    /// A complete head, and its length in the buffer.
    Head(Head, usize),
    /// The client closed the connection between requests.
    Closed,
    Refused(Refusal),
}

/// A request head, parsed.
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
}

/// Reads until `buf` holds a complete request head (or the client closes, or the head is to be
/// refused).
pub(super) async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
) -> io::Result<Incoming> {
    loop {
        // Leading empty lines between pipelined requests are allowed (RFC 9112 2.2).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let refusal = match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(match parse_head(&request) {
                        Ok(head) => Incoming::Head(head, len),
                        Err(refusal) => Incoming::Refused(refusal),
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                    Some(Refusal::HeadTooLarge)
                }
                Err(httparse::Error::Version) => Some(Refusal::Version),
                Err(_) => Some(Refusal::Malformed),
            };
            if let Some(refusal) = refusal {
                return Ok(Incoming::Refused(refusal));
            }
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(Incoming::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

pub(super) fn parse_head(request: &httparse::Request<'_, '_>) -> Result<Head, Refusal> {
    fn bad<E>(_: E) -> Refusal {
        Refusal::Malformed
    }
    let method =
        Method::from_bytes(request.method.ok_or(Refusal::Malformed)?.as_bytes()).map_err(bad)?;
    let uri: Uri = request
        .path
        .ok_or(Refusal::Malformed)?
        .parse()
        .map_err(bad)?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Refusal::Version),
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).map_err(bad)?,
            HeaderValue::from_bytes(h.value).map_err(bad)?,
        );
    }
    Ok(Head {
        method,
        uri,
        version,
        headers,
    })
}

/// The length of the request's body. Only `Content-Length` framing is accepted, and only as
/// plain digits: a sign, a second value or a second header is refused (a disagreement about
/// where the body ends is how requests are smuggled).
pub(super) fn body_length(head: &Head) -> Result<u64, Refusal> {
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::TransferEncoding);
    }
    let mut values = head.headers.get_all(header::CONTENT_LENGTH).iter();
    let length = match (values.next(), values.next()) {
        (None, _) => 0,
        (Some(value), None) => parse_length(value.as_bytes()).ok_or(Refusal::ContentLength)?,
        (Some(_), Some(_)) => return Err(Refusal::ContentLength),
    };
    if length > MAX_BODY as u64 {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(length)
}

/// `1*DIGIT` (RFC 9110 8.6), nothing else.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

pub(super) fn wants_keep_alive(head: &Head) -> bool {
    head.version != Version::HTTP_10 && !has_token(&head.headers, "close")
}

/// Whether the `Connection` headers, all of them, list `token` (a comma-separated,
/// case-insensitive list, RFC 9110 7.6.1).
pub(super) fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Answers a request that cannot be served, saying why, and closes.
pub(super) async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, refusal: Refusal) -> io::Result<()> {
    let status = refusal.status();
    let canonical = status.canonical_reason().unwrap_or("");
    let body = format!("{} {canonical}: {}\n", status.as_u16(), refusal.reason());
    let response = format!(
        "HTTP/1.1 {} {canonical}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}

/// Byte-level tests of the head: what the differential test against hyper holds on the wire,
/// here one decision at a time.
#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one head from `bytes`, delivered `step` bytes per read.
    async fn read(bytes: &[u8], step: usize) -> (io::Result<Incoming>, BytesMut) {
        let mut io = trickle(bytes, step);
        let mut buf = BytesMut::new();
        let incoming = read_head(&mut io, &mut buf).await;
        (incoming, buf)
    }

    /// A reader that hands out at most `step` bytes per read, as a slow client sends them.
    fn trickle(bytes: &[u8], step: usize) -> impl AsyncRead + Unpin + use<> {
        let chunks: Vec<Vec<u8>> = bytes.chunks(step.max(1)).map(<[u8]>::to_vec).collect();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            for chunk in chunks {
                if client.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
        });
        server
    }

    fn head(incoming: io::Result<Incoming>) -> (Head, usize) {
        match incoming.expect("no I/O error") {
            Incoming::Head(head, len) => (head, len),
            Incoming::Closed => panic!("closed, expected a head"),
            Incoming::Refused(refusal) => panic!("refused ({refusal:?}), expected a head"),
        }
    }

    fn refusal(incoming: io::Result<Incoming>) -> Refusal {
        match incoming.expect("no I/O error") {
            Incoming::Refused(refusal) => refusal,
            Incoming::Closed => panic!("closed, expected a refusal"),
            Incoming::Head(head, _) => {
                panic!("parsed {} {}, expected a refusal", head.method, head.uri)
            }
        }
    }

    /// The head of `text` as `read_head` parses it, for the framing checks.
    async fn parsed(text: &str) -> Head {
        head(read(text.as_bytes(), usize::MAX).await.0).0
    }

    #[tokio::test]
    async fn a_complete_head_is_parsed_and_its_length_leaves_the_body_in_the_buffer() {
        let request = b"POST /orders?x=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 3\r\n\r\nabc";
        let (incoming, buf) = read(request, usize::MAX).await;
        let (head, len) = head(incoming);
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/orders?x=1");
        assert_eq!(head.version, Version::HTTP_11);
        let twos: Vec<_> = head.headers.get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"], "repeated fields kept, in order");
        assert_eq!(
            &buf[len..],
            b"abc",
            "the body stays in the buffer, after the head"
        );
    }

    #[tokio::test]
    async fn a_head_sent_one_byte_at_a_time_parses_as_one_sent_at_once() {
        let request = b"GET /sse/alarms HTTP/1.0\r\nLast-Event-ID: 7\r\n\r\n";
        let (one, _) = head(read(request, 1).await.0);
        let (all, _) = head(read(request, usize::MAX).await.0);
        assert_eq!(
            (one.method, one.uri, one.version),
            (all.method, all.uri, all.version)
        );
        assert_eq!(one.headers, all.headers);
        assert_eq!(one.version, Version::HTTP_10);
    }

    #[tokio::test]
    async fn empty_lines_before_a_pipelined_request_are_skipped() {
        let (head, _) = head(read(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 3).await.0);
        assert_eq!(head.uri, "/");
    }

    #[tokio::test]
    async fn a_close_between_requests_is_closed_and_one_inside_a_head_is_an_error() {
        assert!(matches!(read(b"", 1).await.0, Ok(Incoming::Closed)));
        let error = read(b"GET / HTTP/1.1\r\nHost:", 4)
            .await
            .0
            .err()
            .expect("an error");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_as_too_large_before_it_ends() {
        let mut request = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        request.resize(MAX_HEAD + 1, b'a');
        // No end of head: the refusal comes once MAX_HEAD bytes are in, not at the close.
        assert_eq!(refusal(read(&request, 1024).await.0), Refusal::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            refusal(read(&many, usize::MAX).await.0),
            Refusal::HeadTooLarge
        );
    }

    #[tokio::test]
    async fn a_head_that_does_not_parse_is_refused_as_malformed_or_as_its_version() {
        for bad in [
            &b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"GET\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(
                refusal(read(bad, usize::MAX).await.0),
                Refusal::Malformed,
                "{bad:?}"
            );
        }
        for version in [&b"GET / HTTP/2.0\r\n\r\n"[..], b"GET / HTTP/1.2\r\n\r\n"] {
            assert_eq!(
                refusal(read(version, usize::MAX).await.0),
                Refusal::Version,
                "{version:?}"
            );
        }
    }

    #[tokio::test]
    async fn only_one_content_length_of_digits_frames_a_body() {
        let length = |text: &'static str| async move { body_length(&parsed(text).await) };
        assert_eq!(length("GET / HTTP/1.1\r\n\r\n").await, Ok(0));
        assert_eq!(
            length("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n").await,
            Ok(7)
        );
        for smuggled in [
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert_eq!(
                length(smuggled).await,
                Err(Refusal::ContentLength),
                "{smuggled:?}"
            );
        }
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(length(chunked).await, Err(Refusal::TransferEncoding));
        let large = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            body_length(&parsed(&large).await),
            Err(Refusal::BodyTooLarge)
        );
        let largest = format!("POST / HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert_eq!(body_length(&parsed(&largest).await), Ok(MAX_BODY as u64));
    }

    #[tokio::test]
    async fn keep_alive_is_http11_without_a_close_token_in_any_connection_header() {
        let alive = |text: &'static str| async move { wants_keep_alive(&parsed(text).await) };
        assert!(alive("GET / HTTP/1.1\r\n\r\n").await);
        assert!(alive("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n").await);
        assert!(!alive("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n").await);
        assert!(!alive("GET / HTTP/1.1\r\nConnection: a\r\nConnection: b ,close\r\n\r\n").await);
        assert!(
            !alive("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await,
            "1.0 closes"
        );
        assert!(
            alive("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").await,
            "a token, not a prefix"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_a_complete_response_that_names_its_reason_and_closes() {
        let mut written = Vec::new();
        refuse(&mut written, Refusal::TransferEncoding)
            .await
            .unwrap();
        let body = "501 Not Implemented: chunked request bodies are not supported here \
                    (Server::hyper supports them)\n";
        let expected = format!(
            "HTTP/1.1 501 Not Implemented\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(written).unwrap(), expected);
    }
}
