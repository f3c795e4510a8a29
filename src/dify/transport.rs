//! The HTTP client under every Dify call. Calls to a plain-HTTP Dify with a body in hand (JSON,
//! or none) go out on hyper's own pooled client, which reqwest drives underneath: reqwest's own
//! layer (two re-parses of each call's URL among it) was a quarter of a relayed JSON request's
//! instructions (bench/RESULTS.md, session 7). Streamed multipart uploads, `https://` and
//! proxied upstreams go through reqwest. Either way the answer is the same [`Response`] and a failure the same
//! [`TransportError`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::Url;
use reqwest::multipart::Form;

mod body;
mod error;

pub use body::UpstreamBody;
pub use error::TransportError;

/// Dify's answer: status, headers, and the body as it streams in.
pub type Response = http::Response<UpstreamBody>;

const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("dify-bff/", env!("CARGO_PKG_VERSION")));
const ANY: HeaderValue = HeaderValue::from_static("*/*");
/// The `Content-Type` of a JSON body.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// Idle pooled connections to Dify are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE: usize = 1024;
/// TCP keep-alive probes on connections to Dify, as reqwest sends them.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// What a call sends as its body.
pub enum Payload {
    Empty,
    /// A JSON document (the call's headers carry its `Content-Type`).
    Json(Bytes),
    /// A multipart form whose file part streams in as it arrives.
    Form(Form),
}

/// Where a call goes: a URL, or a request target parsed ahead for hyper's client.
pub enum Target {
    Url(Url),
    Uri(Uri),
}

/// One call, ready to send.
pub struct Outbound {
    pub method: Method,
    pub target: Target,
    pub headers: HeaderMap,
    pub payload: Payload,
}

impl Outbound {
    /// A call to `url` with `headers` (the transport's [`Transport::headers`], and the
    /// caller's few).
    pub fn new(method: Method, url: Url, headers: HeaderMap) -> Outbound {
        Outbound::to(method, Target::Url(url), headers)
    }

    pub fn to(method: Method, target: Target, headers: HeaderMap) -> Outbound {
        Outbound {
            method,
            target,
            headers,
            payload: Payload::Empty,
        }
    }

    /// A JSON body; the headers must hold [`JSON`] as the `Content-Type` already.
    pub fn json(mut self, body: Vec<u8>) -> Outbound {
        self.payload = Payload::Json(Bytes::from(body));
        self
    }

    /// A multipart body (its `Content-Type`, boundary included, is set as it is sent).
    pub fn form(mut self, form: Form) -> Outbound {
        self.payload = Payload::Form(form);
        self
    }
}

/// hyper's pooled HTTP/1 client, for calls whose body is in hand.
type Direct = Client<Plain, Full<Bytes>>;

/// hyper's HTTP connector, minus the addresses it has the client copy into every response's
/// extensions (`HttpInfo`, read by nobody here): three allocations fewer per call.
#[derive(Clone)]
struct Plain(HttpConnector);

struct PlainIo(TokioIo<tokio::net::TcpStream>);

impl tower::Service<Uri> for Plain {
    type Response = PlainIo;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<PlainIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(PlainIo) })
    }
}

impl Connection for PlainIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for PlainIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PlainIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// The clients of one Dify base URL, one of each kind per worker runtime
/// (`server::workers`): a call's connection is driven on the caller's own thread.
pub struct Transport {
    reqwest: Box<[reqwest::Client]>,
    /// `None` where hyper's client cannot go alone: TLS, or a proxy the environment names.
    direct: Option<Box<[Direct]>>,
    /// What every call carries, built once: `User-Agent`, `Accept`, and `Host` (which hyper's
    /// client would otherwise format for each call).
    headers: HeaderMap,
}

impl Transport {
    pub fn new(base: &Url, workers: usize, connect_timeout: Duration) -> Result<Self, String> {
        let workers = workers.max(1);
        let reqwest = (0..workers)
            .map(|_| {
                reqwest::Client::builder()
                    .connect_timeout(connect_timeout)
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_max_idle_per_host(POOL_MAX_IDLE)
                    .tcp_nodelay(true)
                    .redirect(reqwest::redirect::Policy::none())
                    // Retries are ours (idempotent GETs only); reqwest's would clone every request.
                    .retry(reqwest::retry::never().max_retries_per_request(0))
                    .build()
                    .map_err(|e| format!("building the HTTP client: {e}"))
            })
            .collect::<Result<Box<[_]>, _>>()?;
        let direct = goes_direct(base).then(|| {
            (0..workers)
                .map(|_| direct_client(connect_timeout))
                .collect()
        });
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::USER_AGENT, USER_AGENT);
        headers.insert(header::ACCEPT, ANY);
        if let Some(host) = host(base) {
            headers.insert(header::HOST, host);
        }
        Ok(Transport {
            reqwest,
            direct,
            headers,
        })
    }

    /// The headers every call to this Dify starts with.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `url` parsed once for repeated calls, when they go on hyper's client (which takes it).
    pub fn fixed_target(&self, url: &Url) -> Option<Uri> {
        self.direct.as_ref()?;
        Uri::try_from(url.as_str()).ok()
    }

    /// Sends `call` on the current worker's pool and waits for the response head.
    pub async fn send(&self, call: Outbound) -> Result<Response, TransportError> {
        let worker = crate::server::workers::current();
        let Outbound {
            method,
            target,
            headers,
            payload,
        } = call;
        let direct = self.direct.as_ref().map(|d| &d[worker % d.len()]);
        match (direct, payload) {
            (Some(direct), Payload::Empty) => {
                send_direct(direct, method, target, headers, Bytes::new()).await
            }
            (Some(direct), Payload::Json(body)) => {
                send_direct(direct, method, target, headers, body).await
            }
            (_, payload) => {
                let url = match target {
                    Target::Url(url) => url,
                    Target::Uri(uri) => {
                        Url::parse(&uri.to_string()).map_err(TransportError::request)?
                    }
                };
                let client = &self.reqwest[worker % self.reqwest.len()];
                let builder = client.request(method, url).headers(headers);
                let builder = match payload {
                    Payload::Empty => builder,
                    Payload::Json(body) => builder.body(body),
                    Payload::Form(form) => builder.multipart(form),
                };
                let response = builder.send().await?;
                Ok(http::Response::from(response).map(UpstreamBody::Reqwest))
            }
        }
    }
}

async fn send_direct(
    client: &Direct,
    method: Method,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, TransportError> {
    let uri = match target {
        Target::Uri(uri) => uri,
        Target::Url(url) => Uri::try_from(String::from(url)).map_err(TransportError::request)?,
    };
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let response = client.request(request).await?;
    Ok(response.map(UpstreamBody::Direct))
}

/// `Host` for calls to `base`: its host, and its port unless the scheme's default.
fn host(base: &Url) -> Option<HeaderValue> {
    let host = base.host_str()?;
    match base.port() {
        Some(port) => HeaderValue::try_from(format!("{host}:{port}")).ok(),
        None => HeaderValue::from_str(host).ok(),
    }
}

/// Whether calls to `base` can go on hyper's client alone: plain HTTP that no
/// `HTTP_PROXY`/`ALL_PROXY` (minus `NO_PROXY`) of the environment sends through a proxy.
fn goes_direct(base: &Url) -> bool {
    base.scheme() == "http"
        && Uri::try_from(base.as_str())
            .is_ok_and(|uri| Matcher::from_env().intercept(&uri).is_none())
}

fn direct_client(connect_timeout: Duration) -> Direct {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(Plain(connector))
}

/// The body's length as Dify declared it.
pub fn content_length(response: &Response) -> Option<u64> {
    http_body::Body::size_hint(response.body()).exact()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(base: &str) -> Option<HeaderValue> {
        host(&Url::parse(base).ok()?)
    }

    #[test]
    fn host_names_the_port_only_when_it_is_not_the_schemes_default() {
        let host = |base| host_of(base).and_then(|v| v.to_str().ok().map(str::to_owned));
        assert_eq!(
            host("http://dify.internal/v1").as_deref(),
            Some("dify.internal")
        );
        assert_eq!(
            host("https://api.dify.ai:443/v1").as_deref(),
            Some("api.dify.ai")
        );
        assert_eq!(
            host("http://10.0.0.5:5001/v1").as_deref(),
            Some("10.0.0.5:5001")
        );
        assert_eq!(host("http://[::1]:8080/v1").as_deref(), Some("[::1]:8080"));
    }

    #[test]
    fn plain_http_goes_on_hypers_client_and_tls_through_reqwest() {
        let transport = |base: &str| {
            Url::parse(base)
                .map_err(|e| e.to_string())
                .and_then(|url| Transport::new(&url, 2, Duration::from_secs(1)))
        };
        // A proxy in this process's environment would take plain HTTP too.
        let proxied = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        assert!(transport("http://dify.internal/v1").is_ok_and(|t| t.direct.is_some() != proxied));
        assert!(transport("https://api.dify.ai/v1").is_ok_and(|t| t.direct.is_none()));
    }
}
