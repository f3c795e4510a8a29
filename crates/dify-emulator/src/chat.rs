//! `POST /v1/chat-messages` and `POST /v1/chat-messages/{task_id}/stop` (protocol §4–6).

use axum::response::Response;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};

use super::answers::{self, Timing};
use super::ctx::Ctx;
use super::errors::ApiError;
use super::form::prepare_inputs;
use super::generate::{Blocking, Generation, Turn, run_blocking, sse_body};
use super::play::aborted;
use super::pyvalue::{py_str, truthy};
use super::reqparse::{Location, choice, json_str, missing, to_dict, to_list, uuid_json};
use super::respond::{bytes_response, json_response};
use super::state::lock;
use super::store::{MessageFile, Store, new_id};

/// The request body after reqparse, in its argument order.
struct ChatArgs {
    inputs: Map<String, Value>,
    query: Option<String>,
    files: Vec<Value>,
    streaming: bool,
    conversation_id: Option<String>,
    auto_generate_name: bool,
}

impl ChatArgs {
    fn parse(body: &Map<String, Value>) -> Result<ChatArgs, ApiError> {
        let inputs = match body.get("inputs") {
            None => return Err(missing("inputs", Location::Json)),
            Some(Value::Null) => Map::new(),
            Some(v) => to_dict(v).map_err(|message| ApiError::param("inputs", message))?,
        };
        let query = match body.get("query") {
            None => return Err(missing("query", Location::Json)),
            Some(v) => json_str(v),
        };
        let files = match body.get("files") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => to_list(v).map_err(|message| ApiError::param("files", message))?,
        };
        let streaming = match body.get("response_mode") {
            None => false,
            Some(v) => {
                let mode = py_str(v);
                choice("response_mode", &mode, &["blocking", "streaming"])?;
                mode == "streaming"
            }
        };
        let conversation_id = match body.get("conversation_id") {
            None => None,
            Some(v) => uuid_json("conversation_id", v)?,
        };
        let auto_generate_name = body.get("auto_generate_name").is_none_or(truthy);
        Ok(ChatArgs {
            inputs,
            query,
            files,
            streaming,
            conversation_id,
            auto_generate_name,
        })
    }
}

pub(crate) async fn chat_messages(ctx: Ctx) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, true)?;
    let args = ChatArgs::parse(&body)?;
    let query = args
        .query
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::value("query is required"))?
        .replace('\0', "");
    let shared = ctx.shared.clone();
    let opts = &shared.opts;

    let (turn, number) = {
        let mut store = lock(&shared.store);
        let existing = match &args.conversation_id {
            Some(id) => Some(
                store
                    .conversation(&user, id)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("Conversation Not Exists."))?,
            ),
            None => None,
        };
        let files = if file_upload_enabled(&opts.file_upload) {
            attach_files(&store, &args.files)?
        } else {
            Vec::new()
        };
        let (conversation_id, inputs, is_new) = match existing {
            Some(conversation) => (conversation.id, conversation.inputs, false),
            None => {
                let inputs = Value::Object(prepare_inputs(&opts.user_input_form, &args.inputs)?);
                let introduction = introduction(opts.opening_statement.as_deref(), &inputs);
                let id = store.create_conversation(&user, inputs.clone(), introduction);
                (id, inputs, true)
            }
        };
        let (message_id, created_at) =
            store.add_message(&user, &conversation_id, inputs, query.clone(), files);
        let title = (is_new && args.auto_generate_name).then(|| answers::title(&query));
        let turn = Turn {
            task_id: new_id(),
            conversation_id,
            message_id,
            created_at,
            user,
            title,
        };
        (turn, store.next_answer_number())
    };

    let timing = Timing {
        token_interval: opts.token_interval,
        slow_interval: opts.slow_interval,
    };
    let plan = answers::plan(&query, number, opts.demo, &timing);
    let generation = Generation::start(shared.clone(), turn, plan);
    if args.streaming {
        let mut resp = Response::new(sse_body(generation));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(resp);
    }
    match run_blocking(generation).await {
        Blocking::Answer(body) => Ok(bytes_response(200, "application/json", body)),
        Blocking::Failed(text) => Err(ApiError::completion_request_error(text)),
        Blocking::Shutdown => Ok(aborted()),
    }
}

pub(crate) fn stop(ctx: Ctx, task_id: &str) -> Result<Response, ApiError> {
    let body = ctx.json()?;
    let user = ctx.json_user(&body, true)?;
    ctx.shared.stop_task(task_id, &user);
    Ok(json_response(200, &json!({"result": "success"})))
}

/// `FileUploadConfigManager.convert`: files are used only when the app allows them; otherwise
/// they are dropped without a word (capture 38).
fn file_upload_enabled(config: &Value) -> bool {
    let flag = |v: Option<&Value>| v.is_some_and(truthy);
    flag(config.get("enabled")) || flag(config.get("image").and_then(|i| i.get("enabled")))
}

/// `file_factory.build_from_mappings` for the transfer methods a Service API client can use.
fn attach_files(store: &Store, mappings: &[Value]) -> Result<Vec<MessageFile>, ApiError> {
    mappings
        .iter()
        .map(|mapping| {
            let mapping = mapping.as_object().ok_or(ApiError::Unknown)?;
            let kind = mapping
                .get("type")
                .map_or_else(|| "image".to_owned(), py_str);
            let method = mapping
                .get("transfer_method")
                .map_or_else(|| "None".to_owned(), py_str);
            match method.as_str() {
                "local_file" => {
                    let upload = mapping
                        .get("upload_file_id")
                        .and_then(Value::as_str)
                        .and_then(|id| store.upload(id))
                        .ok_or_else(|| ApiError::value("Invalid upload file"))?;
                    Ok(MessageFile {
                        id: new_id(),
                        kind,
                        transfer_method: method,
                        upload_file_id: Some(upload.id.clone()),
                        remote_url: None,
                        filename: upload.name.clone(),
                        mime_type: upload.mime_type.clone(),
                        size: upload.size as i64,
                    })
                }
                "remote_url" => {
                    let url = mapping
                        .get("url")
                        .or_else(|| mapping.get("remote_url"))
                        .and_then(Value::as_str)
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| ApiError::value("Invalid file url"))?;
                    let filename = url
                        .split(['?', '#'])
                        .next()
                        .unwrap_or(url)
                        .rsplit('/')
                        .next()
                        .unwrap_or("");
                    Ok(MessageFile {
                        id: new_id(),
                        kind,
                        transfer_method: method,
                        upload_file_id: None,
                        remote_url: Some(url.to_owned()),
                        filename: filename.to_owned(),
                        mime_type: mime_guess::from_path(filename)
                            .first_or_octet_stream()
                            .to_string(),
                        size: -1,
                    })
                }
                other => Err(ApiError::value(format!(
                    "No matching enum found for value '{other}'"
                ))),
            }
        })
        .collect()
}

/// The opening statement with `{{variable}}` filled from the inputs.
fn introduction(opening: Option<&str>, inputs: &Value) -> String {
    let mut text = opening.unwrap_or("").to_owned();
    if let Some(inputs) = inputs.as_object() {
        for (name, value) in inputs {
            text = text.replace(
                &format!("{{{{{name}}}}}"),
                &value.as_str().map_or_else(|| py_str(value), str::to_owned),
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatArgs, ApiError> {
        ChatArgs::parse(v.as_object().unwrap())
    }

    fn err(v: Value) -> ApiError {
        match parse(v) {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn arguments_are_checked_in_reqparse_order() {
        assert_eq!(
            err(json!({"user": "u"})),
            ApiError::param("inputs", "Missing required parameter in the JSON body")
        );
        assert_eq!(
            err(json!({"inputs": {}})),
            ApiError::param("query", "Missing required parameter in the JSON body")
        );
        assert_eq!(
            err(json!({"inputs": "x", "query": "hi"})),
            ApiError::param(
                "inputs",
                "dictionary update sequence element #0 has length 1; 2 is required"
            )
        );
        assert_eq!(
            err(json!({"inputs": {}, "query": "hi", "response_mode": "fast"})),
            ApiError::param("response_mode", "fast is not a valid choice")
        );
        assert_eq!(
            err(json!({"inputs": {}, "query": "hi", "response_mode": null})),
            ApiError::param("response_mode", "None is not a valid choice")
        );
        assert_eq!(
            err(json!({"inputs": {}, "query": "hi", "conversation_id": "abc"})),
            ApiError::param("conversation_id", "abc is not a valid uuid.")
        );
    }

    #[test]
    fn defaults_follow_dify() {
        let args = parse(json!({"inputs": null, "query": 5, "conversation_id": ""})).unwrap();
        assert!(args.inputs.is_empty());
        assert_eq!(args.query.as_deref(), Some("5"));
        assert!(!args.streaming);
        assert_eq!(args.conversation_id, None);
        assert!(args.auto_generate_name);
        let args = parse(json!({"inputs": {}, "query": "q", "response_mode": "streaming", "auto_generate_name": "false"}))
            .unwrap();
        assert!(args.streaming);
        assert!(args.auto_generate_name, "Python's bool('false') is True");
        let args = parse(json!({"inputs": {}, "query": "q", "auto_generate_name": false})).unwrap();
        assert!(!args.auto_generate_name);
    }

    #[test]
    fn file_upload_switch_reads_both_config_shapes() {
        assert!(!file_upload_enabled(
            &json!({"image": {"enabled": false, "number_limits": 3, "detail": "high", "transfer_methods": ["remote_url", "local_file"]}})
        ));
        assert!(file_upload_enabled(&json!({"image": {"enabled": true}})));
        assert!(file_upload_enabled(&json!({"enabled": true})));
    }

    #[test]
    fn introduction_fills_variables() {
        assert_eq!(
            introduction(Some("Hi {{name}}!"), &json!({"name": "Ann"})),
            "Hi Ann!"
        );
        assert_eq!(introduction(None, &json!({})), "");
    }
}
