//! Which Dify app a request is for (API.md §5). Each configured app has its own client (its
//! key and base URL), its settings cache and its readiness. With one app (`DIFY_API_KEY`) every
//! request is for it; with named apps (`DIFY_APPS`) the routes live under `/apps/{name}` and
//! [`resolve`] picks the app from the path. Handlers take an [`App`] and call `app.dify`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::Config;
use crate::dify::DifyClient;
use crate::error::ApiError;
use crate::http::routed;
use crate::state::AppState;
use crate::state::caches::{Readiness, SettingsCache};

/// One app as served: never holds its key other than inside its client.
pub struct ServedApp {
    pub name: String,
    pub dify: Arc<DifyClient>,
    /// `/parameters`, `/info`, `/meta`, the same for every user of this app.
    pub settings: SettingsCache,
    pub readiness: Readiness,
}

/// Every app, in the configured order.
pub struct Apps {
    all: Vec<App>,
    named: bool,
}

impl Apps {
    pub fn new(config: &Config) -> Result<Apps, ApiError> {
        let all = config
            .apps
            .apps
            .iter()
            .map(|app| {
                Ok(App(Arc::new(ServedApp {
                    name: app.name.clone(),
                    dify: Arc::new(DifyClient::new(config, app)?),
                    settings: SettingsCache::default(),
                    readiness: Readiness::default(),
                })))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Apps {
            all,
            named: config.apps.named,
        })
    }

    /// Named apps are served under `/apps/{name}`; otherwise the one app is at the root.
    pub fn named(&self) -> bool {
        self.named
    }

    pub fn get(&self, name: &str) -> Option<&App> {
        self.all.iter().find(|app| app.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.all.iter()
    }

    /// The app of the root routes: the one app, when apps are not named.
    pub fn root(&self) -> Option<&App> {
        if self.named { None } else { self.all.first() }
    }

    /// The app whose signed file URLs the root `/files/…` serves: the one app, or any named
    /// app when all of them share one Dify origin (a signed URL is not tied to a key).
    pub fn root_files(&self) -> Option<&App> {
        let first = self.all.first()?;
        let shared = self
            .all
            .iter()
            .all(|app| app.dify.origin() == first.dify.origin());
        shared.then_some(first)
    }

    /// The app label of a request's metrics and log line: the app its response carries (the
    /// path's, or the one a gateway call's bearer token named), else the one app, else empty.
    /// Only configured names: a name a client sends that is no app labels nothing.
    pub fn label<'a>(&'a self, response: &'a Response) -> &'a str {
        match response.extensions().get::<App>() {
            Some(app) => &app.name,
            None => self.root().map_or("", |app| app.name.as_str()),
        }
    }
}

/// The app of this request (an extractor): the one app, or the one `/apps/{name}` names.
#[derive(Clone)]
pub struct App(pub Arc<ServedApp>);

impl std::ops::Deref for App {
    type Target = ServedApp;
    fn deref(&self) -> &ServedApp {
        &self.0
    }
}

impl FromRequestParts<AppState> for App {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<App, ApiError> {
        if let Some(app) = parts.extensions.get::<App>() {
            return Ok(app.clone());
        }
        state
            .apps
            .root()
            .cloned()
            .ok_or_else(|| ApiError::NotFound("No such app.".into()))
    }
}

#[derive(Deserialize)]
pub struct AppPath {
    name: String,
}

/// The `/apps/{name}` routes' layer: an unknown name is 404 `not_found` and reaches nothing;
/// a known one is the request's [`App`] (and labels its response for the access log). A
/// request the front door answered goes on to its handler's wrapper, which only notes its route.
pub async fn resolve(
    State(state): State<AppState>,
    route: Option<MatchedPath>,
    name: Result<Path<AppPath>, PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<routed::Answered>().is_some() {
        return next.run(request).await;
    }
    let found = match name {
        Ok(Path(AppPath { name })) => state
            .apps
            .get(&name)
            .cloned()
            .ok_or_else(|| unknown_app().into_response()),
        Err(rejection) => Err(rejection.into_response()),
    };
    let app = match found {
        Ok(app) => app,
        Err(refused) => {
            routed::record_route(route);
            return refused;
        }
    };
    request.extensions_mut().insert(app.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(app);
    response
}

pub fn unknown_app() -> ApiError {
    ApiError::NotFound("No such app.".into())
}
