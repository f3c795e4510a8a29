//! Cross-site protection (API.md §4): CSRF checks on state-changing requests, the CORS
//! allow-list, and a cap on the request target's length.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::identity::peer_ip;
use crate::state::AppState;

/// The longest path and query accepted (a JSON 414 beyond it). Every legitimate URL is far
/// shorter; signed file URLs are about 200 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

const ALLOW_METHODS: &str = "GET, POST, DELETE";
const ALLOW_HEADERS: &str = "Content-Type, X-Request-Id";
const EXPOSE_HEADERS: &str = "X-Request-Id";
/// Seconds browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";
const VARY_PREFLIGHT: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

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

/// A `POST`/`DELETE` from another site (by `Origin`, or `Sec-Fetch-Site: cross-site`) that is
/// not allow-listed is refused before anything else runs.
pub fn refuse_cross_site(state: &AppState, request: &Request) -> Option<ApiError> {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    (unsafe_method && is_cross_site(state, request))
        .then(|| ApiError::Forbidden("Cross-site requests are not allowed.".into()))
}

fn is_cross_site(state: &AppState, request: &Request) -> bool {
    let headers = request.headers();
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let Ok(origin) = origin.to_str() else {
                return true;
            };
            let own = own_origin(state, request);
            let allowed = own
                .as_deref()
                .is_some_and(|own| own.eq_ignore_ascii_case(origin))
                || is_allowed(state, origin);
            !allowed
        }
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

fn is_allowed(state: &AppState, origin: &str) -> bool {
    state.config.allowed_origins.iter().any(|o| o == origin)
}

/// `scheme://host[:port]` of this proxy as the browser sees it: the `Host` (or, for absolute
/// request targets, the URI's authority), the scheme from a believed `X-Forwarded-Proto`, and
/// the default port left out as browsers do in `Origin`.
fn own_origin(state: &AppState, request: &Request) -> Option<String> {
    let headers = request.headers();
    let host = match headers.get(header::HOST) {
        Some(host) => host.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    let https = state
        .identity
        .is_https(headers, peer_ip(request.extensions()));
    Some(origin_of(https, host))
}

fn origin_of(https: bool, host: &str) -> String {
    let (scheme, default_port) = if https {
        ("https", ":443")
    } else {
        ("http", ":80")
    };
    let host = host.trim().to_ascii_lowercase();
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    format!("{scheme}://{host}")
}

/// CORS for the configured origins only (API.md §4). An allow-listed origin gets itself echoed
/// with credentials; preflights from it get the methods and headers, cached. Any other origin
/// gets no `Access-Control-Allow-*` header at all, so the browser keeps it out.
pub struct Cors {
    /// The request's `Origin` when it is allow-listed.
    allowed_origin: Option<HeaderValue>,
    preflight: bool,
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
        Cors {
            allowed_origin,
            preflight,
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
                HeaderValue::from_static(ALLOW_HEADERS),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_leaves_out_the_default_port_like_browsers_do() {
        assert_eq!(origin_of(false, "Chat.Example:80"), "http://chat.example");
        assert_eq!(origin_of(true, "chat.example:443"), "https://chat.example");
        assert_eq!(
            origin_of(false, "chat.example:443"),
            "http://chat.example:443"
        );
        assert_eq!(origin_of(false, "127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(origin_of(true, "[::1]:8443"), "https://[::1]:8443");
    }
}
