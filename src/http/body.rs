//! Request bodies: JSON objects only, `application/json` only, size-limited (API.md §4).

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::server::body_timeout::is_body_timeout;
use crate::state::AppState;

/// A JSON object body. Anything else is 400, 413 or 415 before any upstream call.
pub struct JsonObject(pub Map<String, Value>);

/// A JSON body's bytes, refused like [`JsonObject`]'s (type, size) but left for the route to
/// parse, with the same errors, into a type that borrows from them.
pub struct JsonBytes(pub Bytes);

/// Like [`JsonObject`], but a request with no body at all counts as `{}`.
pub struct OptionalJsonObject(pub Map<String, Value>);

pub fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let bytes = value.as_bytes();
        // Only a value `to_str` takes: visible ASCII and tabs.
        let text = bytes
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
        let essence = bytes.split(|&b| b == b';').next().unwrap_or_default();
        text && essence
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/json")
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn read_json(
    request: Request,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Bytes, ApiError> {
    if !is_json(request.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "The body must be sent as Content-Type: application/json.".into(),
        ));
    }
    if declared_length(request.headers()).is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    read_limited(request, limit, budget).await
}

async fn read_object(
    request: Request,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_json(request, limit, budget).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("The body must be a JSON object.")),
        Err(_) => Err(ApiError::invalid("The body is not valid JSON.")),
    }
}

/// Reads a whole body up to `limit` bytes (more is 413), each byte charged to `budget`, the
/// bytes all requests may hold at once (none left is 503). The pieces are copied: each piece
/// the connection hands over keeps its whole read buffer alive, so a body trickling in byte by
/// byte would otherwise hold kilobytes per byte.
pub async fn read_limited(
    request: Request,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Bytes, ApiError> {
    let mut body = request.into_body();
    // A body that arrives in one frame (the usual small JSON body) is kept as it came; only a
    // second frame starts a copy.
    let mut first: Option<Bytes> = None;
    let mut bytes = BytesMut::new();
    let mut len = 0;
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if len + data.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        let charge = u32::try_from(data.len()).map_err(|_| ApiError::PayloadTooLarge)?;
        let permit = Arc::clone(budget)
            .try_acquire_many_owned(charge)
            .map_err(|_| ApiError::Overloaded {
                retry_after_secs: 1,
            })?;
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        len += data.len();
        if len == data.len() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            bytes.reserve(len);
            bytes.extend_from_slice(&first);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| bytes.freeze()))
}

fn read_error(e: &axum::Error) -> ApiError {
    let e = e as &(dyn std::error::Error + 'static);
    if is_body_timeout(e) {
        ApiError::RequestTimeout
    } else {
        ApiError::invalid("The request body could not be read.")
    }
}

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        read_object(request, state.config.max_body_bytes, &state.body_budget)
            .await
            .map(JsonObject)
    }
}

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        read_json(request, state.config.max_body_bytes, &state.body_budget)
            .await
            .map(JsonBytes)
    }
}

impl FromRequest<AppState> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let no_body = headers.get(header::CONTENT_TYPE).is_none()
            && declared_length(headers).unwrap_or(0) == 0
            && headers.get(header::TRANSFER_ENCODING).is_none();
        if no_body {
            return Ok(OptionalJsonObject(Map::new()));
        }
        read_object(request, state.config.max_body_bytes, &state.body_budget)
            .await
            .map(OptionalJsonObject)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn typed(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers
    }

    #[test]
    fn json_is_the_essence_application_json_in_any_case() {
        for json in [
            &b"application/json"[..],
            b"Application/JSON; charset=utf-8",
            b" application/json\t;x=y",
        ] {
            assert!(is_json(&typed(json)), "{json:?}");
        }
        for other in [
            &b"application/jsonx"[..],
            b"text/plain",
            b"application/json; charset=\xe9",
            b"",
        ] {
            assert!(!is_json(&typed(other)), "{other:?}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
