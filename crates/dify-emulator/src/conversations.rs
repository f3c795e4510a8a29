//! `GET /v1/conversations`, `DELETE /v1/conversations/{id}` and
//! `POST /v1/conversations/{id}/name` (protocol §7).

use axum::response::Response;
use serde_json::json;

use super::answers::title;
use super::ctx::Ctx;
use super::errors::ApiError;
use super::pyvalue::truthy;
use super::reqparse::{choice, int_range, json_str, uuid_value};
use super::respond::json_response;
use super::state::lock;
use super::store::{SORT_CHOICES, SortBy};

const NOT_EXISTS: &str = "Conversation Not Exists.";

pub(crate) fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let user = ctx.query_user(false)?;
    let last_id = match ctx.query.get("last_id") {
        Some(raw) => uuid_value("last_id", raw)?,
        None => None,
    };
    let limit = match ctx.query.get("limit") {
        Some(raw) => int_range("limit", raw, 1, 100)?,
        None => 20,
    };
    let sort_by = ctx.query.get("sort_by").unwrap_or("-updated_at");
    choice("sort_by", sort_by, &SORT_CHOICES)?;
    let sort = SortBy::parse(sort_by).unwrap_or(SortBy::UpdatedAtDesc);

    let store = lock(&ctx.shared.store);
    let (rows, has_more) = store
        .list_conversations(&user, sort, last_id.as_deref(), limit as usize)
        .map_err(|_| ApiError::not_found("Last Conversation Not Exists."))?;
    let data: Vec<_> = rows.iter().map(|c| c.to_json()).collect();
    Ok(json_response(
        200,
        &json!({"limit": limit, "has_more": has_more, "data": data}),
    ))
}

pub(crate) fn delete(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, false)?;
    if !lock(&ctx.shared.store).delete_conversation(&user, id) {
        return Err(ApiError::not_found(NOT_EXISTS));
    }
    Ok(json_response(200, &json!({"result": "success"})))
}

pub(crate) fn rename(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, false)?;
    let name = body.get("name").and_then(json_str);
    let auto_generate = body.get("auto_generate").is_some_and(truthy);

    let mut store = lock(&ctx.shared.store);
    if store.conversation(&user, id).is_none() {
        return Err(ApiError::not_found(NOT_EXISTS));
    }
    let name = if auto_generate {
        // `MessageNotExistsError`: a ValueError without text.
        title(&store.first_query(id).ok_or_else(|| ApiError::value(""))?)
    } else {
        // 0.15.3 writes NULL into a NOT NULL column: an unhandled 500 (capture 25).
        name.ok_or(ApiError::Unknown)?
    };
    let item = store
        .rename(&user, id, name)
        .ok_or_else(|| ApiError::not_found(NOT_EXISTS))?;
    Ok(json_response(200, &item))
}

/// `GET /v1/conversations/{id}/variables` (≥ 1.3.1): a chat app's conversations have none.
pub(crate) fn variables(ctx: Ctx, id: &str) -> Result<Response, ApiError> {
    let user = ctx.query_user(false)?;
    let limit = match ctx.query.get("limit") {
        Some(raw) => int_range("limit", raw, 1, 100)?,
        None => 20,
    };
    if lock(&ctx.shared.store).conversation(&user, id).is_none() {
        return Err(ApiError::not_found(NOT_EXISTS));
    }
    Ok(json_response(
        200,
        &json!({"limit": limit, "has_more": false, "data": []}),
    ))
}
