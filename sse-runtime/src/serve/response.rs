//! A response on the wire: its head, and its body delimited by `Content-Length`, chunks, or
//! the connection's close.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;

use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::date;

/// The response's status line and headers, with the `Date` it lacks and the header its
/// `framing` needs, up to the empty line that ends the head.
pub(super) fn encode_head(response: &Response, framing: Framing) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    if !response.headers().contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        date::write(&mut head);
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing.header());
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes a response: `Content-Length` when the body's size is known, otherwise chunked (or,
/// for an HTTP/1.0 client, which cannot decode chunks, delimited by closing the connection).
pub(super) async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut response: Response,
    is_head: bool,
    close: bool,
    version: Version,
) -> io::Result<()> {
    let status = response.status();
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = is_head || no_body || status == StatusCode::NOT_MODIFIED;
    let exact = response.body().size_hint().exact();
    let headers = response.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    if no_body {
        // RFC 9110 8.6: a 1xx or 204 response carries no Content-Length.
        headers.remove(header::CONTENT_LENGTH);
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let framing = match exact {
        _ if bodiless => Framing::Length,
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            Framing::Length
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
            // An HTTP/1.0 request is never kept alive: `close` is already set.
            Framing::unknown_length(version)
        }
    };
    io.write_all(&encode_head(&response, framing)).await?;
    if bodiless {
        return io.flush().await;
    }
    let mut body = response.into_body();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        // `let else`, not `if let`: the scrutinee (a `Result` holding a trailers map) would
        // live across the write and grow every connection's task.
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
            continue;
        };
        write_data(io, framing, data).await?;
    }
    io.write_all(framing.last_chunk()).await?;
    io.flush().await
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// By the `Content-Length` in the headers (or there is no body).
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// By closing the connection: an HTTP/1.0 client cannot decode chunks.
    Close,
}

impl Framing {
    /// The framing of a body whose length is not known in advance.
    pub(super) fn unknown_length(version: Version) -> Self {
        if version == Version::HTTP_10 {
            Self::Close
        } else {
            Self::Chunked
        }
    }

    /// The header line it needs, if any (`Close` relies on `connection: close`).
    fn header(self) -> &'static [u8] {
        match self {
            Self::Chunked => b"transfer-encoding: chunked\r\n",
            Self::Length | Self::Close => b"",
        }
    }

    /// What ends the body: the last chunk, for `Chunked`.
    pub(super) fn last_chunk(self) -> &'static [u8] {
        match self {
            Self::Chunked => b"0\r\n\r\n",
            Self::Length | Self::Close => b"",
        }
    }
}

/// Writes body data as `framing` delimits it: for `Chunked`, one chunk (size line, data,
/// CRLF), in one vectored write when possible. (One future for every framing: a connection's
/// task is as large as its largest await point, and every idle connection pays for it.)
pub(super) async fn write_data<I: AsyncWrite + Unpin>(
    io: &mut I,
    framing: Framing,
    data: Bytes,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut digits = [0u8; 16];
    let chunked = framing == Framing::Chunked;
    let size: &[u8] = if chunked {
        crate::event_id::hex(data.len() as u64, &mut digits)
    } else {
        b""
    };
    let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
    let mut parts = [
        IoSlice::new(size),
        IoSlice::new(crlf),
        IoSlice::new(&data),
        IoSlice::new(crlf),
    ];
    let mut slices: &mut [IoSlice<'_>] = &mut parts;
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Byte-level tests of response framing: what the differential test holds on the wire, one
/// decision at a time.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use futures_util::stream;

    use super::*;

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    /// A response with a fixed `Date`, so the bytes are known.
    fn response(status: StatusCode, body: Body) -> Response {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::DATE, HeaderValue::from_static(DATE));
        response
    }

    /// A body whose length is not known in advance.
    fn streamed(parts: &[&'static str]) -> Body {
        let parts: Vec<Result<Bytes, io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(stream::iter(parts))
    }

    async fn wire(response: Response, is_head: bool, close: bool, version: Version) -> String {
        let mut out = Vec::new();
        write_response(&mut out, response, is_head, close, version)
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn a_body_of_known_length_gets_its_content_length() {
        let out = wire(
            response(StatusCode::OK, Body::from("hello")),
            false,
            false,
            Version::HTTP_11,
        );
        assert_eq!(
            out.await,
            format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\ncontent-length: 5\r\n\r\nhello")
        );
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked_and_empty_chunks_are_not_written() {
        let body = streamed(&["hel", "", "lo world"]);
        let out = wire(
            response(StatusCode::OK, body),
            false,
            false,
            Version::HTTP_11,
        )
        .await;
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 200 OK\r\ndate: {DATE}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn an_http10_client_gets_a_body_of_unknown_length_delimited_by_the_close() {
        let body = streamed(&["a", "b"]);
        let out = wire(
            response(StatusCode::OK, body),
            false,
            true,
            Version::HTTP_10,
        )
        .await;
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\nconnection: close\r\n\r\nab")
        );
    }

    /// axum's router sets a HEAD response's `Content-Length` from the GET body it drops; the
    /// head keeps it, and no body follows.
    #[tokio::test]
    async fn a_head_request_gets_the_head_with_its_length_and_no_body() {
        let mut answer = response(StatusCode::OK, Body::from("hello"));
        answer
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(5));
        let out = wire(answer, true, false, Version::HTTP_11).await;
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\ncontent-length: 5\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn no_content_and_informational_answers_carry_no_length_and_no_body() {
        for status in [StatusCode::NO_CONTENT, StatusCode::CONTINUE] {
            let mut answer = response(status, Body::from("ignored"));
            answer
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(7));
            let out = wire(answer, false, false, Version::HTTP_11).await;
            let reason = status.canonical_reason().unwrap();
            assert_eq!(
                out,
                format!(
                    "HTTP/1.1 {} {reason}\r\ndate: {DATE}\r\n\r\n",
                    status.as_u16()
                )
            );
        }
    }

    #[tokio::test]
    async fn a_handlers_own_transfer_encoding_and_wrong_length_are_replaced() {
        let mut answer = response(StatusCode::OK, Body::from("hello"));
        answer
            .headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        answer
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(99));
        let out = wire(answer, false, true, Version::HTTP_11).await;
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 200 OK\r\ndate: {DATE}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
            )
        );
    }

    #[test]
    fn a_head_without_a_date_gets_one_in_imf_fixdate_form() {
        let head = encode_head(&Response::new(Body::empty()), Framing::Length);
        let head = String::from_utf8(head).unwrap();
        let date = head
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .expect("a date line");
        assert_eq!(date.len(), DATE.len());
        assert!(httpdate::parse_http_date(date).is_ok(), "{date:?}");
    }
}
