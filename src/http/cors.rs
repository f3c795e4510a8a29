//! CORS for the origins in `ALLOWED_ORIGINS` (API.md §4).

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::cross_site::is_allowed;
use crate::state::AppState;

const ALLOW_METHODS: &str = "GET, POST, DELETE";
const ALLOW_HEADERS: &str = "Content-Type, X-Request-Id";
/// The Dify-compatible gateway also takes the (placeholder) bearer token Dify's SDKs send, and
/// Dify's own trace id header.
const GATEWAY_ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Request-Id, X-Trace-Id";
const EXPOSE_HEADERS: &str = "X-Request-Id, X-Stream-Id, Retry-After";
/// Seconds browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";
const VARY_PREFLIGHT: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// CORS for the configured origins only (API.md §4). An allow-listed origin gets itself echoed
/// with credentials; preflights from it get the methods and headers, cached. Any other origin
/// gets no `Access-Control-Allow-*` header at all, so the browser keeps it out.
pub struct Cors {
    /// The request's `Origin` when it is allow-listed.
    allowed_origin: Option<HeaderValue>,
    preflight: bool,
    /// The request is for the Dify-compatible gateway (`/v1/…`, `/apps/{name}/v1/…`).
    gateway: bool,
}

impl Cors {
    pub fn of(state: &AppState, request: &Request) -> Cors {
        let origin = request.headers().get(header::ORIGIN);
        let preflight = request.method() == Method::OPTIONS
            && origin.is_some()
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed_origin = origin
            .filter(|o| o.to_str().is_ok_and(|o| is_allowed(state, o)))
            .cloned();
        let path = request.uri().path();
        let gateway = path.starts_with("/v1/")
            || path
                .strip_prefix("/apps/")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(_, rest)| rest.starts_with("v1/"));
        Cors {
            allowed_origin,
            preflight,
            gateway,
        }
    }

    /// A preflight is answered here and goes no further.
    pub fn preflight(&self) -> Option<Response> {
        if !self.preflight {
            return None;
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static(VARY_PREFLIGHT));
        if let Some(origin) = &self.allowed_origin {
            allow_origin(headers, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(if self.gateway {
                    GATEWAY_ALLOW_HEADERS
                } else {
                    ALLOW_HEADERS
                }),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
        Some(response)
    }

    pub fn finish(self, state: &AppState, response: &mut Response) {
        let headers = response.headers_mut();
        if !state.config.allowed_origins.is_empty() {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(origin) = self.allowed_origin {
            allow_origin(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}
