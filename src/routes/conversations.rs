//! `GET /conversations`, `DELETE /conversations/{id}`, `POST /conversations/{id}/name`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Map, Value};

use super::path::IdParam;
use super::validate::{self, Query};
use crate::apps::App;
use crate::dify::Caller;
use crate::dify::bodies::Rename;
use crate::error::ApiError;
use crate::http::body::{JsonObject, OptionalJsonObject};
use crate::http::routed::user;
use crate::state::AppState;

const SORTS: &[&str] = &["created_at", "-created_at", "updated_at", "-updated_at"];
const MAX_NAME_CHARS: usize = 255;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(user(list)))
        .route("/conversations/{id}", delete(user(remove)))
        .route("/conversations/{id}/name", post(user(rename)))
}

async fn list(app: App, caller: Caller, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    let mut upstream = Vec::new();
    if let Some(limit) = query.limit()? {
        upstream.push(("limit", limit));
    }
    if let Some(last_id) = query.uuid("last_id")? {
        upstream.push(("last_id", last_id));
    }
    if let Some(sort_by) = query.get("sort_by") {
        if !SORTS.contains(&sort_by) {
            return Err(ApiError::invalid(
                "sort_by must be one of created_at, -created_at, updated_at, -updated_at.",
            ));
        }
        upstream.push(("sort_by", sort_by));
    }
    let answer = app.dify.conversations(&caller, &upstream).await?;
    Ok(answer.into_response())
}

async fn remove(
    app: App,
    caller: Caller,
    Path(IdParam { id }): Path<IdParam>,
    OptionalJsonObject(_): OptionalJsonObject,
) -> Result<Response, ApiError> {
    validate::uuid("conversation id", &id)?;
    // Dify ≥ 1.3.1 answers 204 with no body: relayed as just the status.
    Ok(app
        .dify
        .delete_conversation(&caller, &id)
        .await?
        .into_response())
}

async fn rename(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    Path(IdParam { id }): Path<IdParam>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    validate::uuid("conversation id", &id)?;
    let upstream = rename_body(&body)?;
    if upstream.auto_generate {
        // Dify asks the model for the name: charged like other model calls.
        state.assist_rate.check(&caller.user).await?;
    }
    let answer = app
        .dify
        .rename_conversation(&caller, &id, &upstream)
        .await?;
    Ok(answer.into_response())
}

/// `{name}` (1–255 characters) or `{auto_generate: true}`; Dify answers 500 to neither.
fn rename_body(body: &Map<String, Value>) -> Result<Rename<'_>, ApiError> {
    let auto_generate = match body.get("auto_generate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("auto_generate must be a boolean.")),
    };
    if auto_generate {
        return Ok(Rename {
            name: None,
            auto_generate,
        });
    }
    let name = match body.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.trim(),
        _ => return Err(ApiError::invalid("Give a name, or auto_generate: true.")),
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name must be at most 255 characters."));
    }
    Ok(Rename {
        name: Some(name),
        auto_generate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rename_needs_a_name_or_auto_generate() {
        assert!(rename_body(&body(json!({}))).is_err());
        assert!(rename_body(&body(json!({"name": "  "}))).is_err());
        assert!(rename_body(&body(json!({"auto_generate": false}))).is_err());
        assert!(rename_body(&body(json!({"name": "x".repeat(256)}))).is_err());
        let named = body(json!({"name": " Trip ", "user": "evil"}));
        assert_eq!(
            rename_body(&named).unwrap(),
            Rename {
                name: Some("Trip"),
                auto_generate: false
            }
        );
        let auto = body(json!({"auto_generate": true}));
        assert_eq!(
            rename_body(&auto).unwrap(),
            Rename {
                name: None,
                auto_generate: true
            }
        );
    }
}
