//! Cross-site protection (API.md §4): CSRF checks on state-changing requests and the CORS
//! allow-list.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::identity::peer_ip;
use crate::state::AppState;

/// A `POST`/`DELETE` from another site (by `Origin`, or `Sec-Fetch-Site: cross-site`) that is
/// not allow-listed gets 403 before anything else runs.
pub async fn reject_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if unsafe_method && is_cross_site(&state, &request) {
        return ApiError::Forbidden("Cross-site requests are not allowed.".into()).into_response();
    }
    next.run(request).await
}

fn is_cross_site(state: &AppState, request: &Request) -> bool {
    let headers = request.headers();
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let Ok(origin) = origin.to_str() else {
                return true;
            };
            let own = own_origin(state, headers, request);
            let allowed = own.as_deref() == Some(origin)
                || state.config.allowed_origins.iter().any(|o| o == origin);
            !allowed
        }
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

/// `scheme://host` of this proxy as the browser sees it.
fn own_origin(state: &AppState, headers: &HeaderMap, request: &Request) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let https = state
        .identity
        .is_https(headers, peer_ip(request.extensions()));
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// CORS for the configured origins only; none configured means same-origin only.
pub fn cors(allowed: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}
