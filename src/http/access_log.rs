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

/// The target of the access log's lines (`RUST_LOG` filters by it; the log set-up writes
/// them on a fast path).
pub const TARGET: &str = module_path!();

/// What the log line needs from the request, taken before it is handed on.
pub struct Entry {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
    /// Whether INFO lines are written.
    log: bool,
    request_id: Option<RequestId>,
}

impl Entry {
    pub fn start(request: &Request) -> Entry {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let log = tracing::enabled!(tracing::Level::INFO);
        let request_id = log
            .then(|| request.extensions().get::<RequestId>().cloned())
            .flatten();
        Entry {
            started: Instant::now(),
            method: request.method().clone(),
            route,
            log,
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
        if !self.log {
            return;
        }
        let request_id = self.request_id.as_ref().map_or("", RequestId::as_str);
        let hash = response
            .extensions()
            .get::<Identity>()
            .map(|identity| identities.log_hash(identity));
        let identity = hash.as_ref().map_or("", |hash| hash.as_str());
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
