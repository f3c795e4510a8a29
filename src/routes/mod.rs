//! The router: one module per resource, and the layers every request passes through.

pub mod app;
pub mod apps;
pub mod audio;
pub mod chat;
pub mod chat_request;
pub mod conversations;
pub mod files;
pub mod gateway;
mod generation;
pub mod health;
pub mod messages;
mod metered;
pub mod path;
pub mod static_files;
pub mod usage;
pub mod validate;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tower::Layer;

use crate::error::ApiError;
use crate::http::front_door::{Door, FrontDoor};
use crate::http::routed::open;
use crate::state::AppState;

/// Every handler is wrapped ([`crate::http::routed`]): `user` on the routes that act for a
/// user, `open` on health, metrics, static files and the files passthrough. The front door
/// goes around the whole router.
pub fn router(state: AppState) -> Door<Router> {
    let for_users = Router::new()
        .merge(chat::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(app::router())
        .merge(files::upload_router())
        .merge(gateway::router())
        .merge(usage::router())
        .merge(audio::router());
    let per_app = for_users.merge(files::passthrough_router());

    let router = Router::new()
        .merge(served_apps(&state, per_app))
        .merge(health::router(state.config.metrics_addr.is_none()))
        .fallback(open(static_files::fallback))
        .method_not_allowed_fallback(open(method_not_allowed))
        .with_state(state.clone());
    FrontDoor::new(state).layer(router)
}

/// One app: its routes at the root. Named apps (API.md §5): the same routes under
/// `/apps/{name}` for each, `GET /apps`, the gateway at `/v1` picking the app by bearer token,
/// and the root `/files/…` when all share one origin.
fn served_apps(state: &AppState, per_app: Router<AppState>) -> Router<AppState> {
    if !state.apps.named() {
        return per_app;
    }
    let listing = apps::router()
        // Plain `/v1` with named apps: the bearer token names the app (API.md §6).
        .merge(gateway::router());
    Router::new()
        .nest(
            "/apps/{name}",
            per_app.route_layer(from_fn_with_state(state.clone(), crate::apps::resolve)),
        )
        .merge(listing)
        .merge(files::passthrough_router())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed(None)
}
