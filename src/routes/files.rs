//! `POST /files/upload` (streamed to Dify, never buffered whole) and the pass-through of the
//! signed file URLs Dify puts in messages (`/files/{id}/file-preview` and friends).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{StreamExt, TryStreamExt};

use super::validate;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::server::body_timeout::is_body_timeout;
use crate::state::AppState;

/// Routes that act for a user (identity required).
pub fn upload_router() -> Router<AppState> {
    Router::new().route("/files/upload", post(upload))
}

/// Signed file URLs: no identity, no key.
pub fn passthrough_router() -> Router<AppState> {
    Router::new()
        .route("/files/{id}/{kind}", get(preview))
        .route("/files/tools/{file}", get(tool_file))
}

/// The most that may come before the `file` part's data starts (the parser holds part headers
/// whole while it looks for their end).
pub const MAX_UPLOAD_HEAD_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
struct BodyRefused;

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upload body refused")
    }
}

impl std::error::Error for BodyRefused {}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.config.max_upload_bytes;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType("Uploads must be multipart/form-data.".into())
        })?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge);
    }

    state.assist_rate.check(&caller.user).await?;

    let body_end = Arc::new(BodyEnd::default());
    let seen_end = body_end.clone();
    let mut seen: u64 = 0;
    let body = request.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                seen_end.stalled.store(true, Ordering::Release);
            }
            std::io::Error::other(e)
        })?;
        seen += chunk.len() as u64;
        if seen > limit {
            seen_end.too_large.store(true, Ordering::Release);
            return Err(std::io::Error::other(BodyRefused));
        }
        if seen > MAX_UPLOAD_HEAD_BYTES && !seen_end.file_found.load(Ordering::Acquire) {
            seen_end.head_too_large.store(true, Ordering::Release);
            return Err(std::io::Error::other(BodyRefused));
        }
        Ok(chunk)
    });
    let mut multipart = multer::Multipart::new(body, boundary);

    let file = loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => break field,
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ApiError::invalid("The upload needs a part named \"file\".")),
            Err(_) => {
                return Err(body_end
                    .error()
                    .unwrap_or_else(|| ApiError::invalid("The multipart body is malformed.")));
            }
        }
    };
    body_end.file_found.store(true, Ordering::Release);
    let file_name = file.file_name().unwrap_or("upload").to_owned();
    let mime = file
        .content_type()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/octet-stream".into());
    let stream = file.map_err(std::io::Error::other);
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name(file_name)
        .mime_str(&mime)
        .map_err(|_| ApiError::invalid("The file part has an invalid content type."))?;
    let result = state.dify.upload(&caller, part).await;
    if let Some(error) = body_end.error() {
        return Err(error);
    }
    Ok(result?.into_response())
}

/// Why the upload body ended early, if it did: the client's error, whatever the multipart
/// parser or the upstream call made of the broken stream.
#[derive(Default)]
struct BodyEnd {
    too_large: AtomicBool,
    /// More than [`MAX_UPLOAD_HEAD_BYTES`] came before the file's data.
    head_too_large: AtomicBool,
    file_found: AtomicBool,
    /// Nothing arrived for REQUEST_BODY_TIMEOUT_SECS.
    stalled: AtomicBool,
}

impl BodyEnd {
    fn error(&self) -> Option<ApiError> {
        if self.too_large.load(Ordering::Acquire) {
            Some(ApiError::PayloadTooLarge)
        } else if self.head_too_large.load(Ordering::Acquire) {
            Some(ApiError::invalid(
                "The multipart part headers before the file are too large.",
            ))
        } else if self.stalled.load(Ordering::Acquire) {
            Some(ApiError::RequestTimeout)
        } else {
            None
        }
    }
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
    Path((id, kind)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !matches!(kind.as_str(), "file-preview" | "image-preview") || !validate::is_uuid(&id) {
        return Err(ApiError::NotFound("No such file.".into()));
    }
    pass_through(&state, &format!("files/{id}/{kind}"), query, &headers).await
}

async fn tool_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
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
    pass_through(&state, &format!("files/tools/{file}"), query, &headers).await
}

/// For a user's file that a browser would run as a page (HTML, SVG, XML, or no type at all):
/// served from our origin, it must not script it (read conversations with the user's cookie).
const ACTIVE_FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

fn can_run_script(content_type: Option<&header::HeaderValue>) -> bool {
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
    state: &AppState,
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
    let response = state.dify.file(&target, forwarded).await?;
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
    let body = Body::from_stream(response.bytes_stream());
    out.body(body)
        .map_err(|e| ApiError::Internal(format!("building file response: {e}")))
}
