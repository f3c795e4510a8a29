//! Refusals read from the request line and headers alone, before anything else looks at them.

use axum::extract::Request;
use axum::http::header;

use crate::error::ApiError;

/// The longest path and query accepted (a JSON 414 beyond it). Every legitimate URL is far
/// shorter; signed file URLs are about 200 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A request target longer than [`MAX_URI_BYTES`] is refused before anything else looks at it.
pub fn refuse_long_uri(request: &Request) -> Option<ApiError> {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    (length > MAX_URI_BYTES).then_some(ApiError::UriTooLong)
}

/// Two `Host` headers leave the proxy's own origin (and so the cross-site check) ambiguous.
pub fn refuse_duplicate_host(request: &Request) -> Option<ApiError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    (hosts.next().is_some() && hosts.next().is_some())
        .then(|| ApiError::invalid("The request has more than one Host header."))
}
