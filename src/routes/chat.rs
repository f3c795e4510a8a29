//! `POST /chat` (streamed or blocking) and `POST /chat/{task_id}/stop`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::chat_request::{ChatRequest, ResponseMode};
use super::path::TaskIdParam;
use super::validate;
use crate::apps::App;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::http::body::{JsonObject, OptionalJsonObject};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat", post(chat))
        .route("/chat/{task_id}/stop", post(stop))
}

/// A generation, streamed or blocking, holds one of the caller's stream slots while it lasts.
async fn chat(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let request = ChatRequest::parse(body)?;
    state.rate.check(&caller.user)?;
    let slot = Box::new(state.streams.acquire(&caller.user)?);
    if request.mode == ResponseMode::Blocking {
        // Dify answers a blocking chat only when the whole generation is done, and nothing can
        // stop it before (its task id comes with the answer): the call runs to its end, slot
        // held, even when the browser leaves.
        let dify = Arc::clone(&app.dify);
        let call = tokio::spawn(async move {
            dify.chat_blocking(&caller, &request.to_upstream(), slot)
                .await
        });
        let answer = call
            .await
            .map_err(|e| ApiError::Internal(format!("blocking chat task: {e}")))??;
        return Ok(answer.into_response());
    }
    let message = request.to_upstream();
    let shutdown = state.streams_cancel.clone().cancelled_owned();
    let relay = app
        .dify
        .chat_stream(caller, &message, slot, shutdown)
        .await?;
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
    app: App,
    caller: Caller,
    Path(TaskIdParam { task_id }): Path<TaskIdParam>,
    OptionalJsonObject(_): OptionalJsonObject,
) -> Result<Response, ApiError> {
    validate::task_id(&task_id)?;
    Ok(app.dify.stop(&caller, &task_id).await?.into_response())
}
