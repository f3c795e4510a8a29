//! `GET /messages`, `POST /messages/{id}/feedbacks`, `GET /messages/{id}/suggested`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::body::JsonObject;
use super::relay_json;
use super::validate::{self, Query};
use crate::dify::Caller;
use crate::error::ApiError;
use crate::state::AppState;

const MAX_FEEDBACK_CHARS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/messages", get(list))
        .route("/messages/{id}/feedbacks", post(feedback))
        .route("/messages/{id}/suggested", get(suggested))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    let conversation_id = query
        .uuid("conversation_id")?
        .ok_or_else(|| ApiError::invalid("conversation_id is required."))?;
    let mut upstream = vec![("conversation_id", conversation_id)];
    if let Some(first_id) = query.uuid("first_id")? {
        upstream.push(("first_id", first_id));
    }
    if let Some(limit) = query.limit()? {
        upstream.push(("limit", limit));
    }
    state
        .dify
        .messages(&caller, &upstream)
        .await
        .map(relay_json)
}

async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    validate::uuid("message id", &id)?;
    let upstream = feedback_body(&body, &caller.user)?;
    state
        .dify
        .feedback(&caller, &id, &upstream)
        .await
        .map(relay_json)
}

fn feedback_body(body: &Map<String, Value>, user: &str) -> Result<Value, ApiError> {
    let rating = match body.get("rating") {
        Some(Value::Null) => Value::Null,
        Some(Value::String(r)) if r == "like" || r == "dislike" => Value::String(r.clone()),
        _ => {
            return Err(ApiError::invalid(
                "rating must be \"like\", \"dislike\" or null.",
            ));
        }
    };
    let mut upstream = Map::new();
    upstream.insert("rating".into(), rating);
    upstream.insert("user".into(), Value::String(user.to_owned()));
    match body.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.chars().count() <= MAX_FEEDBACK_CHARS => {
            upstream.insert("content".into(), Value::String(c.clone()));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "content must be a string of at most 10000 characters.",
            ));
        }
    }
    Ok(Value::Object(upstream))
}

async fn suggested(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate::uuid("message id", &id)?;
    state.dify.suggested(&caller, &id).await.map(relay_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rating_is_like_dislike_or_null() {
        assert!(feedback_body(&body(json!({})), "u").is_err());
        assert!(feedback_body(&body(json!({"rating": "love"})), "u").is_err());
        assert_eq!(
            feedback_body(&body(json!({"rating": null})), "u").unwrap(),
            json!({"rating": null, "user": "u"})
        );
        assert_eq!(
            feedback_body(
                &body(json!({"rating": "like", "content": "good", "user": "x"})),
                "u"
            )
            .unwrap(),
            json!({"rating": "like", "user": "u", "content": "good"})
        );
    }
}
