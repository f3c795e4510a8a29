//! One log line and the request metrics per request: method, route, app, status, latency, a
//! short hash of the identity and the request id. Never the key, cookies or message contents.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;

use super::request_id::RequestId;
use crate::apps::Apps;
use crate::identity::{Identity, IdentityPolicy};
use crate::telemetry::metrics;

/// What the log line needs from the request, taken before it is handed on.
pub struct Entry {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
    /// Set only when INFO lines are written.
    request_id: Option<String>,
}

impl Entry {
    pub fn start(request: &Request) -> Entry {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let request_id = tracing::enabled!(tracing::Level::INFO).then(|| {
            request
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default()
        });
        Entry {
            started: Instant::now(),
            method: request.method().clone(),
            route,
            request_id,
        }
    }

    pub fn finish(self, response: &Response, identities: &IdentityPolicy, apps: &Apps) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = match &self.route {
            Some(route) => route.as_str(),
            // The static fallback has no route: a read it answered is the page or its assets.
            None if matches!(self.method, Method::GET | Method::HEAD) && status < 400 => "page",
            None => "unmatched",
        };
        let app = apps.label(response);
        metrics::request(&self.method, route, app, status, elapsed);
        let Some(request_id) = self.request_id else {
            return;
        };
        let identity = response
            .extensions()
            .get::<Identity>()
            .map(|identity| identities.log_hash(identity))
            .unwrap_or_default();
        tracing::info!(
            method = %self.method,
            route = %route,
            app = %app,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            identity = %identity,
            request_id = %request_id,
            "request"
        );
    }
}
