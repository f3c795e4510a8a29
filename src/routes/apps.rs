//! `GET /apps` (named apps only): each app's name with the title, description and mode of its
//! Dify `/info` (cached like the settings), for the page's app picker. Never a key or a URL.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;

use super::app::cached;
use crate::apps::App;
use crate::dify::Caller;
use crate::http::routed::user;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/apps", get(user(list)))
}

#[derive(Serialize)]
pub struct Listed {
    name: String,
    title: String,
    description: String,
    mode: Option<String>,
}

#[derive(Serialize)]
pub struct AppList {
    data: Vec<Listed>,
}

async fn list(State(state): State<AppState>, caller: Caller) -> Json<AppList> {
    let data = join_all(state.apps.iter().map(|app| describe(app, &caller))).await;
    Json(AppList { data })
}

/// An app whose `/info` fails is still listed, titled with its name: one app's outage does
/// not hide the others.
async fn describe(app: &App, caller: &Caller) -> Listed {
    let info: Value = match cached(app, caller, "info").await {
        Ok((status, body)) if status.is_success() => {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        }
        Ok(_) => Value::Null,
        Err(error) => {
            tracing::warn!(app = %app.name, error = %error, "GET /apps: the app's /info failed");
            Value::Null
        }
    };
    let text = |field: &str| {
        info.get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Listed {
        name: app.name.clone(),
        title: text("name").unwrap_or_else(|| app.name.clone()),
        description: text("description").unwrap_or_default(),
        mode: text("mode"),
    }
}
