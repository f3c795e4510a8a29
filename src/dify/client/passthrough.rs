//! The raw pass-through behind the Dify-compatible gateway (`/v1/…`): the client's own request,
//! sent on with our key and the caller's `user` pinned, and Dify's answer relayed as sent.
//!
//! Pinning happens here and in [`DifyClient::prepare`] only: every `user` the client put in the
//! query, the JSON body's top level or a multipart field is dropped, and `prepare` adds ours,
//! exactly once.

use std::sync::Arc;

use axum::http::{Method, header};
use reqwest::multipart::Part;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Caller, DifyClient, Payload, Source, StopKind};
use crate::dify::answer::{Answer, Guard};
use crate::dify::relay::{RelayStream, StopOnAbandon};
use crate::dify::retry;
use crate::dify::transport;
use crate::error::ApiError;
use crate::telemetry::metrics;

/// What the client sent besides its path, as it goes to Dify (before `user` is pinned).
pub enum Outgoing {
    /// The decoded query parameters, in order.
    Query(Vec<(String, String)>),
    /// The JSON body object, keys in the client's order.
    Json(Map<String, Value>),
    /// Text fields that came before the file, and the file, streamed.
    Form(Vec<(String, String)>, Box<Part>),
}

/// For calls whose answer may be an event stream: the slot the stream holds while it lasts,
/// the stop call to make when the client leaves early (none for a re-attached run), and the
/// shutdown signal.
pub struct StreamSetup {
    pub slot: Guard,
    pub stop: Option<StopKind>,
    pub shutdown: WaitForCancellationFutureOwned,
}

/// Dify's answer: relayed as sent, or an event stream through the relay.
pub enum Passed {
    Answer(Answer),
    Stream(RelayStream),
}

/// A parameter or field name that Dify (Flask/Werkzeug) could read as the end user: `user`,
/// `user[]`, `user[0]`, in any case, once percent-decoded (the query's names are decoded
/// before they get here; a multipart name is not, so it is decoded here).
pub(super) fn names_user(name: &str) -> bool {
    let decoded = form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name)
        .unwrap_or_default();
    let base = decoded.split('[').next().unwrap_or_default().trim();
    base.eq_ignore_ascii_case("user")
}

impl DifyClient {
    /// Sends a gateway call to `path` with `method`. Without `stream`, one of the bounded call
    /// slots is taken and the whole exchange has the request deadline; with it, the deadline
    /// covers Dify's response head only and an event-stream answer goes through the relay.
    pub async fn pass_through(
        self: &Arc<Self>,
        caller: Caller,
        method: Method,
        path: &str,
        outgoing: Outgoing,
        stream: Option<StreamSetup>,
    ) -> Result<Passed, ApiError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let call_slot = match stream {
            Some(_) => None,
            None => Some(self.call_slot()?),
        };
        // A generation's head is awaited for as long as its caller waits (`routes::generation`).
        let head = match stream.as_ref().and_then(|s| s.stop) {
            Some(_) => None,
            None => Some(deadline),
        };
        let response = match outgoing {
            Outgoing::Query(params) => {
                let kept: Vec<(&str, &str)> = params
                    .iter()
                    .filter(|(name, _)| !names_user(name))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.send_query(&method, path, &caller, &kept, deadline)
                    .await?
            }
            Outgoing::Json(mut body) => {
                drop_user(&mut body);
                let call = self.prepare(method, path, &caller, Payload::Json(&body))?;
                self.exchange(call, head, Source::of(path))
                    .await
                    .map_err(|f| f.error)?
            }
            Outgoing::Form(fields, file) => {
                let payload = Payload::<()>::Form(&fields, file);
                let call = self.prepare(method, path, &caller, payload)?;
                self.exchange(call, head, Source::of(path))
                    .await
                    .map_err(|f| f.error)?
            }
        };
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"));
        match stream {
            Some(setup) if is_sse => {
                metrics::time_to_first_byte(started.elapsed());
                self.counters.stream(&self.app);
                let stop = setup.stop.map(|kind| StopOnAbandon {
                    client: Arc::clone(self),
                    caller,
                    stops: Arc::clone(&self.stops),
                    kind,
                });
                Ok(Passed::Stream(RelayStream::from_stream(
                    response.into_body(),
                    self.stream_idle,
                    setup.shutdown,
                    stop,
                    Some(setup.slot),
                )))
            }
            Some(setup) => Ok(Passed::Answer(Answer::new(
                response,
                deadline,
                Some(setup.slot),
            ))),
            None => Ok(Passed::Answer(Answer::new(
                response,
                deadline,
                call_slot.map(|slot| Box::new(slot) as Guard),
            ))),
        }
    }
}

impl DifyClient {
    /// A call that carries a query: a `GET`, retried like our own (see [`retry`]).
    async fn send_query(
        &self,
        method: &Method,
        path: &str,
        caller: &Caller,
        params: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<transport::Response, ApiError> {
        let mut retries = 0;
        loop {
            let payload = Payload::<()>::Query(params);
            let call = self.prepare(method.clone(), path, caller, payload)?;
            let failure = match self.exchange(call, Some(deadline), Source::of(path)).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let retry = if *method == Method::GET {
                retry::pause_before(&failure, retries, deadline)
            } else {
                None
            };
            let Some(pause) = retry else {
                return Err(failure.error);
            };
            retries += 1;
            tracing::debug!(path, retry = retries, error = %failure.error, "retrying a gateway GET");
            tokio::time::sleep(pause).await;
        }
    }
}

/// The body without its top-level `user` keys (JSON parsing already kept only the last of
/// several, under any escaping of the name); nested objects (`inputs`) are the app's own and
/// stay as sent.
fn drop_user(body: &mut Map<String, Value>) {
    body.retain(|name, _| !names_user(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_dify_could_read_as_user_is_caught() {
        for name in [
            "user", "User", "USER", "user[]", "user[0]", "us%65r", "%75ser", " user",
        ] {
            assert!(names_user(name), "{name}");
        }
        for name in ["username", "users", "end_user", "query", ""] {
            assert!(!names_user(name), "{name}");
        }
    }

    #[test]
    fn only_top_level_user_keys_are_dropped() {
        let mut body: Map<String, Value> = serde_json::from_str(
            r#"{"query":"q","user":"a","inputs":{"user":"kept"},"User":"b","user[]":["c"]}"#,
        )
        .unwrap();
        drop_user(&mut body);
        assert_eq!(
            Value::Object(body),
            serde_json::json!({"query": "q", "inputs": {"user": "kept"}})
        );
    }
}
