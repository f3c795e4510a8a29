//! `POST /audio-to-text` (a recording, streamed to Dify like an upload) and
//! `POST /text-to-audio` (Dify's audio streamed back with its own type). Both cost the
//! provider money, so both are charged to the same per-identity bucket as uploads.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value};

use super::validate;
use crate::apps::App;
use crate::dify::Caller;
use crate::dify::bodies::TextToAudio;
use crate::error::ApiError;
use crate::http::body::JsonObject;
use crate::http::multipart;
use crate::http::routed::user;
use crate::state::AppState;

/// Voice names are the provider's (`alloy`, `zh-CN-XiaoxiaoNeural`…): short words.
const MAX_VOICE_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/audio-to-text", post(user(audio_to_text)))
        .route("/text-to-audio", post(user(text_to_audio)))
}

async fn audio_to_text(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    multipart::forward(&state, &caller, request, |file| {
        app.dify.audio_to_text(&caller, file)
    })
    .await
}

async fn text_to_audio(
    State(state): State<AppState>,
    app: App,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let upstream = text_to_audio_body(&body)?;
    state.assist_rate.check(&caller.user).await?;
    let answer = app.dify.text_to_audio(&caller, &upstream).await?;
    Ok(answer.into_audio_response())
}

/// `{message_id}` (a UUID) or `{text}` (not blank), and an optional `voice`.
fn text_to_audio_body(body: &Map<String, Value>) -> Result<TextToAudio<'_>, ApiError> {
    let string = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::invalid(format!("{name} must be a string."))),
    };
    let message_id = string("message_id")?
        .map(|id| validate::uuid("message_id", id))
        .transpose()?;
    let text = string("text")?.filter(|t| !t.trim().is_empty());
    if message_id.is_none() && text.is_none() {
        return Err(ApiError::invalid(
            "Give the message_id of an answer or a text to read aloud.",
        ));
    }
    let voice = string("voice")?;
    if voice.is_some_and(|v| v.trim().is_empty() || v.chars().count() > MAX_VOICE_CHARS) {
        return Err(ApiError::invalid(format!(
            "voice must be 1–{MAX_VOICE_CHARS} characters."
        )));
    }
    Ok(TextToAudio {
        message_id,
        text,
        voice,
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
    fn a_message_id_or_a_text_is_required() {
        assert!(text_to_audio_body(&body(json!({}))).is_err());
        assert!(text_to_audio_body(&body(json!({"text": "  "}))).is_err());
        assert!(text_to_audio_body(&body(json!({"message_id": "nope"}))).is_err());
        assert!(text_to_audio_body(&body(json!({"text": 5}))).is_err());
        let id = "7d9f3a52-52a4-4f57-9d59-2e3f8c9b0a11";
        assert_eq!(
            text_to_audio_body(&body(json!({"message_id": id, "user": "eve"}))).unwrap(),
            TextToAudio {
                message_id: Some(id),
                text: None,
                voice: None
            }
        );
    }
}
