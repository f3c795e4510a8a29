//! `POST /v1/files/upload` (parsed as it streams in) and the signed file routes outside `/v1`:
//! `/files/{id}/file-preview`, `/files/{id}/image-preview`, `/files/tools/{id}.{ext}`.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

use super::ctx::{Ctx, DEFAULT_USER};
use super::errors::ApiError;
use super::respond::json_response;
use super::sign::Preview;
use super::state::{Shared, lock};
use super::store::{UploadedFile, new_id, unix_now};

const IMAGE: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "svg"];
const VIDEO: &[&str] = &["mp4", "mov", "mpeg", "webm"];
const AUDIO: &[&str] = &["mp3", "m4a", "wav", "amr", "mpga"];
const MB: usize = 1024 * 1024;

/// `UPLOAD_*_FILE_SIZE_LIMIT` defaults by extension (0.15.3).
fn size_limit(extension: &str) -> usize {
    let ext = extension.to_ascii_lowercase();
    let megabytes = if IMAGE.contains(&ext.as_str()) {
        10
    } else if VIDEO.contains(&ext.as_str()) {
        100
    } else if AUDIO.contains(&ext.as_str()) {
        50
    } else {
        15
    };
    megabytes * MB
}

pub(crate) struct FilePart {
    pub field: String,
    pub filename: String,
    pub mime_type: String,
    pub size: usize,
    /// The content, kept up to the largest size limit.
    bytes: Bytes,
}

#[derive(Default)]
pub(crate) struct Form {
    pub user: Option<String>,
    pub files: Vec<FilePart>,
}

/// Werkzeug's form parsing: text fields and file parts (any part with a `filename`).
pub(crate) async fn read_form<S>(body: &mut S, boundary: String) -> Form
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin,
{
    let mut form = Form::default();
    let mut multipart = multer::Multipart::new(body, boundary);
    while let Ok(Some(mut field)) = multipart.next_field().await {
        let name = field.name().unwrap_or("").to_owned();
        let Some(filename) = field.file_name().map(str::to_owned) else {
            let text = field.text().await.unwrap_or_default();
            if name == "user" && form.user.is_none() {
                form.user = Some(text);
            }
            continue;
        };
        let mime_type = field
            .content_type()
            .map(|m| m.essence_str().to_owned())
            .unwrap_or_default();
        let mut kept = BytesMut::new();
        let mut size = 0;
        while let Ok(Some(chunk)) = field.chunk().await {
            size += chunk.len();
            if kept.len() <= 100 * MB {
                kept.extend_from_slice(&chunk);
            }
        }
        form.files.push(FilePart {
            field: name,
            filename,
            mime_type,
            size,
            bytes: kept.freeze(),
        });
    }
    form
}

pub(crate) async fn upload<S>(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    mut body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin,
{
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form = match multer::parse_boundary(content_type) {
        Ok(boundary) => read_form(&mut body, boundary).await,
        Err(_) => Form::default(),
    };
    // Werkzeug reads the whole request before the view runs; the journal gets all of it too.
    while body.next().await.is_some() {}

    let user = form
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_owned());
    let created_by = lock(&shared.store).end_user_id(&user);

    let mut file_fields: Vec<&str> = form.files.iter().map(|f| f.field.as_str()).collect();
    file_fields.sort_unstable();
    file_fields.dedup();
    let Some(file) = form.files.iter().find(|f| f.field == "file") else {
        return Err(ApiError::bad_request_key_error());
    };
    if file.mime_type.is_empty() {
        return Err(ApiError::http(
            415,
            "unsupported_file_type",
            "File type not allowed.",
        ));
    }
    if file_fields.len() > 1 {
        return Err(ApiError::http(
            400,
            "too_many_files",
            "Only one file is allowed.",
        ));
    }
    if file.filename.is_empty() {
        return Err(ApiError::http(
            400,
            "filename_not_exists_error",
            "The specified filename does not exist.",
        ));
    }
    let extension = file.filename.rsplit('.').next().unwrap_or("").to_owned();
    if file.size > size_limit(&extension) {
        return Err(ApiError::http(
            413,
            "file_too_large",
            "File size exceeded. {message}",
        ));
    }
    let name = if file.filename.chars().count() > 200 {
        let stem: String = file
            .filename
            .split('.')
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        format!("{stem}.{extension}")
    } else {
        file.filename.clone()
    };

    let stored = UploadedFile {
        id: new_id(),
        name,
        size: file.size,
        extension,
        mime_type: file.mime_type.clone(),
        created_by,
        created_at: unix_now(),
        user,
        bytes: file.bytes.clone(),
    };
    let answer = json!({
        "id": stored.id,
        "name": stored.name,
        "size": stored.size,
        "extension": stored.extension,
        "mime_type": stored.mime_type,
        "created_by": stored.created_by,
        "created_at": stored.created_at,
    });
    lock(&shared.store).add_upload(stored);
    Ok(json_response(201, &answer))
}

/// What `image-preview` serves (Dify's `IMAGE_EXTENSIONS`).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "svg"];

fn invalid_signature() -> ApiError {
    ApiError::http(403, "forbidden", "Invalid request.")
}

/// `GET /files/{id}/file-preview|image-preview?timestamp&nonce&sign[&as_attachment]`.
pub(crate) fn preview(ctx: Ctx, id: &str, preview: Preview) -> Result<Response, ApiError> {
    if !ctx
        .shared
        .signer
        .verify(preview.path_segment(), id, &ctx.query, unix_now())
    {
        // Dify's FileService answers a bad signature on the preview routes like a missing
        // file (only /files/tools answers 403).
        return Err(ApiError::not_found(
            "File not found or signature is invalid",
        ));
    }
    let store = lock(&ctx.shared.store);
    let file = store
        .upload(id)
        .ok_or_else(|| ApiError::not_found("File not found or signature is invalid"))?;
    if preview == Preview::Image
        && !IMAGE_EXTENSIONS.contains(&file.extension.to_lowercase().as_str())
    {
        return Err(ApiError::http(
            415,
            "unsupported_file_type",
            "File type not allowed.",
        ));
    }
    let mut resp = file_response(&file.mime_type, file.bytes.clone());
    let as_attachment = ctx
        .query
        .get("as_attachment")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if as_attachment {
        let encoded: String = file
            .name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
            resp.headers_mut().insert(CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

/// `GET /v1/files/{id}/preview?as_attachment&user` (≥ 1.7.2, keyed): an upload of this app.
/// Dify also wants it attached to a message; the emulator serves any upload it holds.
pub(crate) fn service_preview(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let _user = ctx.query_user(false)?;
    let store = lock(&ctx.shared.store);
    let file = store.upload(id).ok_or_else(|| {
        ApiError::http(404, "file_not_found", "File not found in message context")
    })?;
    let as_attachment = ctx
        .query
        .get("as_attachment")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mime = if as_attachment {
        "application/octet-stream"
    } else {
        file.mime_type.as_str()
    };
    let mut resp = file_response(mime, file.bytes.clone());
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    if as_attachment
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file.id))
    {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /files/tools/{id}.{extension}?timestamp&nonce&sign`.
pub(crate) fn tool_file(ctx: Ctx, id: &str, extension: &str) -> Result<Response, ApiError> {
    if !ctx
        .shared
        .signer
        .verify("file-preview", id, &ctx.query, unix_now())
    {
        return Err(invalid_signature());
    }
    let store = lock(&ctx.shared.store);
    let file = store
        .tool_file(id)
        .filter(|f| f.extension == extension)
        .ok_or_else(|| ApiError::not_found("file is not found"))?;
    Ok(file_response(&file.mime_type, file.bytes.clone()))
}

fn file_response(mime_type: &str, bytes: Bytes) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    let content_type = HeaderValue::from_str(mime_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_follow_the_extension_category() {
        assert_eq!(size_limit("PNG"), 10 * MB);
        assert_eq!(size_limit("mp4"), 100 * MB);
        assert_eq!(size_limit("mp3"), 50 * MB);
        assert_eq!(size_limit("xyz"), 15 * MB);
    }
}
