//! Response builders with Dify 0.15.3's bytes and headers.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, HeaderName, HeaderValue, VARY};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::pyjson::python_json;

pub(crate) const SERVER_VERSION: &str = "0.15.3";

/// Werkzeug's 404 page (capture 65), 207 bytes.
pub(crate) const NOT_FOUND_HTML: &str = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n";

pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn bytes_response(
    code: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status(code);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The framework writer (flask-restful `output_json`): `json.dumps` plus a trailing newline.
pub(crate) fn json_response(code: u16, v: &Value) -> Response {
    bytes_response(code, "application/json", format!("{}\n", python_json(v)))
}

/// Werkzeug's HTML 404, used for unknown routes and path ids that fail their converter.
pub(crate) fn not_found_page() -> Response {
    bytes_response(404, "text/html; charset=utf-8", NOT_FOUND_HTML)
}

/// The routing 405 (capture 66), with Werkzeug's `Allow` list.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    let body = serde_json::json!({
        "code": "method_not_allowed",
        "message": "The method is not allowed for the requested URL.",
        "status": 405,
    });
    let mut resp = json_response(405, &body);
    resp.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `X-Version` and `X-Env`, which Dify adds to every response of the app.
pub(crate) fn add_version_headers(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("x-version"),
        HeaderValue::from_static(SERVER_VERSION),
    );
    headers.insert(
        HeaderName::from_static("x-env"),
        HeaderValue::from_static("PRODUCTION"),
    );
}

/// flask-cors on a routed response: `*` without an `Origin`, otherwise the origin echoed.
pub(crate) fn add_cors_headers(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    match origin {
        Some(origin) => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                HeaderName::from_static("access-control-expose-headers"),
                HeaderValue::from_static("X-Env, X-Version"),
            );
            headers.insert(VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
}

/// A CORS preflight as flask-cors answers it (capture 64).
pub(crate) fn preflight(allow: &'static str, request: &HeaderMap) -> Response {
    let mut resp = bytes_response(200, "text/html; charset=utf-8", Bytes::new());
    let headers = resp.headers_mut();
    headers.insert(http::header::ALLOW, HeaderValue::from_static(allow));
    let origin = request
        .get(http::header::ORIGIN)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(requested) = request
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        let echoed: Vec<String> = requested
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Ok(v) = HeaderValue::from_str(&echoed.join(", ")) {
            headers.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
    }
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("DELETE, GET, OPTIONS, PATCH, POST, PUT"),
    );
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_404_page_has_werkzeugs_length() {
        assert_eq!(NOT_FOUND_HTML.len(), 207);
    }
}
