//! One client for every Dify call: it owns the transport (`transport.rs`), the base URL and
//! the key, adds the caller's `user` to every call in one place, and turns every non-2xx answer
//! into an [`ApiError`] in one place, under one deadline per call. Handlers never build upstream
//! URLs, bodies or headers themselves.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use reqwest::Url;
use reqwest::multipart::{Form, Part};
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::answer::{Answer, Guard, ReadError, read_capped};
use super::bodies::{ChatMessage, WithUser};
use super::retry::{self, Failure};
use super::transport::{self, Outbound, Target, Transport, TransportError};
use super::upstream_error;
use crate::config::{AppConfig, Config};
use crate::error::ApiError;
use crate::telemetry::metrics;

mod endpoints;
mod passthrough;
pub use passthrough::{Outgoing, Passed, StreamSetup};

const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// The path of every chat generation (streamed and blocking).
pub(super) const CHAT_MESSAGES: &str = "chat-messages";

/// The most of a Dify error body that is read; a larger one is no Dify error: 502.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Stop calls made for abandoned streams that may be in flight at once.
const MAX_PENDING_STOPS: usize = 1024;
/// How long a generation no one waits for any more goes on being read: Dify's own limit,
/// `APP_MAX_EXECUTION_TIME`, is 1,200 s by default.
pub const GENERATION_LIMIT: Duration = Duration::from_secs(1_260);

/// Who a call is made for: the Dify `user` and the request id sent as `X-Trace-Id` (the
/// header value of the request's id, shared rather than copied).
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: Arc<str>,
    pub trace_id: Option<HeaderValue>,
}

/// What a call sends besides its path; `user` is added to each kind by [`DifyClient::prepare`].
enum Payload<'a, B: ?Sized> {
    Query(&'a [(&'a str, &'a str)]),
    Json(&'a B),
    /// A chat generation's body, written by hand (the hot path of every stream).
    Chat(&'a ChatMessage<'a>),
    File(Box<Part>),
    /// A multipart form: text fields (never a `user`), then the file.
    Form(&'a [(String, String)], Box<Part>),
}

/// Which of Dify's stop calls ends a task: each generation endpoint has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    Chat,
    Completion,
    Workflow,
}

impl StopKind {
    pub fn path(self, task_id: &str) -> String {
        match self {
            StopKind::Chat => format!("chat-messages/{task_id}/stop"),
            StopKind::Completion => format!("completion-messages/{task_id}/stop"),
            StopKind::Workflow => format!("workflows/tasks/{task_id}/stop"),
        }
    }
}

fn query<'a>(query: &'a [(&'a str, &'a str)]) -> Payload<'a, ()> {
    Payload::Query(query)
}

/// What a call's answer holds, for [`DifyClient::exchange`]: how a 2xx is checked and how a
/// non-2xx is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A keyed call answered with JSON or an event stream: a 2xx HTML page is no answer of
    /// Dify's but a login or proxy page in front of it (502).
    Keyed,
    /// A keyed call whose 2xx body is media by design (text-to-audio's audio, a file preview,
    /// whatever its type): relayed as sent.
    Media,
    /// `site`: as [`Source::Keyed`], but a 403 `forbidden` means the app has no WebApp settings.
    Site,
    /// A signed file URL (no key involved): its 2xx and 304 are the file, relayed as sent.
    File,
}

impl Source {
    /// What Dify's `path` (below the base URL) answers with.
    fn of(path: &str) -> Source {
        match path {
            "site" => Source::Site,
            "text-to-audio" => Source::Media,
            _ if path.starts_with("files/") && path.ends_with("/preview") => Source::Media,
            _ => Source::Keyed,
        }
    }

    /// Whether a 2xx must be JSON or an event stream.
    fn expects_data(self) -> bool {
        matches!(self, Source::Keyed | Source::Site)
    }
}

pub struct DifyClient {
    /// The app's name: the `app` label of upstream metrics.
    app: String,
    counters: metrics::AppCounters,
    transport: Transport,
    base: Url,
    origin: Url,
    /// The transport's headers and the key's `Authorization`: what every keyed call starts with.
    keyed: HeaderMap,
    /// `keyed` and a stand-in `X-Trace-Id` that each call's replaces (a cloned map has room
    /// for no more entries than it holds: one added after the clone would regrow it).
    traced: HeaderMap,
    /// `traced` and the JSON `Content-Type`: for calls with a JSON body.
    traced_json: HeaderMap,
    /// [`CHAT_MESSAGES`]'s target, parsed once when the transport can use it.
    chat_target: Option<Uri>,
    timeout: Duration,
    stream_idle: Duration,
    /// Non-streaming calls in flight, their relayed answers included.
    calls: Arc<Semaphore>,
    stops: Arc<Semaphore>,
}

impl DifyClient {
    /// The client of one app: its key and base URL, the process-wide limits of `config`.
    pub fn new(config: &Config, app: &AppConfig) -> Result<DifyClient, ApiError> {
        let transport = Transport::new(
            &app.base_url,
            config.worker_threads,
            config.upstream_connect_timeout,
        )
        .map_err(ApiError::Internal)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", app.api_key.expose_secret()))
            .map_err(|_| ApiError::Internal("the API key is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let mut keyed = transport.headers().clone();
        keyed.insert(header::AUTHORIZATION, auth);
        let mut traced = keyed.clone();
        traced.insert(TRACE_ID, HeaderValue::from_static("-"));
        let mut traced_json = traced.clone();
        traced_json.insert(header::CONTENT_TYPE, transport::JSON);
        let mut origin = app.base_url.clone();
        origin.set_path("/");
        let chat_target = transport.fixed_target(&join(&app.base_url, CHAT_MESSAGES)?);
        Ok(DifyClient {
            app: app.name.clone(),
            counters: metrics::AppCounters::default(),
            transport,
            base: app.base_url.clone(),
            origin,
            keyed,
            traced,
            traced_json,
            chat_target,
            timeout: config.upstream_timeout,
            stream_idle: config.stream_idle_timeout,
            calls: Arc::new(Semaphore::new(config.max_concurrent_upstream_calls)),
            stops: Arc::new(Semaphore::new(MAX_PENDING_STOPS)),
        })
    }

    /// Dify's origin (scheme, host, port): where its signed file URLs are served.
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// The Service API base URL (`DIFY_BASE_URL`, or the app's own).
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The base URL with `path`'s segments appended. Unlike `Url::join`, this neither re-parses
    /// the host (IDNA included) on every call nor lets a `..` or `?` in a segment escape it.
    fn url(&self, path: &str) -> Result<Url, ApiError> {
        join(&self.base, path)
    }

    pub(super) fn keyed(&self, method: Method, path: &str) -> Result<Outbound, ApiError> {
        Ok(self.keyed_to(method, self.url(path)?))
    }

    fn keyed_to(&self, method: Method, url: Url) -> Outbound {
        Outbound::new(method, url, self.keyed.clone())
    }

    /// Sends a call as it is: no key, `user` or deadline of its own.
    pub(super) async fn send(&self, call: Outbound) -> Result<transport::Response, TransportError> {
        self.transport.send(call).await
    }

    /// The one place a call for a user is built: the key, the trace id, and the caller's
    /// `user` in the query, the JSON body or the multipart form.
    fn prepare<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
        payload: Payload<'_, B>,
    ) -> Result<Outbound, ApiError> {
        let user = &*caller.user;
        let headers = match &payload {
            Payload::Json(_) | Payload::Chat(_) => &self.traced_json,
            _ => &self.traced,
        };
        let mut call = match (&payload, &self.chat_target) {
            (Payload::Json(_) | Payload::Chat(_), Some(uri)) if path == CHAT_MESSAGES => {
                Outbound::to(method, Target::Uri(uri.clone()), headers.clone())
            }
            _ => {
                let mut url = self.url(path)?;
                if let Payload::Query(params) = &payload {
                    // One pass over the query, rather than reqwest's serializer once per slice.
                    url.query_pairs_mut()
                        .append_pair("user", user)
                        .extend_pairs(params.iter());
                }
                Outbound::new(method, url, headers.clone())
            }
        };
        match &caller.trace_id {
            Some(trace) => call.headers.insert(TRACE_ID, trace.clone()),
            None => call.headers.remove(TRACE_ID),
        };
        Ok(match payload {
            Payload::Query(_) => call,
            Payload::Json(body) => call.json(
                serde_json::to_vec(&WithUser { body, user })
                    .map_err(|e| ApiError::Internal(format!("serialising a Dify call: {e}")))?,
            ),
            Payload::Chat(body) => call.json(
                body.to_vec_with_user(user)
                    .map_err(|e| ApiError::Internal(format!("serialising a Dify call: {e}")))?,
            ),
            Payload::File(file) => call.form(
                Form::new()
                    .text("user", user.to_owned())
                    .part("file", *file),
            ),
            Payload::Form(fields, file) => {
                let form = fields
                    .iter()
                    .filter(|(name, _)| !passthrough::names_user(name))
                    .fold(Form::new().text("user", user.to_owned()), |form, (k, v)| {
                        form.text(k.clone(), v.clone())
                    });
                call.form(form.part("file", *file))
            }
        })
    }

    /// A non-streaming call: one of the bounded call slots, the whole-request deadline, and
    /// the answer relayed as it streams (`guard` lives as long as it does).
    async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
        payload: Payload<'_, B>,
        guard: Option<Guard>,
    ) -> Result<Answer, ApiError> {
        self.call_within(method, path, caller, payload, guard, Some(self.timeout))
            .await
    }

    /// [`DifyClient::call`] of a generation: its answer's head is awaited without a deadline,
    /// which its caller sets (a caller that gave up at the request deadline leaves it to be
    /// counted when Dify is done). The body has the request deadline. It takes no call slot: the
    /// stream slot in `guard` bounds it, however long Dify takes.
    async fn generate<B: Serialize + ?Sized>(
        &self,
        path: &str,
        caller: &Caller,
        payload: Payload<'_, B>,
        guard: Option<Guard>,
    ) -> Result<Answer, ApiError> {
        self.call_within(Method::POST, path, caller, payload, guard, None)
            .await
    }

    async fn call_within<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
        payload: Payload<'_, B>,
        guard: Option<Guard>,
        head: Option<Duration>,
    ) -> Result<Answer, ApiError> {
        let slot = match head {
            Some(_) => Some(self.call_slot()?),
            None => None,
        };
        let started = Instant::now();
        let call = self.prepare(method, path, caller, payload)?;
        let response = self
            .exchange(call, head.map(|head| started + head), Source::of(path))
            .await
            .map_err(|f| f.error)?;
        let deadline = started + head.unwrap_or(self.timeout);
        Ok(Answer::new(
            response,
            deadline,
            Some(Box::new((slot, guard))),
        ))
    }

    /// An idempotent `GET`: retried after a failed connect or a 502/503 (see [`retry`]), never
    /// past the whole-request deadline.
    async fn get(
        &self,
        path: &str,
        caller: &Caller,
        params: &[(&str, &str)],
    ) -> Result<Answer, ApiError> {
        let slot = self.call_slot()?;
        let deadline = Instant::now() + self.timeout;
        let mut retries = 0;
        loop {
            let call = self.prepare(Method::GET, path, caller, query(params))?;
            let failure = match self.exchange(call, Some(deadline), Source::of(path)).await {
                Ok(response) => return Ok(Answer::new(response, deadline, Some(Box::new(slot)))),
                Err(failure) => failure,
            };
            let Some(pause) = retry::pause_before(&failure, retries, deadline) else {
                return Err(failure.error);
            };
            retries += 1;
            tracing::debug!(path, retry = retries, error = %failure.error, "retrying an idempotent upstream GET");
            tokio::time::sleep(pause).await;
        }
    }

    fn call_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.calls).try_acquire_owned().map_err(|_| {
            metrics::rejected("overloaded");
            ApiError::Overloaded {
                retry_after_secs: 1,
            }
        })
    }

    /// Sends and waits for the response head by `deadline`; a non-2xx answer becomes the
    /// error the browser gets, from at most [`MAX_ERROR_BODY`] bytes of its body, and so does a
    /// 2xx HTML page where Dify answers JSON or an event stream (every call passes here: one
    /// header looked at per answer). A generation's head has no deadline here: its caller
    /// bounds the wait (see `routes::generation`).
    async fn exchange(
        &self,
        call: Outbound,
        deadline: Option<Instant>,
        source: Source,
    ) -> Result<transport::Response, Failure> {
        let sent = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.transport.send(call)).await,
            None => Ok(self.transport.send(call).await),
        };
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeout);
        self.counters.upstream_call(
            &self.app,
            sent.as_ref()
                .ok()
                .map(|r| r.as_ref().ok().map(|r| r.status())),
        );
        let response = sent
            .map_err(|_| Failure::final_(ApiError::UpstreamTimeout))?
            .map_err(Failure::transport)?;
        let status = response.status();
        let accepted = match source {
            Source::Keyed | Source::Media | Source::Site => status.is_success(),
            Source::File => status.is_success() || status == StatusCode::NOT_MODIFIED,
        };
        if accepted {
            if source.expects_data()
                && let Some(page) = html_page(&response)
            {
                let page = String::from_utf8_lossy(page.as_bytes());
                return Err(Failure::final_(upstream_error::from_html_success(
                    status, &page,
                )));
            }
            return Ok(response);
        }
        let content_type = content_type(&response);
        let error = match read_capped(response, MAX_ERROR_BODY, deadline).await {
            Ok(body) => match source {
                Source::Keyed | Source::Media => {
                    upstream_error::from_upstream(status, content_type.as_deref(), &body)
                }
                Source::Site => {
                    upstream_error::from_site_upstream(status, content_type.as_deref(), &body)
                }
                Source::File => {
                    upstream_error::from_file_upstream(status, content_type.as_deref(), &body)
                }
            },
            Err(ReadError::TooLarge) => ApiError::UpstreamUnavailable(format!(
                "Dify answered {status} with an error body over {MAX_ERROR_BODY} bytes"
            )),
            Err(ReadError::Failed(error)) => error,
        };
        Err(Failure::status(error, status))
    }
}

impl std::fmt::Debug for DifyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DifyClient").finish_non_exhaustive()
    }
}

fn content_type(response: &transport::Response) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `Content-Type` of an answer that is an HTML page. A body-less answer is no page, whatever
/// its type (Flask types an answer that names no type `text/html`, its empty 200 to a preflight
/// for one: dify-protocol.md §3.3).
fn html_page(response: &transport::Response) -> Option<&HeaderValue> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .filter(|ct| upstream_error::is_html(ct.as_bytes()))
        .filter(|_| {
            response.status() != StatusCode::NO_CONTENT
                && transport::content_length(response) != Some(0)
        })
}

/// `base` with `path`'s segments appended (see [`DifyClient::url`]).
fn join(base: &Url, path: &str) -> Result<Url, ApiError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ApiError::Internal("DIFY_BASE_URL cannot be a base URL".into()))?
        .pop_if_empty()
        .extend(path.trim_start_matches('/').split('/'));
    Ok(url)
}

/// Transport failures: a timeout is a 504; refused, DNS and TLS failures are a 502.
pub(crate) fn map_transport(e: TransportError) -> ApiError {
    if e.is_timeout() {
        ApiError::UpstreamTimeout
    } else {
        ApiError::UpstreamUnavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_audio_and_file_previews_are_media_and_only_site_reads_403_as_no_settings() {
        assert_eq!(Source::of("text-to-audio"), Source::Media);
        assert_eq!(
            Source::of("files/aa0483db-e114-40ab-b70f-c2128bd443fa/preview"),
            Source::Media
        );
        assert_eq!(Source::of("site"), Source::Site);
        for path in [
            CHAT_MESSAGES,
            "conversations",
            "files/upload",
            "audio-to-text",
            "parameters",
            "workflow/aa0483db-e114-40ab-b70f-c2128bd443fa/events",
        ] {
            assert_eq!(Source::of(path), Source::Keyed, "{path}");
        }
        assert!(Source::Keyed.expects_data() && Source::Site.expects_data());
        assert!(!Source::Media.expects_data() && !Source::File.expects_data());
    }
}
