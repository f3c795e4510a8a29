//! `GET /v1/messages`, `POST /v1/messages/{id}/feedbacks` and `GET /v1/messages/{id}/suggested`
//! (protocol §8).

use axum::response::Response;
use serde_json::{Value, json};

use super::answers::suggested_after_answer;
use super::ctx::Ctx;
use super::errors::ApiError;
use super::pyvalue::py_str;
use super::reqparse::{Location, choice, int_range, missing, uuid_value};
use super::respond::json_response;
use super::sign::{Preview, Signer};
use super::state::lock;
use super::store::{Message, MessageFile, MessageStatus, unix_now};

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

pub(crate) fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let user = ctx.query_user(false)?;
    let conversation_id = match ctx.query.get("conversation_id") {
        Some(raw) => uuid_value("conversation_id", raw)?,
        None => return Err(missing("conversation_id", Location::Args)),
    };
    let first_id = match ctx.query.get("first_id") {
        Some(raw) => uuid_value("first_id", raw)?,
        None => None,
    };
    let limit = match ctx.query.get("limit") {
        Some(raw) => int_range("limit", raw, 1, 100)?,
        None => 20,
    };
    let Some(conversation_id) = conversation_id else {
        return Ok(json_response(
            200,
            &json!({"limit": limit, "has_more": false, "data": []}),
        ));
    };

    let store = lock(&ctx.shared.store);
    if store.conversation(&user, &conversation_id).is_none() {
        return Err(ApiError::not_found("Conversation Not Exists."));
    }
    let (rows, has_more) = store
        .list_messages(&conversation_id, first_id.as_deref(), limit as usize)
        .map_err(|_| ApiError::not_found("First Message Not Exists."))?;
    let now = unix_now();
    let data: Vec<Value> = rows
        .iter()
        .map(|m| message_json(m, &ctx.shared.signer, now))
        .collect();
    Ok(json_response(
        200,
        &json!({"limit": limit, "has_more": has_more, "data": data}),
    ))
}

/// A `/messages` item with 0.15.3's fields and order (capture 17).
fn message_json(m: &Message, signer: &Signer, now: i64) -> Value {
    let files: Vec<Value> = m.files.iter().map(|f| file_json(f, signer, now)).collect();
    json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "parent_message_id": NIL_UUID,
        "inputs": m.inputs,
        "query": m.query,
        "answer": m.answer,
        "message_files": files,
        "feedback": m.feedback.as_ref().map(|rating| json!({"rating": rating})),
        "retriever_resources": m.retriever_resources,
        "created_at": m.created_at,
        "agent_thoughts": [],
        "status": match m.status {
            MessageStatus::Normal => "normal",
            MessageStatus::Error => "error",
        },
        "error": m.error,
    })
}

fn file_json(f: &MessageFile, signer: &Signer, now: i64) -> Value {
    let url = match (&f.upload_file_id, &f.remote_url) {
        (Some(upload), _) => signer.upload_url(upload, Preview::File, now),
        (None, Some(remote)) => remote.clone(),
        (None, None) => String::new(),
    };
    json!({
        "id": f.id,
        "filename": f.filename,
        "type": f.kind,
        "url": url,
        "mime_type": f.mime_type,
        "size": f.size,
        "transfer_method": f.transfer_method,
        "belongs_to": "user",
    })
}

pub(crate) fn feedback(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, true)?;
    let rating = match body.get("rating") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let rating = py_str(v);
            choice("rating", &rating, &["like", "dislike"])?;
            Some(rating)
        }
    };
    let mut store = lock(&ctx.shared.store);
    let message = store
        .message_mut(&user, id)
        .ok_or_else(|| ApiError::not_found("Message Not Exists."))?;
    if rating.is_none() && message.feedback.is_none() {
        return Err(ApiError::value(
            "rating cannot be None when feedback not exists",
        ));
    }
    message.feedback = rating;
    Ok(json_response(200, &json!({"result": "success"})))
}

pub(crate) fn suggested(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let user = ctx.query_user(true)?;
    if lock(&ctx.shared.store).message_mut(&user, id).is_none() {
        return Err(ApiError::not_found("Message Not Exists."));
    }
    if !ctx.shared.opts.suggested_questions_after_answer {
        return Err(ApiError::http(
            400,
            "bad_request",
            "Suggested Questions Is Disabled.",
        ));
    }
    let questions = suggested_after_answer(ctx.shared.opts.demo);
    Ok(json_response(
        200,
        &json!({"result": "success", "data": questions}),
    ))
}
