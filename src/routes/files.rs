//! `POST /files/upload` (streamed to Dify, never buffered whole) and the pass-through of the
//! signed file URLs Dify puts in messages (`/files/{id}/file-preview` and friends).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::path::{FilePreviewParam, ToolFileParam};
use super::validate;
use crate::apps::App;
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
    app: App,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let boundary = multipart_boundary(&request, state.config.max_upload_bytes)?;
    state.assist_rate.check(&caller.user).await?;
    let upload = stream_file(
        request,
        boundary,
        state.config.max_upload_bytes,
        Arc::clone(&state.body_budget),
    )
    .await?;
    let result = app.dify.upload(&caller, upload.part).await;
    if let Some(error) = upload.end.error() {
        return Err(error);
    }
    Ok(result?.into_response())
}

/// The multipart boundary of an upload whose declared length is within `limit`.
pub(crate) fn multipart_boundary(request: &Request, limit: u64) -> Result<String, ApiError> {
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
    Ok(boundary)
}

/// An upload on its way: the text fields that came before the `file` part, the file as a
/// part that streams the rest of the request body, and how the body ended (check it after the
/// upstream call: the client's error wins over what the broken stream made of it).
pub(crate) struct StreamedFile {
    pub fields: Vec<(String, String)>,
    pub part: reqwest::multipart::Part,
    pub end: Arc<BodyEnd>,
}

/// Reads the parts before `file` (at most [`MAX_UPLOAD_HEAD_BYTES`] in all) and returns the
/// file streamed, the whole body capped at `limit` bytes.
pub(crate) async fn stream_file(
    request: Request,
    boundary: String,
    limit: u64,
    budget: Arc<Semaphore>,
) -> Result<StreamedFile, ApiError> {
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
        if !seen_end.file_found.load(Ordering::Acquire) {
            if seen > MAX_UPLOAD_HEAD_BYTES {
                seen_end.head_too_large.store(true, Ordering::Release);
                return Err(std::io::Error::other(BodyRefused));
            }
            // The parser holds what comes before the file: charged like a buffered JSON body.
            if !seen_end.charge(&budget, chunk.len()) {
                return Err(std::io::Error::other(BodyRefused));
            }
        }
        Ok(chunk)
    });
    let mut multipart = multer::Multipart::new(body, boundary);

    let malformed = |end: &BodyEnd| {
        end.error()
            .unwrap_or_else(|| ApiError::invalid("The multipart body is malformed."))
    };
    let mut fields = Vec::new();
    let file = loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => break field,
            Ok(Some(field)) if field.file_name().is_none() => {
                let name = field.name().unwrap_or_default().to_owned();
                let value = field.text().await.map_err(|_| malformed(&body_end))?;
                fields.push((name, value));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ApiError::invalid("The upload needs a part named \"file\".")),
            Err(_) => return Err(malformed(&body_end)),
        }
    };
    body_end.file_found.store(true, Ordering::Release);
    body_end.release_head();
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
    Ok(StreamedFile {
        fields,
        part,
        end: body_end,
    })
}

/// Why the upload body ended early, if it did: the client's error, whatever the multipart
/// parser or the upstream call made of the broken stream.
#[derive(Default)]
pub(crate) struct BodyEnd {
    too_large: AtomicBool,
    /// The shared budget of buffered body bytes had no room for the part headers.
    overloaded: AtomicBool,
    /// The budget held for what came before the file's data.
    head: Mutex<Option<OwnedSemaphorePermit>>,
    /// More than [`MAX_UPLOAD_HEAD_BYTES`] came before the file's data.
    head_too_large: AtomicBool,
    file_found: AtomicBool,
    /// Nothing arrived for REQUEST_BODY_TIMEOUT_SECS.
    stalled: AtomicBool,
}

impl BodyEnd {
    fn charge(&self, budget: &Arc<Semaphore>, bytes: usize) -> bool {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| Arc::clone(budget).try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            self.overloaded.store(true, Ordering::Release);
            return false;
        };
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        match head.as_mut() {
            Some(held) => held.merge(permit),
            None => *head = Some(permit),
        }
        true
    }

    fn release_head(&self) {
        self.head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    pub(crate) fn error(&self) -> Option<ApiError> {
        if self.too_large.load(Ordering::Acquire) {
            Some(ApiError::PayloadTooLarge)
        } else if self.overloaded.load(Ordering::Acquire) {
            Some(ApiError::Overloaded {
                retry_after_secs: 1,
            })
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
    let body = Body::from_stream(response.bytes_stream());
    out.body(body)
        .map_err(|e| ApiError::Internal(format!("building file response: {e}")))
}
