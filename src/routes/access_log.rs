//! One log line and the request metrics per request: method, route, status, latency, a short
//! hash of the identity and the request id. Never the key, cookies or message contents.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::identity::Identity;
use crate::request_id::RequestId;
use crate::telemetry::metrics;

pub async fn log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let log = tracing::enabled!(tracing::Level::INFO);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .filter(|_| log)
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::request(method.as_str(), &route, status, elapsed);
    if !log {
        return response;
    }
    let identity = response
        .extensions()
        .get::<Identity>()
        .map(Identity::log_hash)
        .unwrap_or_default();
    tracing::info!(
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        identity = %identity,
        request_id = %request_id,
        "request"
    );
    response
}
