//! `POST /chat` (streamed or blocking) and `POST /chat/{task_id}/stop`.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::body::{JsonObject, OptionalJsonObject};
use super::chat_request::{ChatRequest, ResponseMode};
use super::relay_json;
use super::validate;
use crate::dify::Caller;
use crate::dify::relay::{RelayStream, StopOnAbandon};
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry::metrics;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat", post(chat))
        .route("/chat/{task_id}/stop", post(stop))
}

async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let request = ChatRequest::parse(body)?;
    state.rate.check(&caller.user)?;
    let upstream_body = request.to_upstream(&caller.user);
    if request.mode == ResponseMode::Blocking {
        return state
            .dify
            .chat_blocking(&caller, &upstream_body)
            .await
            .map(relay_json);
    }
    let permit = state.streams.acquire(&caller.user)?;
    let started = Instant::now();
    let upstream = state.dify.chat_stream(&caller, &upstream_body).await?;
    metrics::time_to_first_byte(started.elapsed());
    let relay = RelayStream::new(
        upstream,
        state.config.stream_idle_timeout,
        state.streams_cancel.clone().cancelled_owned(),
        StopOnAbandon {
            client: state.dify.clone(),
            caller,
            stops: state.stops.clone(),
        },
        Some(Box::new(permit)),
    );
    Ok(sse_response(Body::from_stream(relay)))
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
    OptionalJsonObject(_): OptionalJsonObject,
) -> Result<Response, ApiError> {
    validate::task_id(&task_id)?;
    let answer = state.dify.stop(&caller, &task_id).await?;
    Ok(relay_json(answer).into_response())
}
