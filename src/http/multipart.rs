//! A multipart request's `file` part, streamed to Dify as it arrives (never buffered whole):
//! `MAX_UPLOAD_BYTES` on the whole body while it streams, the parts before the file bounded
//! and charged to the shared body budget. Text fields before the file are kept for callers
//! that pass them on (the gateway, which drops `user`); file parts other than `file` and
//! anything after it are skipped, except that a gateway file upload with a second file is
//! refused as Dify refuses it (`too_many_files`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::multipart::Part;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dify::{Answer, Caller};
use crate::error::ApiError;
use crate::server::body_timeout::is_body_timeout;
use crate::state::AppState;

/// The most that may come before the `file` part's data starts (the parser holds part headers
/// whole while it looks for their end).
pub const MAX_UPLOAD_HEAD_BYTES: u64 = 1024 * 1024;

/// The multipart boundary, once the head shows an acceptable upload: `multipart/form-data`
/// (else 415) not declared larger than `MAX_UPLOAD_BYTES` (else 413).
pub fn boundary(headers: &HeaderMap, limit: u64) -> Result<String, ApiError> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType("Uploads must be multipart/form-data.".into())
        })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(boundary)
}

/// What an upload without its `file` part is answered: on our own routes `invalid_param`
/// (API.md §3); through the gateway as Dify answers it (dify-protocol.md §9), a file upload
/// `no_file_uploaded` (Dify ≥ 1.6; before, `bad_request_key_error`), a recording to
/// transcribe Werkzeug's `bad_request_key_error`.
#[derive(Clone, Copy)]
pub enum Missing {
    Ours,
    File,
    Audio,
}

/// Dify's answer to a file upload with more than one file part (dify-protocol.md §9.1).
fn too_many_files() -> ApiError {
    ApiError::Upstream {
        status: StatusCode::BAD_REQUEST,
        code: "too_many_files".to_owned(),
        message: "Only one file is allowed.".to_owned(),
    }
}

impl Missing {
    fn error(self) -> ApiError {
        let (code, message) = match self {
            Missing::Ours => {
                return ApiError::invalid("The upload needs a part named \"file\".");
            }
            Missing::File => ("no_file_uploaded", "Please upload your file."),
            Missing::Audio => (
                "bad_request_key_error",
                "The browser (or proxy) sent a request that this server could not understand.",
            ),
        };
        ApiError::Upstream {
            status: StatusCode::BAD_REQUEST,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// A multipart upload of our own routes, checked, charged to the caller's assist rate and
/// streamed to Dify by `send`; the client's own error wins if the body broke on the way.
pub async fn forward<Send, Sent>(
    state: &AppState,
    caller: &Caller,
    request: Request,
    send: Send,
) -> Result<Response, ApiError>
where
    Send: FnOnce(Part) -> Sent,
    Sent: Future<Output = Result<Answer, ApiError>>,
{
    let limit = state.config.max_upload_bytes;
    let boundary = boundary(request.headers(), limit)?;
    state.assist_rate.check(&caller.user).await?;
    let (file, end) = file_part(state, boundary, request.into_body(), Missing::Ours).await?;
    let result = send(file.part).await;
    Ok(end.outcome(result)?.into_response())
}

/// An upload on its way: the text fields that came before the `file` part, and the file as a
/// part that streams the rest of the request body.
pub struct StreamedFile {
    pub fields: Vec<(String, String)>,
    pub part: Part,
}

/// Reads up to the `file` part and returns it as a streaming [`Part`] for the upstream form,
/// with the [`UploadEnd`] that tells, after the upstream call, whether the body broke.
pub async fn file_part(
    state: &AppState,
    boundary: String,
    body: Body,
    missing: Missing,
) -> Result<(StreamedFile, UploadEnd), ApiError> {
    let limit = state.config.max_upload_bytes;
    let body_end = Arc::new(BodyEnd::default());
    let seen_end = body_end.clone();
    let budget = Arc::clone(&state.body_budget);
    let mut seen: u64 = 0;
    let body = body.into_data_stream().map(move |chunk| {
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
    // Dify counts every file part, whatever its name; only its file upload refuses a second.
    let one_file = matches!(missing, Missing::File);
    let mut files_before = false;
    let mut fields = Vec::new();
    let (file, file_name) = loop {
        match multipart.next_field().await {
            // As Werkzeug reads a form: a part without a filename is a text field, not a file.
            Ok(Some(field)) => match (field.name() == Some("file"), file_name(&field)) {
                (true, Some(name)) => break (field, name),
                (_, None) => {
                    let name = field.name().unwrap_or_default().to_owned();
                    let value = field.text().await.map_err(|_| malformed(&body_end))?;
                    fields.push((name, value));
                }
                (false, Some(_)) => files_before = true,
            },
            Ok(None) => return Err(missing.error()),
            Err(_) => return Err(malformed(&body_end)),
        }
    };
    if one_file && files_before {
        return Err(too_many_files());
    }
    body_end.file_found.store(true, Ordering::Release);
    body_end.release_head();
    // The type as the client declared it, or none: Dify refuses a file without one (415
    // `unsupported_file_type`), so it is not made up here.
    let mime = file.content_type().map(|m| m.to_string());
    let stream = file.map_err(std::io::Error::other);
    let part = if one_file {
        let rest = after_the_file(multipart, Arc::clone(&body_end));
        Part::stream(reqwest::Body::wrap_stream(stream.chain(rest)))
    } else {
        Part::stream(reqwest::Body::wrap_stream(stream))
    };
    let part = part.file_name(file_name);
    let part = match mime {
        Some(mime) => part
            .mime_str(&mime)
            .map_err(|_| ApiError::invalid("The file part has an invalid content type."))?,
        None => part,
    };
    Ok((StreamedFile { fields, part }, UploadEnd(body_end)))
}

/// The parts after the file, read once it has gone by: a second file fails the upload (the
/// upstream call is cut, and [`UploadEnd`] answers `too_many_files`); text fields are read
/// through and dropped (the whole body stays within `MAX_UPLOAD_BYTES`).
fn after_the_file(
    multipart: multer::Multipart<'static>,
    end: Arc<BodyEnd>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::once(async move {
        let mut multipart = multipart;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            if file_name(&field).is_some() {
                end.too_many_files.store(true, Ordering::Release);
                return Err(std::io::Error::other(BodyRefused));
            }
            while let Ok(Some(_)) = field.chunk().await {}
        }
        Ok(bytes::Bytes::new())
    })
    .try_filter(|chunk| std::future::ready(!chunk.is_empty()))
}

/// A part's file name as Werkzeug reads its `Content-Disposition`: parameter names in any case,
/// `filename*` (RFC 5987, decoded) before `filename`; `None` makes it a text field. (multer
/// reads only a lower-case `filename`, and none once a `filename*` comes first.)
fn file_name(field: &multer::Field<'_>) -> Option<String> {
    let value = field.headers().get(header::CONTENT_DISPOSITION)?;
    disposition_file_name(&String::from_utf8_lossy(value.as_bytes()))
}

fn disposition_file_name(value: &str) -> Option<String> {
    let (mut plain, mut extended) = (None, None);
    for (name, value) in disposition_params(value) {
        if name.eq_ignore_ascii_case("filename*") {
            extended = extended.or_else(|| decode_extended(&value));
        } else if name.eq_ignore_ascii_case("filename") {
            plain = plain.or(Some(value));
        }
    }
    extended.or(plain)
}

/// The `name=value` parameters after a header value's first token, values unquoted.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = value.split_once(';').map_or("", |(_, rest)| rest);
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = at + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let next = quoted[end..].split_once(';').map_or("", |(_, next)| next);
                (value, next)
            }
            None => match after.split_once(';') {
                Some((value, next)) => (value.trim().to_owned(), next),
                None => (after.trim().to_owned(), ""),
            },
        };
        params.push((name.trim().to_owned(), value));
        rest = next;
    }
    params
}

/// An RFC 5987 value, `charset'language'percent-encoded`: UTF-8, else ISO-8859-1.
fn decode_extended(value: &str) -> Option<String> {
    let (charset, rest) = value.split_once('\'')?;
    let (_, encoded) = rest.split_once('\'')?;
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    Some(if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        bytes.into_iter().map(char::from).collect()
    })
}

/// How the upload body ended, known once the upstream call is over.
pub struct UploadEnd(Arc<BodyEnd>);

impl UploadEnd {
    /// The client's own error when the body ended early (whatever the multipart parser or the
    /// upstream call made of the broken stream), else the upstream call's `result`.
    pub fn outcome<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        match self.0.error() {
            Some(error) => Err(error),
            None => result,
        }
    }
}

#[derive(Debug)]
struct BodyRefused;

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upload body refused")
    }
}

impl std::error::Error for BodyRefused {}

/// Why the upload body ended early, if it did.
#[derive(Default)]
struct BodyEnd {
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
    /// A second file part followed the file (a gateway file upload).
    too_many_files: AtomicBool,
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

    fn error(&self) -> Option<ApiError> {
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
        } else if self.too_many_files.load(Ordering::Acquire) {
            Some(too_many_files())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::disposition_file_name;

    #[test]
    fn a_file_name_is_read_as_werkzeug_reads_it() {
        for (disposition, name) in [
            (r#"form-data; name="file"; filename="a.txt""#, Some("a.txt")),
            (r#"form-data; name="file"; FILENAME="a.txt""#, Some("a.txt")),
            (
                "form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt",
                Some("résumé.txt"),
            ),
            (
                "form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt; filename=\"resume.txt\"",
                Some("résumé.txt"),
            ),
            (
                "form-data; name=\"file\"; filename*=iso-8859-1'en'%E9t%E9.txt",
                Some("été.txt"),
            ),
            (
                r#"form-data; name="file"; filename="semi;colon \"q\".txt""#,
                Some("semi;colon \"q\".txt"),
            ),
            (r#"form-data; name="file"; filename="""#, Some("")),
            (r#"form-data; name="file""#, None),
            (r#"form-data; name="filename""#, None),
        ] {
            assert_eq!(
                disposition_file_name(disposition).as_deref(),
                name,
                "{disposition}"
            );
        }
    }
}
