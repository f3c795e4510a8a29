//! The single entry point: record the request, play a script if one is queued for it (after
//! the key check), otherwise route it the way Dify 0.15.3 does.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::{HOST, LOCATION, ORIGIN};

use super::ctx::Ctx;
use super::errors::ApiError;
use super::play::play;
use super::record::RecordingBody;
use super::reqparse::QueryArgs;
use super::respond::{
    add_cors_headers, add_version_headers, bytes_response, method_not_allowed, not_found_page,
    preflight,
};
use super::routing::{Resolved, Route, resolve};
use super::state::Shared;
use super::{app_info, audio, auth, chat, conversations, files, messages, runs};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// The key scripts are queued under: the path below `/v1`, or the whole path elsewhere.
pub(crate) fn script_key(path: &str) -> &str {
    match path.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let id = shared.journal.begin(&parts);
    let body = RecordingBody::new(shared.clone(), id, body);
    let path = parts.uri.path().to_owned();
    let method = parts.method.as_str().to_owned();
    let resolved = resolve(&parts.method, &path);
    let key = script_key(&path);

    if shared.has_script(&method, key) {
        let public = match &resolved {
            Resolved::Route(route) => route.is_public(),
            Resolved::Preflight(_) => true,
            _ => path.starts_with("/files/"),
        };
        let bytes = body.collect().await;
        if !public && let Err(e) = auth::check(&parts.headers, &shared.opts.api_key) {
            return finish(e.into_response(), &parts.headers);
        }
        if let Some(reply) = shared.take_script(&method, key) {
            return play(shared, reply).await;
        }
        return routed(shared, parts, resolved, Incoming::Read(bytes)).await;
    }
    routed(shared, parts, resolved, Incoming::Streaming(body)).await
}

/// The request body: still arriving, or already read while looking for a script.
enum Incoming {
    Streaming(RecordingBody),
    Read(bytes::Bytes),
}

impl Incoming {
    async fn bytes(self) -> bytes::Bytes {
        match self {
            Incoming::Streaming(body) => body.collect().await,
            Incoming::Read(bytes) => bytes,
        }
    }
}

async fn routed(
    shared: Arc<Shared>,
    parts: http::request::Parts,
    resolved: Resolved,
    body: Incoming,
) -> Response {
    let route = match resolved {
        Resolved::Route(route) => route,
        other => {
            body.bytes().await;
            let mut resp = match other {
                Resolved::Preflight(allow) => preflight(allow, &parts.headers),
                Resolved::MethodNotAllowed(allow) => method_not_allowed(allow),
                Resolved::AddSlash => add_slash(&parts.headers),
                _ => not_found_page(),
            };
            add_version_headers(resp.headers_mut());
            return resp;
        }
    };
    let resp = handle(shared, &parts, route, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    finish(resp, &parts.headers)
}

/// The headers Dify adds to every routed response.
fn finish(mut resp: Response, request: &http::HeaderMap) -> Response {
    add_cors_headers(resp.headers_mut(), request.get(ORIGIN));
    add_version_headers(resp.headers_mut());
    resp
}

async fn handle(
    shared: Arc<Shared>,
    parts: &http::request::Parts,
    route: Route,
    body: Incoming,
) -> Result<Response, ApiError> {
    if !route.is_public()
        && let Err(e) = auth::check(&parts.headers, &shared.opts.api_key)
    {
        body.bytes().await;
        return Err(e);
    }
    if route == Route::FilesUpload {
        return match body {
            Incoming::Streaming(body) => files::upload(shared, &parts.headers, body).await,
            Incoming::Read(bytes) => {
                let replay = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]);
                files::upload(shared, &parts.headers, replay).await
            }
        };
    }
    if route == Route::AudioToText {
        return match body {
            Incoming::Streaming(body) => audio::audio_to_text(shared, &parts.headers, body).await,
            Incoming::Read(bytes) => {
                let replay = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]);
                audio::audio_to_text(shared, &parts.headers, replay).await
            }
        };
    }
    let ctx = Ctx {
        shared: shared.clone(),
        headers: parts.headers.clone(),
        query: QueryArgs::parse(parts.uri.query()),
        body: body.bytes().await,
    };
    let opts = &shared.opts;
    match route {
        Route::Index => Ok(app_info::index()),
        Route::Parameters => Ok(app_info::parameters(opts)),
        Route::Meta => Ok(app_info::meta()),
        Route::Info => Ok(app_info::info(opts)),
        Route::ChatMessages => chat::chat_messages(ctx).await,
        Route::ChatStop(task_id) => chat::stop(ctx, &task_id),
        Route::Conversations => conversations::list(ctx),
        Route::ConversationDelete(id) => conversations::delete(ctx, &id),
        Route::ConversationName(id) => conversations::rename(ctx, &id),
        Route::Messages => messages::list(ctx),
        Route::MessageFeedbacks(id) => messages::feedback(ctx, &id),
        Route::MessageSuggested(id) => messages::suggested(ctx, &id),
        Route::FilePreview(id, kind) => files::preview(ctx, &id, kind),
        Route::ToolFile { id, extension } => files::tool_file(ctx, &id, &extension),
        Route::CompletionMessages => runs::completion(ctx).await,
        Route::WorkflowsRun => runs::workflow(ctx).await,
        Route::CompletionStop(task_id) | Route::WorkflowStop(task_id) => runs::stop(ctx, &task_id),
        Route::ConversationVariables(id) => conversations::variables(ctx, &id),
        Route::TextToAudio => audio::text_to_audio(ctx),
        Route::Site if opts.webapp_site => Ok(app_info::site(opts)),
        Route::Site => Ok(not_found_page()),
        Route::ServiceFilePreview(id) => files::service_preview(ctx, &id),
        Route::FilesUpload | Route::AudioToText => Err(ApiError::Unknown),
    }
}

/// Werkzeug's strict-slashes redirect from `/v1` to `/v1/`.
fn add_slash(headers: &http::HeaderMap) -> Response {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let target = format!("http://{host}/v1/");
    let body = format!(
        "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: <a href=\"{target}\">{target}</a>. If not, click the link.\n"
    );
    let mut resp = bytes_response(308, "text/html; charset=utf-8", body);
    if let Ok(location) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(LOCATION, location);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_keys_are_paths_below_v1() {
        assert_eq!(script_key("/v1/chat-messages"), "/chat-messages");
        assert_eq!(script_key("/v1/"), "/");
        assert_eq!(script_key("/files/x/file-preview"), "/files/x/file-preview");
        assert_eq!(script_key("/v1x/y"), "/v1x/y");
    }
}
