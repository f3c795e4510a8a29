//! `/healthz`, `/readyz` (Dify answers each app's key; cached per app) and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::join_all;
use serde_json::json;

use crate::apps::App;
use crate::http::routed::open;
use crate::state::AppState;
use crate::telemetry::metrics;

const READY_TTL: Duration = Duration::from_secs(5);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router(metrics_here: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(open(healthz)))
        .route("/readyz", get(open(readyz)));
    if metrics_here {
        router.route("/metrics", get(open(render_metrics)))
    } else {
        router
    }
}

/// The router of the separate `METRICS_ADDR` listener.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(render_metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": "not_ready", "message": reason, "status": 503})),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return not_ready("shutting down");
    }
    let results = join_all(state.apps.iter().map(app_ready)).await;
    if !state.apps.named() {
        return match results.into_iter().next() {
            Some((_, Err(reason))) => not_ready(&reason),
            _ => Json(json!({"status": "ready"})).into_response(),
        };
    }
    let failing: Vec<&str> = results
        .iter()
        .filter(|(_, result)| result.is_err())
        .map(|(app, _)| app.name.as_str())
        .collect();
    if failing.is_empty() {
        return Json(json!({"status": "ready"})).into_response();
    }
    let message = format!("Dify is not usable for: {}", failing.join(", "));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": "not_ready", "message": message, "status": 503, "apps": failing})),
    )
        .into_response()
}

/// One app's readiness: Dify answers `/info` with its key (cached for [`READY_TTL`]).
async fn app_ready(app: &App) -> (&App, Result<(), String>) {
    if let Some(result) = app.readiness.get(READY_TTL) {
        return (app, result);
    }
    let result = app
        .dify
        .diagnose(PROBE_TIMEOUT)
        .await
        .map_err(|reason| format!("Dify is not usable: {reason}"));
    if let Err(reason) = &result {
        tracing::warn!(app = %app.name, reason = %reason, "readiness: an app is not ready");
    }
    app.readiness.put(result.clone());
    (app, result)
}

async fn render_metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
        .into_response()
}
