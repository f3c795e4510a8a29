//! One client for every Dify call: it owns the HTTP connection pool, the base URL and the key.
//! Handlers never build upstream URLs or headers themselves.

use std::time::Duration;

use tokio::time::Instant;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Url, header};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};

use super::upstream_error;
use crate::config::Config;
use crate::error::ApiError;

/// Retries of an idempotent `GET` after a connect failure or a 502/503 (so 3 tries at most).
pub const MAX_GET_RETRIES: u32 = 2;
/// The first retry waits 50–100 ms, the second 100–200 ms.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// A failed exchange and whether trying again could help.
struct Failure {
    error: ApiError,
    retryable: bool,
}

impl Failure {
    fn final_(error: ApiError) -> Failure {
        Failure {
            error,
            retryable: false,
        }
    }

    /// Only a failed connect (refused, DNS, TLS, connect timeout) is retryable: the request
    /// never reached Dify.
    fn transport(e: reqwest::Error) -> Failure {
        Failure {
            retryable: e.is_connect(),
            error: map_transport(e),
        }
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// "Equal jitter": half the exponential step fixed, half random, so retries from many
/// requests failing together spread out.
fn backoff(retry: u32) -> Duration {
    let step = BACKOFF_BASE.saturating_mul(1 << retry.min(8));
    let half = step / 2;
    let jitter = rand::random_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
}

/// Who a call is made for: the Dify `user` and the request id sent as `X-Trace-Id`.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: String,
    pub trace_id: Option<String>,
}

/// A successful (2xx) upstream answer relayed as it came.
#[derive(Debug)]
pub struct UpstreamJson {
    pub status: StatusCode,
    pub body: Bytes,
}

impl UpstreamJson {
    pub fn body_is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

#[derive(Debug)]
pub struct DifyClient {
    http: reqwest::Client,
    base: Url,
    origin: Url,
    auth: HeaderValue,
    timeout: Duration,
}

impl DifyClient {
    pub fn new(config: &Config) -> Result<DifyClient, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.upstream_connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            // Retries are ours (idempotent GETs only); reqwest's would clone every request.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .user_agent(concat!("dify-bff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Internal(format!("building the HTTP client: {e}")))?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", config.dify_api_key.expose_secret()))
                .map_err(|_| {
                    ApiError::Internal("the API key is not a valid header value".into())
                })?;
        auth.set_sensitive(true);
        let mut origin = config.dify_base_url.clone();
        origin.set_path("/");
        Ok(DifyClient {
            http,
            base: config.dify_base_url.clone(),
            origin,
            auth,
            timeout: config.upstream_timeout,
        })
    }

    /// The base URL with `path`'s segments appended. Unlike `Url::join`, this neither re-parses
    /// the host (IDNA included) on every call nor lets a `..` or `?` in a segment escape it.
    fn url(&self, path: &str) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::Internal("DIFY_BASE_URL cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(path.trim_start_matches('/').split('/'));
        Ok(url)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
    ) -> Result<RequestBuilder, ApiError> {
        let mut builder = self
            .http
            .request(method, self.url(path)?)
            .header(header::AUTHORIZATION, self.auth.clone());
        if let Some(trace) = &caller.trace_id {
            builder = builder.header("X-Trace-Id", trace.as_str());
        }
        Ok(builder)
    }

    /// Sends a non-streaming call with the whole-request timeout and relays a 2xx answer.
    async fn send(&self, builder: RequestBuilder) -> Result<UpstreamJson, ApiError> {
        let deadline = Instant::now() + self.timeout;
        self.attempt(builder, deadline).await.map_err(|f| f.error)
    }

    /// One exchange, bounded by `deadline`; a failure says whether a retry could help.
    async fn attempt(
        &self,
        builder: RequestBuilder,
        deadline: Instant,
    ) -> Result<UpstreamJson, Failure> {
        let exchange = async {
            let response = builder.send().await.map_err(Failure::transport)?;
            let status = response.status();
            let content_type = content_type(&response);
            let body = response
                .bytes()
                .await
                .map_err(|e| Failure::final_(map_transport(e)))?;
            if status.is_success() {
                Ok(UpstreamJson { status, body })
            } else {
                Err(Failure {
                    error: upstream_error::from_upstream(status, content_type.as_deref(), &body),
                    retryable: is_retryable_status(status),
                })
            }
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Failure::final_(ApiError::UpstreamTimeout))?
    }

    /// An idempotent `GET`: retried at most [`MAX_GET_RETRIES`] times, with jittered backoff,
    /// after a failed connect or a 502/503, and never past the whole-request timeout.
    async fn get(
        &self,
        path: &str,
        caller: &Caller,
        query: &[(&str, &str)],
    ) -> Result<UpstreamJson, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let mut retries = 0;
        loop {
            let builder = self.request(Method::GET, path, caller)?.query(query);
            let failure = match self.attempt(builder, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let pause = backoff(retries);
            if !failure.retryable
                || retries >= MAX_GET_RETRIES
                || Instant::now() + pause >= deadline
            {
                return Err(failure.error);
            }
            retries += 1;
            tracing::debug!(
                path,
                retry = retries,
                pause_ms = pause.as_millis() as u64,
                error = %failure.error,
                "retrying an idempotent upstream GET"
            );
            tokio::time::sleep(pause).await;
        }
    }

    async fn post_json(
        &self,
        path: &str,
        caller: &Caller,
        body: &(impl Serialize + ?Sized),
    ) -> Result<UpstreamJson, ApiError> {
        let builder = self.request(Method::POST, path, caller)?.json(body);
        self.send(builder).await
    }

    pub async fn chat_blocking(
        &self,
        caller: &Caller,
        body: &(impl Serialize + ?Sized),
    ) -> Result<UpstreamJson, ApiError> {
        self.post_json("chat-messages", caller, body).await
    }

    /// Starts a streaming chat. Only the wait for the response headers is bounded by the
    /// request timeout; the body is read by the relay with its own idle timeout.
    pub async fn chat_stream(
        &self,
        caller: &Caller,
        body: &(impl Serialize + ?Sized),
    ) -> Result<reqwest::Response, ApiError> {
        let builder = self
            .request(Method::POST, "chat-messages", caller)?
            .json(body);
        let response = tokio::time::timeout(self.timeout, builder.send())
            .await
            .map_err(|_| ApiError::UpstreamTimeout)?
            .map_err(map_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let content_type = content_type(&response);
        let body = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .map_err(|_| ApiError::UpstreamTimeout)?
            .map_err(map_transport)?;
        Err(upstream_error::from_upstream(
            status,
            content_type.as_deref(),
            &body,
        ))
    }

    pub async fn stop(&self, caller: &Caller, task_id: &str) -> Result<UpstreamJson, ApiError> {
        let path = format!("chat-messages/{task_id}/stop");
        self.post_json(&path, caller, &json!({ "user": caller.user }))
            .await
    }

    pub async fn conversations(
        &self,
        caller: &Caller,
        query: &[(&str, &str)],
    ) -> Result<UpstreamJson, ApiError> {
        let query = with_user(caller, query);
        self.get("conversations", caller, &query).await
    }

    pub async fn delete_conversation(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<UpstreamJson, ApiError> {
        let builder = self
            .request(Method::DELETE, &format!("conversations/{id}"), caller)?
            .json(&json!({ "user": caller.user }));
        self.send(builder).await
    }

    pub async fn rename_conversation(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
    ) -> Result<UpstreamJson, ApiError> {
        self.post_json(&format!("conversations/{id}/name"), caller, body)
            .await
    }

    pub async fn messages(
        &self,
        caller: &Caller,
        query: &[(&str, &str)],
    ) -> Result<UpstreamJson, ApiError> {
        let query = with_user(caller, query);
        self.get("messages", caller, &query).await
    }

    pub async fn feedback(
        &self,
        caller: &Caller,
        message_id: &str,
        body: &Value,
    ) -> Result<UpstreamJson, ApiError> {
        self.post_json(&format!("messages/{message_id}/feedbacks"), caller, body)
            .await
    }

    pub async fn suggested(
        &self,
        caller: &Caller,
        message_id: &str,
    ) -> Result<UpstreamJson, ApiError> {
        let query = with_user(caller, &[]);
        self.get(&format!("messages/{message_id}/suggested"), caller, &query)
            .await
    }

    /// `parameters`, `info` or `meta`: app settings, the same for every user, but Dify still
    /// gets our `user` so no call omits it.
    pub async fn app_settings(
        &self,
        caller: &Caller,
        which: &str,
    ) -> Result<UpstreamJson, ApiError> {
        let query = with_user(caller, &[]);
        self.get(which, caller, &query).await
    }

    /// `GET /info` with the key only, for readiness.
    pub async fn probe(&self, timeout: Duration) -> Result<(), ApiError> {
        let builder = self
            .http
            .get(self.url("info")?)
            .header(header::AUTHORIZATION, self.auth.clone())
            .timeout(timeout);
        let response = builder.send().await.map_err(map_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let content_type = content_type(&response);
        let body = response.bytes().await.unwrap_or_default();
        Err(upstream_error::from_upstream(
            status,
            content_type.as_deref(),
            &body,
        ))
    }

    /// A request builder for a file path on Dify's origin (outside `/v1`), without the key.
    pub fn origin_get(&self, path_and_query: &str) -> Result<RequestBuilder, ApiError> {
        let url = self
            .origin
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| ApiError::Internal(format!("joining file path: {e}")))?;
        Ok(self.http.get(url))
    }

    /// A request builder for `files/upload` with the key and trace id set.
    pub fn upload_request(&self, caller: &Caller) -> Result<RequestBuilder, ApiError> {
        self.request(Method::POST, "files/upload", caller)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a prepared request with the whole-request timeout (used for uploads).
    pub async fn send_prepared(&self, builder: RequestBuilder) -> Result<UpstreamJson, ApiError> {
        self.send(builder).await
    }
}

fn with_user<'a>(caller: &'a Caller, query: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = Vec::with_capacity(query.len() + 1);
    all.push(("user", caller.user.as_str()));
    all.extend_from_slice(query);
    all
}

pub(crate) fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Transport failures: a timeout is a 504; refused, DNS and TLS failures are a 502.
pub(crate) fn map_transport(e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::UpstreamTimeout
    } else {
        ApiError::UpstreamUnavailable(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_its_jitter_band() {
        for _ in 0..200 {
            let first = backoff(0);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let second = backoff(1);
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
        }
        assert!(
            backoff(40) <= BACKOFF_BASE * 256,
            "large retry counts do not overflow"
        );
    }

    #[test]
    fn backoff_is_jittered() {
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(1)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn only_bad_gateway_and_unavailable_are_retried() {
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        for status in [400, 401, 404, 429, 500, 504] {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[tokio::test]
    async fn a_refused_connect_is_retryable_and_a_broken_exchange_is_not() {
        let refused = reqwest::get("http://127.0.0.1:1/").await.err();
        let refused = refused.map(Failure::transport);
        assert!(refused.as_ref().is_some_and(|f| f.retryable));
        assert!(matches!(
            refused.map(|f| f.error),
            Some(ApiError::UpstreamUnavailable(_))
        ));

        // A server that accepts and hangs up: the request may have reached it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else { return };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let broken = reqwest::get(format!("http://{addr}/")).await.err();
        assert!(broken.map(Failure::transport).is_some_and(|f| !f.retryable));
    }
}
