//! `POST /v1/audio-to-text` and `POST /v1/text-to-audio` (protocol §11), enough to test a
//! proxy: a transcript that names the file, and a few MP3-framed bytes made from the text.
//! Speech is available whatever `/parameters` says.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::ctx::Ctx;
use super::errors::ApiError;
use super::files::read_form;
use super::pyvalue::py_str;
use super::respond::json_response;
use super::state::{Shared, lock};

const AUDIO_TYPES: &[&str] = &[
    "audio/mp3",
    "audio/m4a",
    "audio/wav",
    "audio/amr",
    "audio/mpga",
    "audio/mpeg",
    "audio/webm",
];
const MAX_AUDIO: usize = 30 * 1024 * 1024;

/// The bytes every emulated speech starts with (an ID3v2.4 header with no frames).
pub const SPEECH_HEADER: &[u8] = b"ID3\x04\x00\x00\x00\x00\x00\x00";

pub(crate) async fn audio_to_text<S>(
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
        Err(_) => Default::default(),
    };
    while futures_util::StreamExt::next(&mut body).await.is_some() {}
    if let Some(user) = form.user.as_deref().filter(|u| !u.is_empty()) {
        lock(&shared.store).end_user_id(user);
    }
    let Some(file) = form.files.iter().find(|f| f.field == "file") else {
        return Err(ApiError::bad_request_key_error());
    };
    if file.size == 0 {
        return Err(ApiError::http(
            400,
            "no_audio_uploaded",
            "Please upload your audio.",
        ));
    }
    if file.size > MAX_AUDIO {
        return Err(ApiError::http(
            413,
            "audio_too_large",
            "Audio size larger than 30 mb",
        ));
    }
    if !AUDIO_TYPES.contains(&file.mime_type.as_str()) {
        return Err(ApiError::http(
            415,
            "unsupported_audio_type",
            "Audio type not allowed.",
        ));
    }
    let text = format!("Transcript of {} ({} bytes).", file.filename, file.size);
    Ok(json_response(200, &json!({"text": text})))
}

pub(crate) fn text_to_audio(ctx: Ctx) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, false)?;
    let text = match body.get("message_id").filter(|v| !v.is_null()) {
        Some(id) => {
            let id = py_str(id);
            let mut store = lock(&ctx.shared.store);
            store
                .message_mut(&user, &id)
                .map(|m| m.answer.clone())
                .ok_or_else(|| ApiError::not_found("Message Not Exists."))?
        }
        None => body
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    if text.is_empty() {
        return Err(ApiError::value("Text is required"));
    }
    let chunks = [
        Bytes::from_static(SPEECH_HEADER),
        Bytes::from(text.into_bytes()),
    ];
    let stream = futures_util::stream::iter(chunks.map(Ok::<_, io::Error>));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    Ok(resp)
}
