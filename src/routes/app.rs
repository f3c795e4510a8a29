//! `GET /parameters`, `/info`, `/meta`: app settings for the page. They are the same for every
//! user, so successful answers are cached for [`SETTINGS_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::dify::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub const SETTINGS_TTL: Duration = Duration::from_secs(10);
/// Settings are kept, so they are read whole: a larger answer is no app's settings (502).
const MAX_SETTINGS_BYTES: usize = 1024 * 1024;

#[derive(Default)]
pub struct SettingsCache(Mutex<HashMap<&'static str, (Instant, Bytes)>>);

impl SettingsCache {
    fn get(&self, which: &'static str) -> Option<Bytes> {
        let cache = self.0.lock().ok()?;
        let (at, body) = cache.get(which)?;
        (at.elapsed() < SETTINGS_TTL).then(|| body.clone())
    }

    fn put(&self, which: &'static str, body: Bytes) {
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(which, (Instant::now(), body));
        }
    }
}

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
