//! `POST /chat` (streamed or blocking), `POST /chat/{task_id}/stop` and
//! `GET /chat/streams/{id}` (resuming a stream, API.md §7).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::chat_request::{ChatRequest, ResponseMode};
use super::generation::answered_in_time;
use super::metered::Metered;
use super::path::{IdParam, TaskIdParam};
use super::validate;
use crate::apps::App;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::http::body::{JsonBytes, OptionalJsonObject};
use crate::http::routed::user;
use crate::state::AppState;
use crate::state::shared::usage_sink;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat", post(user(chat)))
        .route("/chat/{task_id}/stop", post(user(stop)))
        .route("/chat/streams/{id}", get(user(resume)))
}

/// A generation, streamed or blocking, holds one of the caller's stream slots while it lasts
/// and counts its tokens against the caller's budget when it ends.
async fn chat(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let request = ChatRequest::parse(&body)?;
    state.shared.check_budget(&caller.user).await?;
    state.rate.check(&caller.user).await?;
    let slot = state.shared.acquire_stream(&caller.user).await?;
    if request.mode == ResponseMode::Blocking {
        let usage = usage_sink(&state.shared, Arc::clone(&caller.user));
        // Dify answers a blocking chat only when the whole generation is done, and nothing can
        // stop it before (its task id comes with the answer): the call runs to its end, slot
        // held, and its tokens are counted, even when the browser leaves or gets its 504.
        let dify = Arc::clone(&app.dify);
        let request = request.into_owned();
        let call = async move {
            let answer = dify
                .chat_blocking(&caller, &request.to_upstream(), slot)
                .await?;
            Ok::<_, ApiError>(answer.count_tokens(usage).into_response())
        };
        return answered_in_time(app.dify.timeout(), call).await?;
    }
    // Dify goes on generating when its client leaves, even before its first event: the call
    // runs to Dify's answer in a task of its own, whose relay, dropped unread, stops the task
    // and counts what it spent.
    let identity = Arc::clone(&caller.user);
    let shutdown = state.streams_cancel.clone().cancelled_owned();
    let (dify, shared, request) = (
        Arc::clone(&app.dify),
        Arc::clone(&state.shared),
        request.into_owned(),
    );
    let call = async move {
        let identity = Arc::clone(&caller.user);
        let relay = dify
            .chat_stream(caller, &request.to_upstream(), slot, shutdown)
            .await?;
        Ok::<_, ApiError>(Metered::new(relay, &shared, identity))
    };
    let relay = answered_in_time(app.dify.timeout(), call).await??;
    if !state.resumable.enabled() {
        return Ok(sse_response(Body::from_stream(relay)));
    }
    let (id, leader) = state.resumable.start(identity, relay);
    let mut response = sse_response(Body::from_stream(leader));
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_STREAM_ID, id);
    }
    Ok(response)
}

/// The rest of a stream from byte `offset` (no `offset`: from the start). Not a new
/// generation: no rate limit, no slot.
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(IdParam { id }): Path<IdParam>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let offset = offset(query.as_deref())?;
    let follow = state.resumable.resume(&caller.user, &id, offset).await?;
    let mut response = sse_response(Body::from_stream(follow));
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_STREAM_ID, id);
    }
    Ok(response)
}

/// `offset=N`: one decimal number of bytes at most; anything else is `invalid_param`.
fn offset(query: Option<&str>) -> Result<u64, ApiError> {
    let mut found = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "offset" {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::invalid("offset is given more than once"));
        }
        let n =
            (!value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| ApiError::invalid("offset must be a number of bytes"))?;
        found = Some(n);
    }
    Ok(found.unwrap_or(0))
}

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const X_STREAM_ID: HeaderName = HeaderName::from_static("x-stream-id");

/// Dify's event stream as we relay it: no buffering by proxies, no caching.
pub(crate) fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    response
}

async fn stop(
    app: App,
    caller: Caller,
    Path(TaskIdParam { task_id }): Path<TaskIdParam>,
    OptionalJsonObject(_): OptionalJsonObject,
) -> Result<Response, ApiError> {
    validate::task_id(&task_id)?;
    Ok(app.dify.stop(&caller, &task_id).await?.into_response())
}
