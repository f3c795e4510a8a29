//! The `POST /chat` body: validated, with only known fields kept (API.md §4).

use serde_json::{Map, Value, json};

use super::validate;
use crate::dify::bodies::ChatMessage;
use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMode {
    Streaming,
    Blocking,
}

impl ResponseMode {
    fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Streaming => "streaming",
            ResponseMode::Blocking => "blocking",
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct ChatRequest {
    pub query: String,
    pub conversation_id: String,
    pub inputs: Map<String, Value>,
    pub files: Option<Vec<Value>>,
    pub mode: ResponseMode,
    pub auto_generate_name: Option<bool>,
}

const FILE_TYPES: &[&str] = &["image", "document", "audio", "video", "custom"];

impl ChatRequest {
    pub fn parse(mut body: Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let query = match body.remove("query") {
            Some(Value::String(q)) if !q.trim().is_empty() => q,
            _ => return Err(ApiError::invalid("query must be a non-empty string.")),
        };
        let conversation_id = match body.remove("conversation_id") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(id)) if id.is_empty() => id,
            Some(Value::String(id)) => validate::uuid("conversation_id", &id)?.to_owned(),
            Some(_) => return Err(ApiError::invalid("conversation_id must be a UUID.")),
        };
        let inputs = match body.remove("inputs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(inputs)) => inputs,
            Some(_) => return Err(ApiError::invalid("inputs must be an object.")),
        };
        let files = match body.remove("files") {
            None | Some(Value::Null) => None,
            Some(Value::Array(files)) => Some(
                files
                    .into_iter()
                    .map(parse_file)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(ApiError::invalid("files must be an array.")),
        };
        let mode = match body.remove("response_mode") {
            None | Some(Value::Null) => ResponseMode::Streaming,
            Some(Value::String(m)) if m == "streaming" => ResponseMode::Streaming,
            Some(Value::String(m)) if m == "blocking" => ResponseMode::Blocking,
            Some(_) => {
                return Err(ApiError::invalid(
                    "response_mode must be \"streaming\" or \"blocking\".",
                ));
            }
        };
        let auto_generate_name = match body.remove("auto_generate_name") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => return Err(ApiError::invalid("auto_generate_name must be a boolean.")),
        };
        Ok(ChatRequest {
            query,
            conversation_id,
            inputs,
            files,
            mode,
            auto_generate_name,
        })
    }

    /// The body Dify gets: an explicit `response_mode`, nothing unknown (the client adds the
    /// `user`). It borrows the request, so it is serialised straight from it, without a copy.
    pub fn to_upstream(&self) -> ChatMessage<'_> {
        ChatMessage {
            inputs: &self.inputs,
            query: &self.query,
            response_mode: self.mode.as_str(),
            conversation_id: &self.conversation_id,
            files: self.files.as_deref(),
            auto_generate_name: self.auto_generate_name,
        }
    }
}

fn parse_file(file: Value) -> Result<Value, ApiError> {
    let Value::Object(file) = file else {
        return Err(ApiError::invalid("each file must be an object."));
    };
    let kind = file.get("type").and_then(Value::as_str).unwrap_or_default();
    if !FILE_TYPES.contains(&kind) {
        return Err(ApiError::invalid(
            "file type must be one of image, document, audio, video, custom.",
        ));
    }
    match file.get("transfer_method").and_then(Value::as_str) {
        Some("remote_url") => {
            let url = file.get("url").and_then(Value::as_str).unwrap_or_default();
            let valid = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !valid {
                return Err(ApiError::invalid("a remote_url file needs an http(s) url."));
            }
            Ok(json!({"type": kind, "transfer_method": "remote_url", "url": url}))
        }
        Some("local_file") => {
            let id = file
                .get("upload_file_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            validate::uuid("upload_file_id", id)?;
            Ok(json!({"type": kind, "transfer_method": "local_file", "upload_file_id": id}))
        }
        _ => Err(ApiError::invalid(
            "file transfer_method must be remote_url or local_file.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, ApiError> {
        match v {
            Value::Object(map) => ChatRequest::parse(map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_are_streaming_new_conversation_empty_inputs() {
        let r = parse(json!({"query": "hi"})).unwrap();
        assert_eq!(r.mode, ResponseMode::Streaming);
        assert_eq!(r.conversation_id, "");
        assert!(r.inputs.is_empty());
    }

    #[test]
    fn client_user_and_unknown_fields_are_not_forwarded() {
        let r =
            parse(json!({"query": "hi", "user": "victim", "evil": 1, "inputs": {"a": 1}})).unwrap();
        let up = serde_json::to_value(r.to_upstream()).unwrap();
        assert_eq!(
            up,
            json!({"inputs": {"a": 1}, "query": "hi", "response_mode": "streaming", "conversation_id": ""})
        );
    }

    #[test]
    fn files_and_auto_generate_name_are_sent_only_when_given() {
        let r = parse(json!({"query": "q", "auto_generate_name": false, "files": []})).unwrap();
        let up = serde_json::to_value(r.to_upstream()).unwrap();
        assert_eq!(up["auto_generate_name"], json!(false));
        assert_eq!(up["files"], json!([]));
        let bare =
            serde_json::to_value(parse(json!({"query": "q"})).unwrap().to_upstream()).unwrap();
        assert!(bare.get("files").is_none() && bare.get("auto_generate_name").is_none());
    }

    #[test]
    fn nulls_mean_defaults() {
        let r = parse(json!({"query": "hi", "conversation_id": null, "inputs": null})).unwrap();
        assert_eq!(r.conversation_id, "");
        assert!(r.inputs.is_empty());
    }

    #[test]
    fn bad_fields_are_rejected() {
        for body in [
            json!({}),
            json!({"query": "   "}),
            json!({"query": 5}),
            json!({"query": "q", "conversation_id": "abc"}),
            json!({"query": "q", "inputs": "x"}),
            json!({"query": "q", "files": {}}),
            json!({"query": "q", "response_mode": "fast"}),
            json!({"query": "q", "auto_generate_name": "false"}),
            json!({"query": "q", "files": [{"type": "image", "transfer_method": "local_file"}]}),
            json!({"query": "q", "files": [{"type": "image", "transfer_method": "remote_url", "url": "javascript:x"}]}),
            json!({"query": "q", "files": [{"type": "exe", "transfer_method": "remote_url", "url": "https://x/y.png"}]}),
        ] {
            assert!(parse(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn files_keep_only_known_keys() {
        let r = parse(json!({"query": "q", "files": [{"type": "image", "transfer_method": "local_file", "upload_file_id": "aa0483db-e114-40ab-b70f-c2128bd443fa", "x": 1}]})).unwrap();
        assert_eq!(
            r.files.unwrap(),
            vec![
                json!({"type": "image", "transfer_method": "local_file", "upload_file_id": "aa0483db-e114-40ab-b70f-c2128bd443fa"})
            ]
        );
    }
}
