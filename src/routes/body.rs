//! Request bodies: JSON objects only, `application/json` only, size-limited (API.md §4).

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::server::body_timeout::is_body_timeout;
use crate::state::AppState;

/// A JSON object body. Anything else is 400, 413 or 415 before any upstream call.
pub struct JsonObject(pub Map<String, Value>);

/// Like [`JsonObject`], but a request with no body at all counts as `{}`.
pub struct OptionalJsonObject(pub Map<String, Value>);

pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn read_object(request: Request, limit: usize) -> Result<Map<String, Value>, ApiError> {
    if !is_json(request.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "The body must be sent as Content-Type: application/json.".into(),
        ));
    }
    if declared_length(request.headers()).is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let bytes = read_limited(request, limit).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("The body must be a JSON object.")),
        Err(_) => Err(ApiError::invalid("The body is not valid JSON.")),
    }
}

/// Reads a whole body up to `limit` bytes; more is 413.
pub async fn read_limited(request: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let e = &e as &(dyn std::error::Error + 'static);
            let too_large = std::iter::successors(Some(e), |err| err.source())
                .any(|err| err.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge
            } else if is_body_timeout(e) {
                ApiError::RequestTimeout
            } else {
                ApiError::invalid("The request body could not be read.")
            }
        })
}

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        read_object(request, state.config.max_body_bytes)
            .await
            .map(JsonObject)
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
        read_object(request, state.config.max_body_bytes)
            .await
            .map(OptionalJsonObject)
    }
}
