//! `GET /parameters`, `/info`, `/meta`, `/site`: app settings for the page. They are the same for every
//! user, so successful answers are cached (`state::caches::SETTINGS_TTL`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::dify::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Settings are kept, so they are read whole: a larger answer is no app's settings (502).
const MAX_SETTINGS_BYTES: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/parameters",
            get(|s: State<AppState>, c: Caller| settings(s, c, "parameters")),
        )
        .route(
            "/info",
            get(|s: State<AppState>, c: Caller| settings(s, c, "info")),
        )
        .route(
            "/meta",
            get(|s: State<AppState>, c: Caller| settings(s, c, "meta")),
        )
        .route("/site", get(site))
}

/// Dify's WebApp settings (title, colours, language…), from Dify 1.4 on. Older versions
/// have no such route: whatever their 404 says, it is our `not_found`.
async fn site(state: State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    match settings(state, caller, "site").await {
        Err(error) if error.status() == StatusCode::NOT_FOUND => Err(ApiError::NotFound(
            "This Dify version has no WebApp settings (/site needs Dify 1.4 or later).".into(),
        )),
        other => other,
    }
}

async fn settings(
    State(state): State<AppState>,
    caller: Caller,
    which: &'static str,
) -> Result<Response, ApiError> {
    if let Some(body) = state.settings.get(which) {
        return Ok(json(StatusCode::OK, body));
    }
    let answer = state.dify.app_settings(&caller, which).await?;
    let status = answer.status();
    let body = answer.bytes(MAX_SETTINGS_BYTES).await?;
    if status == StatusCode::OK {
        state.settings.put(which, body.clone());
    }
    Ok(json(status, body))
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
