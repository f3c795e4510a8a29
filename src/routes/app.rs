//! `GET /parameters`, `/info`, `/meta`, `/site`: app settings for the page. They are the same
//! for every user, so successful answers are cached per app (`state::caches::SETTINGS_TTL`).

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::apps::App;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::http::routed::user;
use crate::state::AppState;

/// Settings are kept, so they are read whole: a larger answer is no app's settings (502).
const MAX_SETTINGS_BYTES: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/parameters",
            get(user(|a: App, c: Caller| settings(a, c, "parameters"))),
        )
        .route(
            "/info",
            get(user(|a: App, c: Caller| settings(a, c, "info"))),
        )
        .route(
            "/meta",
            get(user(|a: App, c: Caller| settings(a, c, "meta"))),
        )
        // Dify's WebApp settings (title, colours, language…), from Dify 1.4 on; an older Dify,
        // or an app without them, is our `not_found` (`upstream_error::from_site_upstream`).
        .route(
            "/site",
            get(user(|a: App, c: Caller| settings(a, c, "site"))),
        )
}

async fn settings(app: App, caller: Caller, which: &'static str) -> Result<Response, ApiError> {
    let (status, body) = cached(&app, &caller, which).await?;
    Ok(json(status, body))
}

/// One of `app`'s settings, from its cache or from Dify (a success is kept).
pub async fn cached(
    app: &App,
    caller: &Caller,
    which: &'static str,
) -> Result<(StatusCode, Bytes), ApiError> {
    if let Some(body) = app.settings.get(which) {
        return Ok((StatusCode::OK, body));
    }
    let answer = app.dify.app_settings(caller, which).await?;
    let status = answer.status();
    let body = answer.bytes(MAX_SETTINGS_BYTES).await?;
    if status == StatusCode::OK {
        app.settings.put(which, body.clone());
    }
    Ok((status, body))
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
