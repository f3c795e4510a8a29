//! `GET /usage`: the caller's tokens today against `TOKEN_BUDGET_PER_DAY` (API.md §7).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::dify::Caller;
use crate::http::routed::user;
use crate::state::AppState;
use crate::state::shared::UsageReport;

pub fn router() -> Router<AppState> {
    Router::new().route("/usage", get(user(usage)))
}

async fn usage(State(state): State<AppState>, caller: Caller) -> Json<UsageReport> {
    Json(state.shared.usage(&caller.user).await)
}
