//! The Dify-compatible gateway (API.md §6): `/v1/{path}` speaks Dify's Service API for end
//! users, so Dify's SDKs and existing Dify clients work by changing only their base URL.
//!
//! Only the end-user endpoints exist ([`Endpoint::parse`]); every other path is 404 and reaches
//! no upstream. The `user` Dify sees is always the caller's identity (pinned by the client in
//! `dify/client/passthrough.rs`); the client's `Authorization` is never read or forwarded.
//! Answers are Dify's: JSON, audio and files as sent, event streams through the relay. A
//! generation's tokens count against the caller's budget (API.md §7), as on `POST /chat`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;

use super::chat::sse_response;
use super::files::{ACTIVE_FILE_CSP, can_run_script};
use super::generation::answered_in_time;
use super::metered::Metered;
use super::validate;
use crate::apps::App;
use crate::dify::Caller;
use crate::dify::client::{Outgoing, Passed, StopKind, StreamSetup};
use crate::error::ApiError;
use crate::http::body::OptionalJsonObject;
use crate::http::multipart::{self, Missing};
use crate::http::routed::user;
use crate::state::AppState;
use crate::state::shared::usage_sink;

/// The gateway's routes. Mounted at the root for one app; it reads its path from the request
/// URI below the mount point, so it can be nested (e.g. under `/apps/{name}`) unchanged.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1", any(user(gateway)))
        .route("/v1/", any(user(gateway)))
        .route("/v1/{*path}", any(user(gateway)))
}

/// The app a gateway call goes to, as [`gateway_app`] picks it.
pub struct Picked {
    pub app: App,
    /// Whether the bearer token named it. No route did then, so the response carries it for
    /// its metrics label and log line ([`crate::apps::Apps::label`]).
    pub by_bearer: bool,
}

/// The app a gateway call goes to: the one place it is chosen. With one app it is the only
/// one, whatever bearer token (or none) the client sends, so SDKs that insist on a key work
/// with a placeholder. (With several apps: the `/apps/{name}` of the route, or the app named by
/// the bearer token; an unknown name is 401 `unauthorized`.)
pub fn gateway_app(state: &AppState, request: &Request) -> Result<Picked, ApiError> {
    let routed = |app: &App| Picked {
        app: app.clone(),
        by_bearer: false,
    };
    if let Some(app) = request.extensions().get::<App>() {
        return Ok(routed(app));
    }
    if let Some(app) = state.apps.root() {
        return Ok(routed(app));
    }
    let named = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, name)| state.apps.get(name.trim()));
    match named {
        Some(app) => Ok(Picked {
            app: app.clone(),
            by_bearer: true,
        }),
        None => Err(ApiError::Unauthorized(
            "Name the app in the bearer token: Authorization: Bearer <app name>.".into(),
        )),
    }
}

/// How the client's request is read and sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carries {
    /// A `GET`: the query string, with `user` pinned.
    Query,
    /// A JSON body (none counts as `{}`), with `user` pinned at the top level.
    Json,
    /// A multipart form with a `file` part, streamed, with `user` pinned.
    Multipart,
}

/// What the gateway does beyond passing the call through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limits {
    None,
    /// A generation: the `POST /chat` rate limit, a stream slot, and this stop on disconnect.
    Generation(StopKind),
    /// A re-attached workflow run: a stream slot, no stop (the run is not this request's).
    Events,
    /// Calls that make Dify spend tokens or storage: the assist rate limit.
    Assist,
}

/// One allowed Dify endpoint, resolved from the method and the raw (undecoded) path.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    method: Method,
    /// The path below `/v1`, as sent to Dify.
    path: String,
    carries: Carries,
    limits: Limits,
}

impl Endpoint {
    /// The end-user surface of Dify's Service API. The path is matched segment by segment on
    /// its raw form, so `..`, `%2F`, empty segments and anything else that is not exactly one
    /// of these shapes is 404, as is an id that is not a UUID; task ids must be
    /// `[A-Za-z0-9-]{1,64}` (400).
    fn parse(method: &Method, raw_path: &str) -> Result<Endpoint, ApiError> {
        let not_found = || ApiError::NotFound("No such Dify API route on this gateway.".into());
        // Dify's routes take ids through Werkzeug's UUID converter: any other id is no route.
        let uuid_segment = |id: &str| {
            if validate::is_uuid(id) {
                Ok(())
            } else {
                Err(not_found())
            }
        };
        let rest = raw_path.strip_prefix("/v1/").ok_or_else(not_found)?;
        let segments: Vec<&str> = rest.split('/').collect();
        use Carries::{Json, Multipart, Query};
        use Limits::{Assist, Events, Generation};
        let get = Method::GET;
        let post = Method::POST;
        let (allowed, carries, limits) = match segments.as_slice() {
            ["chat-messages"] => (post, Json, Generation(StopKind::Chat)),
            ["completion-messages"] => (post, Json, Generation(StopKind::Completion)),
            ["workflows", "run"] => (post, Json, Generation(StopKind::Workflow)),
            ["chat-messages", task, "stop"]
            | ["completion-messages", task, "stop"]
            | ["workflows", "tasks", task, "stop"] => {
                validate::task_id(task)?;
                (post, Json, Limits::None)
            }
            ["workflow", run_id, "events"] => {
                uuid_segment(run_id)?;
                (get, Query, Events)
            }
            ["conversations"] | ["messages"] => (get, Query, Limits::None),
            ["conversations", id] => {
                uuid_segment(id)?;
                (Method::DELETE, Json, Limits::None)
            }
            ["conversations", id, "name"] => {
                uuid_segment(id)?;
                (post, Json, Limits::None)
            }
            ["conversations", id, "variables"] => {
                uuid_segment(id)?;
                (get, Query, Limits::None)
            }
            ["messages", id, "feedbacks"] => {
                uuid_segment(id)?;
                (post, Json, Limits::None)
            }
            ["messages", id, "suggested"] => {
                uuid_segment(id)?;
                (get, Query, Assist)
            }
            ["files", "upload"] | ["audio-to-text"] => (post, Multipart, Assist),
            ["files", id, "preview"] => {
                uuid_segment(id)?;
                (get, Query, Limits::None)
            }
            ["text-to-audio"] => (post, Json, Assist),
            ["parameters"] | ["info"] | ["meta"] | ["site"] => (get, Query, Limits::None),
            _ => return Err(not_found()),
        };
        // As in Flask, a GET route answers HEAD: Dify's answer without its body.
        if *method != allowed && !(*method == Method::HEAD && allowed == Method::GET) {
            return Err(ApiError::MethodNotAllowed(Some(allow(&allowed))));
        }
        Ok(Endpoint {
            method: allowed,
            path: rest.to_owned(),
            carries,
            limits,
        })
    }
}

/// The `Allow` header of a 405 from a route that takes `method`.
fn allow(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET, HEAD",
        Method::DELETE => "DELETE",
        _ => "POST",
    }
}

/// The gateway's handler: [`gateway_call`]'s answer, labelled with the app when the bearer token
/// picked it (whatever the answer, as `/apps/{name}` labels all of its own). An unknown name
/// picks none: the 401 keeps the empty label, so a client cannot add label values.
async fn gateway(State(state): State<AppState>, caller: Caller, request: Request) -> Response {
    let picked = gateway_app(&state, &request);
    let label = match &picked {
        Ok(Picked {
            app,
            by_bearer: true,
        }) => Some(app.clone()),
        _ => None,
    };
    let mut response = gateway_call(state, caller, request, picked)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(app) = label {
        response.extensions_mut().insert(app);
    }
    response
}

/// One gateway call to the `picked` app. A path off the end-user surface is 404 whatever the
/// bearer token names.
async fn gateway_call(
    state: AppState,
    mut caller: Caller,
    request: Request,
    picked: Result<Picked, ApiError>,
) -> Result<Response, ApiError> {
    let mut endpoint = Endpoint::parse(request.method(), request.uri().path())?;
    let client = Arc::clone(&picked?.app.dify);
    let query = query_params(request.uri().query());
    let mut trace_id = clients_trace_id(request.headers(), &query);
    let outgoing = match endpoint.carries {
        Carries::Query => Outgoing::Query(query),
        Carries::Json => {
            let OptionalJsonObject(body) =
                OptionalJsonObject::from_request(request, &state).await?;
            trace_id = trace_id.or_else(|| {
                body.get("trace_id")
                    .and_then(Value::as_str)
                    .and_then(trace_header)
            });
            if endpoint.path.ends_with("/name") && generates_a_name(body.get("auto_generate")) {
                endpoint.limits = Limits::Assist;
            }
            Outgoing::Json(body)
        }
        Carries::Multipart => {
            if let Some(trace_id) = trace_id.take() {
                caller.trace_id = Some(trace_id);
            }
            let boundary = multipart::boundary(request.headers(), state.config.max_upload_bytes)?;
            state.assist_rate.check(&caller.user).await?;
            let missing = match endpoint.path.as_str() {
                "audio-to-text" => Missing::Audio,
                _ => Missing::File,
            };
            let (file, end) =
                multipart::file_part(&state, boundary, request.into_body(), missing).await?;
            let result = client
                .pass_through(
                    caller,
                    endpoint.method,
                    &endpoint.path,
                    Outgoing::Form(file.fields, Box::new(file.part)),
                    None,
                )
                .await;
            return Ok(respond(end.outcome(result)?));
        }
    };
    if let Some(trace_id) = trace_id {
        caller.trace_id = Some(trace_id);
    }
    let stream = match endpoint.limits {
        Limits::None => None,
        Limits::Assist => {
            state.assist_rate.check(&caller.user).await?;
            None
        }
        Limits::Generation(_) | Limits::Events => {
            if state.is_draining() {
                return Err(ApiError::ShuttingDown);
            }
            if matches!(endpoint.limits, Limits::Generation(_)) {
                state.shared.check_budget(&caller.user).await?;
                state.rate.check(&caller.user).await?;
            }
            Some(StreamSetup {
                slot: state.shared.acquire_stream(&caller.user).await?,
                stop: match endpoint.limits {
                    Limits::Generation(kind) => Some(kind),
                    _ => None,
                },
                shutdown: state.streams_cancel.clone().cancelled_owned(),
            })
        }
    };
    if !matches!(endpoint.limits, Limits::Generation(_)) {
        let passed = client
            .pass_through(caller, endpoint.method, &endpoint.path, outgoing, stream)
            .await?;
        return Ok(respond(passed));
    }
    // A generation goes on at Dify when its client leaves (a blocking one cannot be stopped).
    let shared = Arc::clone(&state.shared);
    let timeout = client.timeout();
    let call = async move {
        let identity = Arc::clone(&caller.user);
        let passed = client
            .pass_through(caller, endpoint.method, &endpoint.path, outgoing, stream)
            .await?;
        Ok::<_, ApiError>(match passed {
            Passed::Stream(relay) => {
                difys_stream(Body::from_stream(Metered::new(relay, &shared, identity)))
            }
            Passed::Answer(answer) => respond(Passed::Answer(
                answer.count_tokens(usage_sink(&shared, identity)),
            )),
        })
    };
    answered_in_time(timeout, call).await?
}

/// The trace id a Dify client gave, where Dify looks for it (dify-protocol.md §4.1): the
/// `X-Trace-Id` header, else `trace_id` in the query (the body's is looked at by the caller).
/// It goes to Dify as `X-Trace-Id` in place of our request id, which would win over it.
fn clients_trace_id(headers: &HeaderMap, query: &[(String, String)]) -> Option<HeaderValue> {
    headers
        .get(TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(trace_header)
        .or_else(|| {
            query
                .iter()
                .find(|(name, _)| name == "trace_id")
                .and_then(|(_, value)| trace_header(value))
        })
}

/// `id` as a header, when Dify would take it: 1 to 128 letters, digits, `-` or `_`.
fn trace_header(id: &str) -> Option<HeaderValue> {
    let valid = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| HeaderValue::from_str(id).ok()).flatten()
}

const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Python's truthiness of `auto_generate`, as Dify reads it: a name Dify makes up costs tokens.
fn generates_a_name(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// The query string decoded the way Flask decodes it (`+`, percent escapes); names that Dify
/// could read as `user` are dropped by the client.
fn query_params(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A relayed stream, typed as Dify types it (dify-protocol.md §5.1). The charset matters:
/// Python's `requests` decodes the lines of a stream that names none as ISO-8859-1, which
/// garbles the raw UTF-8 that Dify streams from 1.8.1 on.
fn difys_stream(body: Body) -> Response {
    let mut response = sse_response(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, DIFY_EVENT_STREAM);
    response
}

const DIFY_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

fn respond(passed: Passed) -> Response {
    match passed {
        Passed::Stream(relay) => difys_stream(Body::from_stream(relay)),
        Passed::Answer(answer) => {
            let mut response = answer.into_response_as_sent();
            let headers = response.headers_mut();
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            // A user's file served from our origin must not run as a page.
            if can_run_script(headers.get(header::CONTENT_TYPE)) && response.status().is_success() {
                response.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(ACTIVE_FILE_CSP),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";

    fn parse(method: Method, path: &str) -> Result<Endpoint, ApiError> {
        Endpoint::parse(&method, path)
    }

    #[test]
    fn the_end_user_surface_resolves() {
        let ok = [
            (Method::POST, "/v1/chat-messages".to_owned()),
            (Method::POST, "/v1/chat-messages/t-1/stop".to_owned()),
            (Method::POST, "/v1/completion-messages".to_owned()),
            (Method::POST, "/v1/completion-messages/t-1/stop".to_owned()),
            (Method::POST, "/v1/workflows/run".to_owned()),
            (Method::POST, "/v1/workflows/tasks/t-1/stop".to_owned()),
            (Method::GET, format!("/v1/workflow/{ID}/events")),
            (Method::GET, "/v1/conversations".to_owned()),
            (Method::DELETE, format!("/v1/conversations/{ID}")),
            (Method::POST, format!("/v1/conversations/{ID}/name")),
            (Method::GET, format!("/v1/conversations/{ID}/variables")),
            (Method::GET, "/v1/messages".to_owned()),
            (Method::POST, format!("/v1/messages/{ID}/feedbacks")),
            (Method::GET, format!("/v1/messages/{ID}/suggested")),
            (Method::POST, "/v1/files/upload".to_owned()),
            (Method::GET, format!("/v1/files/{ID}/preview")),
            (Method::POST, "/v1/audio-to-text".to_owned()),
            (Method::POST, "/v1/text-to-audio".to_owned()),
            (Method::GET, "/v1/parameters".to_owned()),
            (Method::GET, "/v1/info".to_owned()),
            (Method::GET, "/v1/meta".to_owned()),
            (Method::GET, "/v1/site".to_owned()),
        ];
        for (method, path) in ok {
            let endpoint = parse(method, &path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(format!("/v1/{}", endpoint.path), path);
        }
    }

    #[test]
    fn everything_else_is_not_found() {
        for path in [
            "/v1",
            "/v1/",
            "/v1/app/feedbacks",
            "/v1/workflows/logs",
            &format!("/v1/workflows/run/{ID}"),
            &format!("/v1/end-users/{ID}"),
            "/v1/apps/annotations",
            "/v1/datasets",
            "/v1/../x",
            "/v1/chat-messages/../app/feedbacks",
            "/v1/app%2Ffeedbacks",
            "/v1/chat-messages%2F..%2Fapp%2Ffeedbacks",
            "/v1//chat-messages",
            "/v1/chat-messages/",
            "/v1/Chat-Messages",
            "/v1/%63hat-messages",
            "/v1/conversations/x/variables/y",
            "/apps/x",
        ] {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                match parse(method.clone(), path) {
                    Err(ApiError::NotFound(_)) => {}
                    other => panic!("{method} {path}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn an_id_that_is_not_a_uuid_is_no_route() {
        for path in [
            "/v1/conversations/%2e%2e",
            "/v1/conversations/abc",
            "/v1/messages/x%2Fy/feedbacks",
            "/v1/files/not-a-uuid/preview",
            "/v1/workflow/42/events",
        ] {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                assert!(
                    matches!(parse(method.clone(), path), Err(ApiError::NotFound(_))),
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn a_bad_task_id_is_refused() {
        assert!(matches!(
            parse(Method::POST, "/v1/chat-messages/a.b/stop"),
            Err(ApiError::InvalidParam(_))
        ));
    }

    #[test]
    fn a_wrong_method_is_405() {
        assert!(matches!(
            parse(Method::GET, "/v1/chat-messages"),
            Err(ApiError::MethodNotAllowed(Some("POST")))
        ));
        assert!(matches!(
            parse(Method::POST, "/v1/conversations"),
            Err(ApiError::MethodNotAllowed(Some("GET, HEAD")))
        ));
        assert!(matches!(
            parse(Method::HEAD, "/v1/chat-messages"),
            Err(ApiError::MethodNotAllowed(Some("POST")))
        ));
    }

    #[test]
    fn a_get_route_answers_head_with_dify_s_get() {
        let endpoint = parse(Method::HEAD, "/v1/parameters").unwrap();
        assert_eq!(endpoint.method, Method::GET);
    }

    #[test]
    fn auto_generate_is_read_as_python_would() {
        assert!(generates_a_name(Some(&serde_json::json!(true))));
        assert!(generates_a_name(Some(&serde_json::json!("false"))));
        assert!(!generates_a_name(Some(&serde_json::json!(false))));
        assert!(!generates_a_name(Some(&serde_json::json!(0))));
        assert!(!generates_a_name(None));
    }
}
