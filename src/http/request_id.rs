//! The request id: taken from `X-Request-Id` when it is safe to pass on (Dify's `X-Trace-Id`
//! rules: 1–128 of `[A-Za-z0-9_-]`), generated otherwise; returned in the response.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use crate::identity::Identity;

pub const HEADER: &str = "x-request-id";
/// As a `HeaderName` constant: inserting by `&str` would copy a non-standard name per call.
const NAME: HeaderName = HeaderName::from_static(HEADER);

/// The id as the header value it is sent in (to the browser and, as `X-Trace-Id`, to Dify):
/// cloning it shares the bytes rather than copying them. The request's identity is kept
/// beside it once decided: an extension of its own would be one more allocation, and often
/// the one that regrows the request's extension map.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue, pub Option<Identity>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ids that pass `is_valid` (ASCII) or that we generate are ever stored.
        self.0.to_str().unwrap_or_default()
    }
}

pub fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Takes or makes the request's id, stores it for the handlers and returns the header value to
/// send back.
pub fn assign(request: &mut Request) -> Option<HeaderValue> {
    let given = request
        .headers()
        .get(NAME)
        .filter(|v| v.to_str().is_ok_and(is_valid))
        .cloned();
    let value = match given {
        Some(value) => value,
        None => {
            let mut text = [0u8; uuid::fmt::Simple::LENGTH];
            uuid::Uuid::new_v4().simple().encode_lower(&mut text);
            // Owned by the `Bytes` in one allocation, which its clones share (a copied `str`
            // takes a second one at the first clone).
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)).ok()?
        }
    };
    request
        .extensions_mut()
        .insert(RequestId(value.clone(), None));
    Some(value)
}

/// Returns the id assigned by [`assign`] with the response.
pub fn stamp(response: &mut Response, value: Option<HeaderValue>) {
    if let Some(value) = value {
        response.headers_mut().insert(NAME, value);
    }
}
