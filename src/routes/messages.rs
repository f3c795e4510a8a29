//! `GET /messages`, `POST /messages/{id}/feedbacks`, `GET /messages/{id}/suggested`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::path::IdParam;
use super::validate::{self, Query};
use crate::apps::App;
use crate::dify::Caller;
use crate::dify::bodies::Feedback;
use crate::error::ApiError;
use crate::http::body::JsonObject;
use crate::http::routed::user;
use crate::state::AppState;

const MAX_FEEDBACK_CHARS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/messages", get(user(list)))
        .route("/messages/{id}/feedbacks", post(user(feedback)))
        .route("/messages/{id}/suggested", get(user(suggested)))
}

async fn list(app: App, caller: Caller, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
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
    Ok(app.dify.messages(&caller, &upstream).await?.into_response())
}

async fn feedback(
    app: App,
    caller: Caller,
    Path(IdParam { id }): Path<IdParam>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    validate::uuid("message id", &id)?;
    let upstream = feedback_body(&body)?;
    let answer = app.dify.feedback(&caller, &id, &upstream).await?;
    Ok(answer.into_response())
}

fn feedback_body(body: &Map<String, Value>) -> Result<Feedback<'_>, ApiError> {
    let rating = match body.get("rating") {
        Some(Value::Null) => None,
        Some(Value::String(r)) if r == "like" || r == "dislike" => Some(r.as_str()),
        _ => {
            return Err(ApiError::invalid(
                "rating must be \"like\", \"dislike\" or null.",
            ));
        }
    };
    let content = match body.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.chars().count() <= MAX_FEEDBACK_CHARS => Some(c.as_str()),
        Some(_) => {
            return Err(ApiError::invalid(
                "content must be a string of at most 10000 characters.",
            ));
        }
    };
    Ok(Feedback { rating, content })
}

/// Dify asks the model for the questions: charged like other model calls.
async fn suggested(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    Path(IdParam { id }): Path<IdParam>,
) -> Result<Response, ApiError> {
    validate::uuid("message id", &id)?;
    state.assist_rate.check(&caller.user).await?;
    Ok(app.dify.suggested(&caller, &id).await?.into_response())
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
        assert!(feedback_body(&body(json!({}))).is_err());
        assert!(feedback_body(&body(json!({"rating": "love"}))).is_err());
        let revoke = body(json!({"rating": null}));
        assert_eq!(
            feedback_body(&revoke).unwrap(),
            Feedback {
                rating: None,
                content: None
            }
        );
        let liked = body(json!({"rating": "like", "content": "good", "user": "x"}));
        assert_eq!(
            feedback_body(&liked).unwrap(),
            Feedback {
                rating: Some("like"),
                content: Some("good")
            }
        );
    }
}
