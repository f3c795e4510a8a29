//! A successful Dify answer whose body is not read yet: relayed to the browser as it arrives
//! (never held whole, however large), or read up to a cap where the server needs the bytes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::StreamExt;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use self::tokens::TokenCounter;
use super::client::map_transport;
use super::transport::{self, UpstreamBody};
use crate::error::ApiError;
use crate::telemetry::metrics;

mod tokens;

/// Anything that must live exactly as long as the answer is being relayed (permits).
pub type Guard = Box<dyn Send + Sync>;

pub struct Answer {
    response: transport::Response,
    deadline: Instant,
    guard: Option<Guard>,
    tokens: Option<TokenSink>,
}

/// Told a blocking answer's tokens ([`TokenCounter`]) once the body has gone through.
pub type TokenSink = Box<dyn FnOnce(u64) + Send + Sync>;

/// How long the rest of a counted answer no one receives is read: Dify sends a blocking
/// answer's body with its head, whenever that comes (after the request deadline too).
const UNREAD_LIMIT: Duration = Duration::from_secs(30);

/// Why a capped read stopped.
pub(super) enum ReadError {
    TooLarge,
    Failed(ApiError),
}

impl Answer {
    pub(super) fn new(
        response: transport::Response,
        deadline: Instant,
        guard: Option<Guard>,
    ) -> Self {
        Answer {
            response,
            deadline,
            guard,
            tokens: None,
        }
    }

    /// Reports the answer's tokens ([`TokenCounter`]) to `sink` once the body has been relayed
    /// whole.
    pub fn count_tokens(mut self, sink: TokenSink) -> Self {
        if self.response.status().is_success() {
            self.tokens = Some(sink);
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The whole body, for answers the server keeps (cached settings); over `limit` is a 502.
    pub async fn bytes(self, limit: usize) -> Result<Bytes, ApiError> {
        let status = self.response.status();
        read_capped(self.response, limit, self.deadline)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => ApiError::UpstreamUnavailable(format!(
                    "Dify answered {status} with a body over {limit} bytes"
                )),
                ReadError::Failed(e) => e,
            })
    }
}

/// Reads a body up to `limit` bytes, by `deadline`.
pub(super) async fn read_capped(
    response: transport::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, ReadError> {
    if transport::content_length(&response).is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut upstream = response.into_body();
    let mut body = BytesMut::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, upstream.chunk())
            .await
            .map_err(|_| ReadError::Failed(ApiError::UpstreamTimeout))?
            .map_err(|e| ReadError::Failed(map_transport(e)))?;
        let Some(chunk) = chunk else {
            return Ok(body.freeze());
        };
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

/// Dify's status and JSON body, streamed through unchanged; an empty body goes without a type.
impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        self.relay(HeaderValue::from_static("application/json"))
    }
}

impl Answer {
    /// Dify's audio (text-to-audio), streamed through with Dify's `audio/*` type; any other
    /// type goes as `application/octet-stream`, so the browser never runs it as a page.
    pub fn into_audio_response(self) -> Response {
        let content_type = self
            .response
            .headers()
            .get(header::CONTENT_TYPE)
            .filter(|v| {
                v.to_str()
                    .is_ok_and(|t| t.trim().to_ascii_lowercase().starts_with("audio/"))
            })
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
        let mut response = self.relay(content_type);
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }

    fn relay(self, content_type: HeaderValue) -> Response {
        let status = self.response.status();
        let length = transport::content_length(&self.response);
        if status == StatusCode::NO_CONTENT || length == Some(0) {
            return status.into_response();
        }
        let mut response = Response::new(self.into_body());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type);
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        response
    }
}

/// The headers of a Dify answer that describe its body, relayed by the gateway.
const BODY_HEADERS: &[header::HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::ACCEPT_RANGES,
];

impl Answer {
    /// Dify's status, body and body headers exactly as sent (JSON, audio or a file), streamed
    /// through under the same deadline; for the Dify-compatible gateway.
    pub fn into_response_as_sent(self) -> Response {
        let status = self.response.status();
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        for name in BODY_HEADERS {
            if let Some(value) = self.response.headers().get(name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        *response.body_mut() = self.into_body();
        response
    }

    /// The body as it streams in, cut at the call's deadline, holding the answer's guard.
    fn into_body(self) -> Body {
        let length = transport::content_length(&self.response);
        Body::new(UntilDeadline {
            inner: self.response.into_body(),
            deadline: self.deadline,
            timer: None,
            _guard: self.guard,
            done: false,
            tokens: self.tokens.map(|sink| TokenScan {
                counter: TokenCounter::default(),
                seen: 0,
                length,
                sink,
            }),
        })
    }
}

/// The body, cut when the whole-request deadline passes while it waits for Dify.
struct UntilDeadline {
    inner: UpstreamBody,
    deadline: Instant,
    /// Set the first time the body waits: an answer that arrived whole never needs a timer.
    timer: Option<Pin<Box<Sleep>>>,
    _guard: Option<Guard>,
    done: bool,
    tokens: Option<TokenScan>,
}

/// The body so far, read for its token count.
struct TokenScan {
    counter: TokenCounter,
    seen: u64,
    /// `Content-Length`: the server stops polling once that much has gone out.
    length: Option<u64>,
    sink: TokenSink,
}

impl TokenScan {
    fn add(&mut self, chunk: &[u8]) {
        self.counter.feed(chunk);
        self.seen += chunk.len() as u64;
    }

    /// Whether the whole body (by its `Content-Length`) has been added.
    fn whole(&self) -> bool {
        self.length == Some(self.seen)
    }

    fn report(self) {
        let (tokens, usage) = self.counter.spent();
        if let Some(usage) = usage {
            metrics::token_usage(&usage);
        }
        if let Some(tokens) = tokens {
            (self.sink)(tokens);
        }
    }

    /// Reads the rest of a body no one receives any more (for at most [`UNREAD_LIMIT`]), and
    /// reports it: the generation went on to its end at Dify, and the identity's budget pays
    /// for it.
    async fn finish_unread(mut self, mut body: UpstreamBody, _guard: Option<Guard>) {
        let deadline = Instant::now() + UNREAD_LIMIT;
        while !self.whole() {
            match tokio::time::timeout_at(deadline, body.chunk()).await {
                Ok(Ok(Some(chunk))) => self.add(&chunk),
                Ok(Ok(None)) => break,
                _ => return,
            }
        }
        self.report();
    }
}

impl UntilDeadline {
    fn scan(&mut self, chunk: &[u8]) {
        let Some(scan) = self.tokens.as_mut() else {
            return;
        };
        scan.add(chunk);
        if scan.whole() {
            self.report();
        }
    }

    fn report(&mut self) {
        if let Some(scan) = self.tokens.take() {
            scan.report();
        }
    }
}

/// A counted answer dropped before its end (the client left) is read to its end elsewhere.
impl Drop for UntilDeadline {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(scan) = self.tokens.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let body = std::mem::replace(&mut self.inner, UpstreamBody::empty());
        runtime.spawn(scan.finish_unread(body, self._guard.take()));
    }
}

impl http_body::Body for UntilDeadline {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.tokens = None;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                this.scan(&chunk);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.report();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(std::io::ErrorKind::TimedOut.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
