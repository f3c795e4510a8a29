//! The fast upstream: a tiny Dify stand-in with fixed answers, built for speed.
//!
//! - `GET /v1/conversations`: a fixed ~2 KB Dify-shaped JSON list.
//! - `POST /v1/chat-messages`: an SSE stream in Dify's byte format. The request's `inputs` set
//!   the cadence: `events` message events (default 20), `interval_us` between them (default
//!   50 000), `answer_bytes` per answer (default 16). Every event carries `"t": <unix nanos>`
//!   taken just before it is handed to the socket, so a client can compute per-event delay;
//!   the stream ends with `message_end` (with usage metadata, as Dify sends it).
//! - `POST /v1/chat-messages/{task_id}/stop`: `{"result": "success"}`.
//!
//! Every `/v1` call must carry `Authorization: Bearer <key>` (401 otherwise), which proves
//! that the proxies in front inject the key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::stream;
use tokio::time::{Interval, MissedTickBehavior};

use crate::unix_nanos;

struct Upstream {
    auth: HeaderValue,
    conversations: Bytes,
    next_id: AtomicU64,
}

pub async fn serve(listen: SocketAddr, key: String) -> std::io::Result<()> {
    let state = Arc::new(Upstream {
        auth: HeaderValue::from_str(&format!("Bearer {key}")).map_err(std::io::Error::other)?,
        conversations: conversations_json(),
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/v1/conversations", get(conversations))
        .route("/v1/chat-messages", post(chat))
        .route("/v1/chat-messages/{task_id}/stop", post(stop))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("upstream listening on http://{}", listener.local_addr()?);
    // Without TCP_NODELAY a small write that follows an unacknowledged one waits for the
    // peer's delayed ACK (up to 40 ms): fatal for SSE.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

fn authorised(state: &Upstream, headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION) == Some(&state.auth)
}

fn unauthorised() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        Bytes::from_static(
            br#"{"code": "unauthorized", "message": "Access token is invalid", "status": 401}"#,
        ),
    )
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn conversations(State(state): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    if !authorised(&state, &headers) {
        return unauthorised();
    }
    json_response(StatusCode::OK, state.conversations.clone())
}

async fn stop(State(state): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    if !authorised(&state, &headers) {
        return unauthorised();
    }
    json_response(
        StatusCode::OK,
        Bytes::from_static(br#"{"result": "success"}"#),
    )
}

/// A Dify-shaped conversation list of about 2 KB.
fn conversations_json() -> Bytes {
    let mut items = Vec::new();
    for i in 0..9u64 {
        items.push(format!(
            "{{\"id\": \"{}\", \"name\": \"Conversation number {i} about benchmarks\", \"inputs\": {{}}, \"status\": \"normal\", \"introduction\": \"\", \"created_at\": {}, \"updated_at\": {}}}",
            fake_uuid(0xC0 + i),
            1_705_000_000 + i * 60,
            1_705_000_030 + i * 60
        ));
    }
    let body = format!(
        "{{\"limit\": 20, \"has_more\": false, \"data\": [{}]}}",
        items.join(", ")
    );
    Bytes::from(body)
}

pub fn fake_uuid(n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        (n >> 48) as u32,
        n & 0xffff_ffff_ffff
    )
}

struct Cadence {
    events: u64,
    interval: Duration,
    answer: String,
}

fn cadence(body: &[u8]) -> Cadence {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let inputs = &value["inputs"];
    let events = inputs["events"].as_u64().unwrap_or(20);
    let interval_us = inputs["interval_us"].as_u64().unwrap_or(50_000);
    let answer_bytes = inputs["answer_bytes"].as_u64().unwrap_or(16) as usize;
    let answer: String = "abcdefghij".chars().cycle().take(answer_bytes).collect();
    Cadence {
        events,
        interval: Duration::from_micros(interval_us),
        answer,
    }
}

struct Emitting {
    sent: u64,
    cadence: Cadence,
    interval: Option<Interval>,
    /// `"conversation_id": …, "message_id": …, "created_at": …, "task_id": …, "id": …`
    ids: String,
    done: bool,
}

async fn chat(State(state): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorised(&state, &headers) {
        return unauthorised();
    }
    let cadence = cadence(&body);
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let message = fake_uuid(n << 8 | 1);
    let ids = format!(
        "\"conversation_id\": \"{}\", \"message_id\": \"{message}\", \"created_at\": 1705000000, \"task_id\": \"{}\", \"id\": \"{message}\"",
        fake_uuid(n << 8 | 2),
        fake_uuid(n << 8 | 3),
    );
    let interval = (!cadence.interval.is_zero()).then(|| {
        let mut interval = tokio::time::interval(cadence.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    let emitting = Emitting {
        sent: 0,
        cadence,
        interval,
        ids,
        done: false,
    };
    let events = stream::unfold(emitting, |mut e| async move {
        if e.done {
            return None;
        }
        if e.sent < e.cadence.events {
            if let Some(interval) = e.interval.as_mut() {
                interval.tick().await;
            }
            e.sent += 1;
            let event = format!(
                "data: {{\"event\": \"message\", {}, \"answer\": \"{}\", \"from_variable_selector\": null, \"t\": {}}}\n\n",
                e.ids,
                e.cadence.answer,
                unix_nanos()
            );
            return Some((Ok::<_, std::io::Error>(Bytes::from(event)), e));
        }
        e.done = true;
        let event = format!(
            "data: {{\"event\": \"message_end\", {}, \"metadata\": {{\"usage\": {{\"prompt_tokens\": 11, \"completion_tokens\": {}, \"total_tokens\": {}, \"total_price\": \"0.0000250\", \"currency\": \"USD\", \"latency\": 0.5}}}}, \"files\": null, \"t\": {}}}\n\n",
            e.ids,
            e.cadence.events,
            e.cadence.events + 11,
            unix_nanos()
        );
        Some((Ok(Bytes::from(event)), e))
    });
    let mut response = Response::new(Body::from_stream(events));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversation_list_is_about_two_kilobytes() {
        let body = conversations_json();
        assert!((1800..2300).contains(&body.len()), "{}", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["data"].as_array().map(Vec::len), Some(9));
    }
}
