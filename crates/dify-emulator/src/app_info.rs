//! `GET /v1/`, `/v1/parameters`, `/v1/meta` and `/v1/info` (protocol §10, captures 32–34, 67).

use axum::response::Response;
use serde_json::json;

use super::EmulatorOptions;
use super::answers::{DEMO_DESCRIPTION, DEMO_NAME};
use super::respond::{SERVER_VERSION, json_response};

pub(crate) fn index() -> Response {
    json_response(
        200,
        &json!({"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": SERVER_VERSION}),
    )
}

pub(crate) fn parameters(opts: &EmulatorOptions) -> Response {
    json_response(
        200,
        &json!({
            "opening_statement": opts.opening_statement,
            "suggested_questions": opts.suggested_questions,
            "suggested_questions_after_answer": {"enabled": opts.suggested_questions_after_answer},
            "speech_to_text": {"enabled": false},
            "text_to_speech": {"enabled": false},
            "retriever_resource": {"enabled": true},
            "annotation_reply": {"enabled": false},
            "more_like_this": {"enabled": false},
            "user_input_form": opts.user_input_form,
            "sensitive_word_avoidance": {"enabled": false, "type": "", "configs": []},
            "file_upload": opts.file_upload,
            "system_parameters": {
                "image_file_size_limit": 10,
                "video_file_size_limit": 100,
                "audio_file_size_limit": 50,
                "file_size_limit": 15,
                "workflow_file_upload_limit": 10,
            },
        }),
    )
}

pub(crate) fn meta() -> Response {
    json_response(200, &json!({"tool_icons": {}}))
}

/// `GET /v1/site` (≥ 1.4.0): the WebApp settings, an emoji icon (so no signed `icon_url`).
pub(crate) fn site(opts: &EmulatorOptions) -> Response {
    let title = if opts.demo { DEMO_NAME } else { "Capture Chat" };
    json_response(
        200,
        &json!({
            "title": title,
            "chat_color_theme": null,
            "chat_color_theme_inverted": false,
            "icon_type": "emoji",
            "icon": "🤖",
            "icon_background": "#FFEAD5",
            "icon_url": null,
            "description": null,
            "copyright": null,
            "privacy_policy": null,
            "custom_disclaimer": "",
            "default_language": "en-US",
            "show_workflow_steps": true,
            "use_icon_as_answer_icon": false,
        }),
    )
}

pub(crate) fn info(opts: &EmulatorOptions) -> Response {
    if let Some(info) = &opts.info {
        return json_response(
            200,
            &json!({"name": info.name, "description": info.description, "tags": [], "mode": info.mode}),
        );
    }
    let (name, description) = if opts.demo {
        (DEMO_NAME, DEMO_DESCRIPTION)
    } else {
        ("Capture Chat", "chat app for captures")
    };
    json_response(
        200,
        &json!({"name": name, "description": description, "tags": []}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn defaults_reproduce_captures_32_to_34_and_67() {
        let opts = EmulatorOptions::default();
        assert_eq!(
            body(parameters(&opts)).await,
            "{\"opening_statement\": null, \"suggested_questions\": [], \"suggested_questions_after_answer\": {\"enabled\": false}, \"speech_to_text\": {\"enabled\": false}, \"text_to_speech\": {\"enabled\": false}, \"retriever_resource\": {\"enabled\": true}, \"annotation_reply\": {\"enabled\": false}, \"more_like_this\": {\"enabled\": false}, \"user_input_form\": [], \"sensitive_word_avoidance\": {\"enabled\": false, \"type\": \"\", \"configs\": []}, \"file_upload\": {\"image\": {\"enabled\": false, \"number_limits\": 3, \"detail\": \"high\", \"transfer_methods\": [\"remote_url\", \"local_file\"]}}, \"system_parameters\": {\"image_file_size_limit\": 10, \"video_file_size_limit\": 100, \"audio_file_size_limit\": 50, \"file_size_limit\": 15, \"workflow_file_upload_limit\": 10}}\n"
        );
        assert_eq!(body(meta()).await, "{\"tool_icons\": {}}\n");
        assert_eq!(
            body(info(&opts)).await,
            "{\"name\": \"Capture Chat\", \"description\": \"chat app for captures\", \"tags\": []}\n"
        );
        assert_eq!(
            body(index()).await,
            "{\"welcome\": \"Dify OpenAPI\", \"api_version\": \"v1\", \"server_version\": \"0.15.3\"}\n"
        );
    }
}
