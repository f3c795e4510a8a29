//! The router: one module per resource, and the layers every request passes through.

pub mod app;
pub mod audio;
pub mod chat;
pub mod chat_request;
pub mod conversations;
pub mod files;
pub mod health;
pub mod messages;
pub mod static_files;
pub mod validate;

use axum::Router;
use axum::middleware::from_fn_with_state;

use crate::error::ApiError;
use crate::identity;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let for_users = Router::new()
        .merge(chat::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(app::router())
        .merge(files::upload_router())
        .merge(audio::router())
        .route_layer(from_fn_with_state(state.clone(), identity::resolve));

    Router::new()
        .merge(for_users)
        .merge(files::passthrough_router())
        .merge(health::router(state.config.metrics_addr.is_none()))
        .fallback(static_files::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(
            state.clone(),
            crate::http::front_door::front_door,
        ))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
