//! `/healthz`, `/readyz` (Dify answers with our key; cached) and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;
use crate::telemetry::metrics;

const READY_TTL: Duration = Duration::from_secs(5);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router(metrics_here: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if metrics_here {
        router.route("/metrics", get(render_metrics))
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
    let cached = state.readiness.get(READY_TTL);
    let result = match cached {
        Some(result) => result,
        None => {
            let result = state
                .dify
                .diagnose(PROBE_TIMEOUT)
                .await
                .map_err(|reason| format!("Dify is not usable: {reason}"));
            state.readiness.put(result.clone());
            result
        }
    };
    match result {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => not_ready(&reason),
    }
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
