//! The one middleware every request passes through (one layer rather than one per concern:
//! each `from_fn` layer costs a boxed future and a service clone per request). In order: the
//! request id, the access log, the refusals that need no handler (a too-long target, a peer
//! that may not act for users, a cross-site write), then CORS: a refused peer gets no preflight.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::cors::Cors;
use super::{access_log, cross_site, peer_trust, request_id, request_line};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn front_door(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = request_id::assign(&mut request);
    let log = access_log::Entry::start(&request);
    let mut response = answer(&state, request, next).await;
    log.finish(&response, &state.apps);
    request_id::stamp(&mut response, request_id);
    response
}

/// A refusal (with CORS headers, so an allowed page can read it), a preflight's answer, or
/// the handler's response.
async fn answer(state: &AppState, request: Request, next: Next) -> Response {
    let cors = Cors::of(state, &request);
    let mut response = match refusal(state, &request) {
        Some(error) => error.into_response(),
        None => {
            if let Some(preflight) = cors.preflight() {
                return preflight;
            }
            next.run(request).await
        }
    };
    cors.finish(state, &mut response);
    response
}

fn refusal(state: &AppState, request: &Request) -> Option<ApiError> {
    request_line::refuse_long_uri(request)
        .or_else(|| request_line::refuse_duplicate_host(request))
        .or_else(|| peer_trust::refuse_untrusted_peer(&state.identity, request))
        .or_else(|| cross_site::refuse_cross_site(state, request))
}
