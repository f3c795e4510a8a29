//! Cross-site refusal (API.md §4): a state-changing request from another site that is not
//! allow-listed reaches nothing.

use axum::extract::Request;
use axum::http::{HeaderName, Method, header};

use super::peer_trust::peer_ip;
use crate::error::ApiError;
use crate::state::AppState;

/// A `HeaderName` constant: a lookup by `&str` parses and checks the name on every call.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

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
            .get(SEC_FETCH_SITE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

pub fn is_allowed(state: &AppState, origin: &str) -> bool {
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
