//! Which peer sent a request, and the refusal of peers that may not act for users.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};

use crate::error::ApiError;
use crate::identity::IdentityPolicy;

pub fn peer_ip(request_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// In header mode, a peer outside `TRUSTED_PROXIES` is refused before anything else runs
/// (the probes excepted).
pub fn refuse_untrusted_peer(policy: &IdentityPolicy, request: &Request) -> Option<ApiError> {
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    (!probe && policy.header_mode() && !policy.trusts(peer_ip(request.extensions())))
        .then(|| ApiError::Unauthorized("This peer may not act for users.".into()))
}
