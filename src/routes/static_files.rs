//! The chat page: embedded in the binary, or served from `STATIC_DIR`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::Embed;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Embed)]
#[folder = "static/"]
struct Assets;

/// Serves the page for any `GET` no other route took. Another method on one of the page's
/// paths is a JSON 405; anything else unmatched is a JSON 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return not_a_read(&state, request.uri()).await;
    }
    let mut response = page(&state, request).await;
    let headers = response.headers_mut();
    let embed = &state.config.embed;
    headers.insert(header::CONTENT_SECURITY_POLICY, embed.page_csp().clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // X-Frame-Options cannot name other sites; with EMBED_ORIGINS the CSP alone decides.
    if !embed.enabled() {
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn page(state: &AppState, request: Request) -> Response {
    let request = match app_page(state, request) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    match &state.config.static_dir {
        Some(dir) => from_dir(dir, request).await,
        None => {
            let path = request.uri().path().trim_start_matches('/');
            embedded(if path.is_empty() { "index.html" } else { path })
        }
    }
}

/// With named apps, `/apps/{name}/…` is the same page and assets as `/…` (the page finds its
/// app in its own address); `/apps/{name}` redirects to `/apps/{name}/` (its query kept) so
/// relative asset paths resolve under it, and an unknown name is 404.
fn app_page(state: &AppState, mut request: Request) -> Result<Request, Box<Response>> {
    if !state.apps.named() {
        return Ok(request);
    }
    let Some(rest) = request.uri().path().strip_prefix("/apps/") else {
        return Ok(request);
    };
    let (name, inner) = match rest.split_once('/') {
        Some((name, inner)) => (name, Some(inner)),
        None => (rest, None),
    };
    if state.apps.get(name).is_none() {
        return Err(Box::new(crate::apps::unknown_app().into_response()));
    }
    let Some(inner) = inner else {
        let to = match request.uri().query() {
            Some(query) => format!("/apps/{name}/?{query}"),
            None => format!("/apps/{name}/"),
        };
        return Err(Box::new(Redirect::permanent(&to).into_response()));
    };
    let target = format!("/{}", inner.trim_start_matches('/'));
    match target.parse::<Uri>() {
        Ok(uri) => {
            *request.uri_mut() = uri;
            Ok(request)
        }
        Err(_) => Err(Box::new(
            ApiError::NotFound("Not found.".into()).into_response(),
        )),
    }
}

async fn not_a_read(state: &AppState, uri: &Uri) -> Response {
    let probe = Request::get(uri.clone()).body(Body::empty());
    let is_page = match probe {
        Ok(probe) => page(state, probe).await.status().is_success(),
        Err(_) => false,
    };
    if !is_page {
        return ApiError::NotFound("No such route.".into()).into_response();
    }
    ApiError::MethodNotAllowed(Some("GET,HEAD")).into_response()
}

async fn from_dir(dir: &std::path::Path, request: Request) -> Response {
    let request = single_leading_slash(request);
    let served = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .oneshot(request)
        .await;
    match served {
        Ok(response) if response.status() != StatusCode::NOT_FOUND => response.map(Body::new),
        _ => ApiError::NotFound("Not found.".into()).into_response(),
    }
}

/// `//js` would be redirected to `//js/`, which a browser reads as the host `js`.
fn single_leading_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if !path.starts_with("//") {
        return request;
    }
    let mut target = format!("/{}", path.trim_start_matches('/'));
    if let Some(query) = request.uri().query() {
        target.push('?');
        target.push_str(query);
    }
    if let Ok(uri) = target.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    request
}

fn embedded(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::NotFound("Not found.".into()).into_response();
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let cache = if path == "index.html" {
        "no-cache"
    } else {
        "public, max-age=300"
    };
    // Built into the binary (release builds), the bytes are borrowed for good: no copy.
    let body = match file.data {
        std::borrow::Cow::Borrowed(bytes) => Body::from(bytes::Bytes::from_static(bytes)),
        std::borrow::Cow::Owned(bytes) => Body::from(bytes),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
