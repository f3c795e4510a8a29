//! `POST /files/upload` (streamed to Dify, never buffered whole) and the pass-through of the
//! signed file URLs Dify puts in messages (`/files/{id}/file-preview` and friends).

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::{get, post};

use super::path::{FilePreviewParam, ToolFileParam};
use super::validate;
use crate::apps::App;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::http::multipart;
use crate::http::routed::{open, user};
use crate::state::AppState;

/// Routes that act for a user (identity required).
pub fn upload_router() -> Router<AppState> {
    Router::new().route("/files/upload", post(user(upload)))
}

/// Signed file URLs: no identity, no key.
pub fn passthrough_router() -> Router<AppState> {
    Router::new()
        .route("/files/{id}/{kind}", get(open(preview)))
        .route("/files/tools/{file}", get(open(tool_file)))
}

async fn upload(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    multipart::forward(&state, &caller, request, |file| {
        app.dify.upload(&caller, file)
    })
    .await
}

const FORWARDED_REQUEST_HEADERS: &[header::HeaderName] = &[
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::ACCEPT,
];

const RELAYED_RESPONSE_HEADERS: &[header::HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_DISPOSITION,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CACHE_CONTROL,
    header::ETAG,
    header::LAST_MODIFIED,
];

async fn preview(
    State(state): State<AppState>,
    app: Option<Extension<App>>,
    Path(FilePreviewParam { id, kind }): Path<FilePreviewParam>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !matches!(kind.as_str(), "file-preview" | "image-preview") || !validate::is_uuid(&id) {
        return Err(ApiError::NotFound("No such file.".into()));
    }
    let app = file_app(&state, app)?;
    pass_through(&app, &format!("files/{id}/{kind}"), query, &headers).await
}

async fn tool_file(
    State(state): State<AppState>,
    app: Option<Extension<App>>,
    Path(ToolFileParam { file }): Path<ToolFileParam>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let valid = file.split_once('.').is_some_and(|(id, ext)| {
        validate::is_uuid(id)
            && (1..=10).contains(&ext.len())
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !valid {
        return Err(ApiError::NotFound("No such file.".into()));
    }
    let app = file_app(&state, app)?;
    pass_through(&app, &format!("files/tools/{file}"), query, &headers).await
}

/// Whose Dify serves the file: the app of `/apps/{name}/files/…`, else the root's (the one
/// app, or any named app when all share one Dify origin; otherwise the root has no files).
fn file_app(state: &AppState, app: Option<Extension<App>>) -> Result<App, ApiError> {
    match app {
        Some(Extension(app)) => Ok(app),
        None => state
            .apps
            .root_files()
            .cloned()
            .ok_or_else(|| ApiError::NotFound("No such file.".into())),
    }
}

/// For a user's file that a browser would run as a page (HTML, SVG, XML, or no type at all):
/// served from our origin, it must not script it (read conversations with the user's cookie).
pub(crate) const ACTIVE_FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

pub(crate) fn can_run_script(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(essence) = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
    else {
        return true;
    };
    essence.contains("html") || essence.contains("xml")
}

/// Streams a file from Dify's origin without the key, the `user` or the browser's cookies; the
/// signed query goes byte for byte.
async fn pass_through(
    app: &App,
    path: &str,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let target = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let forwarded = FORWARDED_REQUEST_HEADERS
        .iter()
        .filter_map(|name| Some((name.clone(), headers.get(name)?.clone())));
    let response = app.dify.file(&target, forwarded).await?;
    let status = response.status();
    let mut out = Response::builder().status(status);
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = response.headers().get(name) {
            out = out.header(name, value);
        }
    }
    out = out.header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if can_run_script(response.headers().get(header::CONTENT_TYPE)) {
        out = out.header(header::CONTENT_SECURITY_POLICY, ACTIVE_FILE_CSP);
    }
    let body = Body::new(response.into_body());
    out.body(body)
        .map_err(|e| ApiError::Internal(format!("building file response: {e}")))
}
