//! What is wrong with the way we reach Dify, in one sentence an operator can act on: the key
//! refused, a base URL without `/v1`, nothing listening, a name that does not resolve, a
//! certificate refused. Used at start-up (logged, then retried with backoff until Dify
//! answers) and by `/readyz`. Never holds the key.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use reqwest::Url;
use serde_json::Value;
use tokio::time::Instant;

use super::answer::read_capped;
use super::client::{DifyClient, MAX_ERROR_BODY};
use super::transport::TransportError;
use crate::config::redacted;

/// The first pause between start-up checks; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl DifyClient {
    /// `GET /info` with the key: `Ok` when Dify answers it with JSON, else why not.
    pub async fn diagnose(&self, timeout: Duration) -> Result<(), String> {
        let base = redacted(self.base());
        let call = self.keyed(Method::GET, "info").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let response = match tokio::time::timeout_at(deadline, self.send(call)).await {
            Err(_) => {
                return Err(format!(
                    "Dify at {base} did not answer within {} s",
                    timeout.as_secs_f32()
                ));
            }
            Ok(Err(e)) => return Err(transport(&e, self.base())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let body = read_capped(response, MAX_ERROR_BODY, deadline)
            .await
            .unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        explain(status, json, parsed.as_ref(), &base)
    }
}

/// The reason for an answer from `{base}/info`.
fn explain(status: StatusCode, json: bool, body: Option<&Value>, base: &str) -> Result<(), String> {
    let dify_says = || {
        body.and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .map(|m| format!(" (Dify says: {})", m.chars().take(200).collect::<String>()))
            .unwrap_or_default()
    };
    match status {
        s if s.is_success() && json && body.is_some() => Ok(()),
        s if s.is_success() => Err(format!(
            "{base}info answered {s} but not with Dify's JSON: does DIFY_BASE_URL end in /v1?"
        )),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(format!(
            "Dify at {base} refused DIFY_API_KEY ({status}){}: use the API key of a chat app (Dify: the app > API Access > API Key, app-…)",
            dify_says()
        )),
        StatusCode::NOT_FOUND => Err(format!(
            "{base}info answered 404 Not Found: does DIFY_BASE_URL end in /v1?"
        )),
        s => Err(format!("Dify at {base} answered {s}{}", dify_says())),
    }
}

/// A transport failure with its real cause: the client's own message ("error sending request")
/// says nothing, the innermost errors of its source chain do.
fn transport(e: &TransportError, base: &Url) -> String {
    let target = format!(
        "{}:{}",
        base.host_str().unwrap_or("?"),
        base.port_or_known_default().unwrap_or(0)
    );
    let detail = match e.detail() {
        detail if detail.is_empty() => e.to_string(),
        detail => detail,
    };
    let lower = detail.to_ascii_lowercase();
    if e.refused() {
        format!("nothing is listening at {target} (DIFY_BASE_URL): connection refused")
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        format!(
            "cannot resolve the host of DIFY_BASE_URL ({}): {detail}",
            base.host_str().unwrap_or("?")
        )
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        format!("TLS with {target} (DIFY_BASE_URL) failed: {detail}")
    } else if e.is_timeout() || lower.contains("timed out") {
        format!("connecting to {target} (DIFY_BASE_URL) timed out: {detail}")
    } else {
        format!("cannot reach Dify at {target} (DIFY_BASE_URL): {detail}")
    }
}

/// Checks Dify once now, logs what is wrong in one line, and keeps checking with backoff
/// until Dify answers (logged too). Every result goes to `record` (the readiness cache).
pub async fn check_until_answered(
    client: Arc<DifyClient>,
    timeout: Duration,
    record: impl Fn(Result<(), String>) + Send + 'static,
) {
    let mut pause = FIRST_BACKOFF;
    let mut last: Option<String> = None;
    loop {
        let result = client.diagnose(timeout).await;
        record(result.clone());
        match result {
            Ok(()) => {
                let base = redacted(client.base());
                if last.is_some() {
                    tracing::info!("Dify answers at {base} now: the key is accepted");
                } else {
                    tracing::info!("Dify answers at {base}: the key is accepted");
                }
                return;
            }
            Err(reason) => {
                if last.as_ref() != Some(&reason) {
                    tracing::error!(
                        retry_in_secs = pause.as_secs(),
                        "Dify is not usable: {reason}"
                    );
                } else {
                    tracing::debug!(retry_in_secs = pause.as_secs(), "still: {reason}");
                }
                last = Some(reason);
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BASE: &str = "https://dify.example/v1/";

    #[test]
    fn a_refused_key_names_the_variable() {
        let body = json!({"code": "unauthorized", "message": "Access token is invalid"});
        let reason = explain(StatusCode::UNAUTHORIZED, true, Some(&body), BASE).unwrap_err();
        assert!(reason.contains("refused DIFY_API_KEY"), "{reason}");
        assert!(reason.contains("Access token is invalid"), "{reason}");
    }

    #[test]
    fn a_404_asks_about_v1() {
        let reason = explain(StatusCode::NOT_FOUND, false, None, BASE).unwrap_err();
        assert!(
            reason.contains("does DIFY_BASE_URL end in /v1?"),
            "{reason}"
        );
    }

    #[test]
    fn an_html_200_asks_about_v1() {
        let reason = explain(StatusCode::OK, false, None, BASE).unwrap_err();
        assert!(
            reason.contains("does DIFY_BASE_URL end in /v1?"),
            "{reason}"
        );
    }

    #[test]
    fn json_200_is_ready() {
        assert!(explain(StatusCode::OK, true, Some(&json!({"name": "app"})), BASE).is_ok());
    }
}
