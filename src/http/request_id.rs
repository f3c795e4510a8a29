//! The request id: taken from `X-Request-Id` when it is safe to pass on (Dify's `X-Trace-Id`
//! rules: 1–128 of `[A-Za-z0-9_-]`), generated otherwise; returned in the response.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Takes or makes the request's id, stores it for the handlers and returns the header value to
/// send back.
pub fn assign(request: &mut Request) -> Option<HeaderValue> {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request.headers_mut().insert(HEADER, value.clone());
    }
    request.extensions_mut().insert(RequestId(id));
    value
}

/// Returns the id assigned by [`assign`] with the response.
pub fn stamp(response: &mut Response, value: Option<HeaderValue>) {
    if let Some(value) = value {
        response.headers_mut().insert(HEADER, value);
    }
}
