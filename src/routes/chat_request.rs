//! The `POST /chat` body: validated, with only known fields kept (API.md §4). It is read in
//! place: the strings borrow from the body and `inputs` is kept as the client's raw JSON, so a
//! request is checked and forwarded without building a JSON tree.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::validate;
use crate::dify::bodies::{ChatMessage, Inputs};
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

#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub query: Cow<'a, str>,
    pub conversation_id: Cow<'a, str>,
    pub inputs: Inputs<'a>,
    pub files: Option<Vec<Value>>,
    pub mode: ResponseMode,
    pub auto_generate_name: Option<bool>,
}

const FILE_TYPES: &[&str] = &["image", "document", "audio", "video", "custom"];

impl<'a> ChatRequest<'a> {
    /// The body as a `POST /chat` request, or the `invalid_param` error it earns: the same
    /// checks, in the same order, as reading it as a JSON object first and its fields after.
    pub fn parse(body: &'a [u8]) -> Result<ChatRequest<'a>, ApiError> {
        let fields = match serde_json::from_slice::<Document<'a>>(body) {
            Ok(Document::Object(fields)) => fields,
            Ok(Document::Other) => {
                return Err(ApiError::invalid("The body must be a JSON object."));
            }
            Err(_) => return Err(ApiError::invalid("The body is not valid JSON.")),
        };
        let query = match fields.query.and_then(string) {
            Some(q) if !q.trim().is_empty() => q,
            _ => return Err(ApiError::invalid("query must be a non-empty string.")),
        };
        let conversation_id = match fields.conversation_id.filter(|v| !is_null(v)) {
            None => Cow::Borrowed(""),
            Some(raw) => match string(raw) {
                Some(id) if id.is_empty() => id,
                Some(id) => {
                    validate::uuid("conversation_id", &id)?;
                    id
                }
                None => return Err(ApiError::invalid("conversation_id must be a UUID.")),
            },
        };
        let inputs = match fields.inputs.filter(|v| !is_null(v)) {
            None => Inputs::Empty,
            Some(raw) if raw.get().starts_with('{') => Inputs::Raw(raw),
            Some(_) => return Err(ApiError::invalid("inputs must be an object.")),
        };
        let files = match fields.files.filter(|v| !is_null(v)) {
            None => None,
            Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Array(files)) => Some(
                    files
                        .into_iter()
                        .map(parse_file)
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                _ => return Err(ApiError::invalid("files must be an array.")),
            },
        };
        let mode = match fields.response_mode.filter(|v| !is_null(v)) {
            None => ResponseMode::Streaming,
            Some(raw) => match string(raw).as_deref() {
                Some("streaming") => ResponseMode::Streaming,
                Some("blocking") => ResponseMode::Blocking,
                _ => {
                    return Err(ApiError::invalid(
                        "response_mode must be \"streaming\" or \"blocking\".",
                    ));
                }
            },
        };
        let auto_generate_name = match fields.auto_generate_name.filter(|v| !is_null(v)) {
            None => None,
            Some(raw) => match raw.get() {
                "true" => Some(true),
                "false" => Some(false),
                _ => return Err(ApiError::invalid("auto_generate_name must be a boolean.")),
            },
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

    /// The same request, owning its strings (for a call that outlives the body).
    pub fn into_owned(self) -> ChatRequest<'static> {
        ChatRequest {
            query: Cow::Owned(self.query.into_owned()),
            conversation_id: Cow::Owned(self.conversation_id.into_owned()),
            inputs: self.inputs.into_owned(),
            files: self.files,
            mode: self.mode,
            auto_generate_name: self.auto_generate_name,
        }
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

fn is_null(raw: &&RawValue) -> bool {
    raw.get() == "null"
}

/// A JSON string's value, borrowed unless it holds escapes; `None` for any other JSON value.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    // Already checked as JSON: without a backslash, the value is what the quotes hold.
    if text.len() >= 2 && !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// The fields `/chat` reads, each as the raw JSON the client sent (a key given twice: the
/// last one counts); any other field is skipped.
#[derive(Default)]
struct Fields<'a> {
    query: Option<&'a RawValue>,
    conversation_id: Option<&'a RawValue>,
    inputs: Option<&'a RawValue>,
    files: Option<&'a RawValue>,
    response_mode: Option<&'a RawValue>,
    auto_generate_name: Option<&'a RawValue>,
}

enum Field {
    Query,
    ConversationId,
    Inputs,
    Files,
    ResponseMode,
    AutoGenerateName,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "query" => Field::Query,
                    "conversation_id" => Field::ConversationId,
                    "inputs" => Field::Inputs,
                    "files" => Field::Files,
                    "response_mode" => Field::ResponseMode,
                    "auto_generate_name" => Field::AutoGenerateName,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// The whole body, checked exactly as parsing it into a `serde_json::Value` would check it
/// (UTF-8, escapes, numbers, nesting depth) in the same pass that takes an object's fields.
enum Document<'a> {
    Object(Fields<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Document<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document<'a>, D::Error> {
        struct Any<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Any<'a> {
            type Value = Document<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_unit<E>(self) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_none<E>(self) -> Result<Document<'a>, E> {
                Ok(Document::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Document<'a>, A::Error> {
                CheckVisitor.visit_seq(seq).map(|_| Document::Other)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Document<'a>, M::Error> {
                let mut fields = Fields::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::Query => &mut fields.query,
                        Field::ConversationId => &mut fields.conversation_id,
                        Field::Inputs => &mut fields.inputs,
                        Field::Files => &mut fields.files,
                        Field::ResponseMode => &mut fields.response_mode,
                        Field::AutoGenerateName => &mut fields.auto_generate_name,
                        Field::Other => {
                            map.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    let raw = map.next_value::<&'de RawValue>()?;
                    if !checked_in_place(raw) {
                        return Err(de::Error::custom("not valid JSON"));
                    }
                    *slot = Some(raw);
                }
                Ok(Document::Object(fields))
            }
        }
        deserializer.deserialize_any(Any(std::marker::PhantomData))
    }
}

/// Whether a member's raw value, which serde_json only skipped (its grammar and UTF-8 are
/// checked, not its escapes' code points, its numbers' range or its depth), is what parsing
/// the body into a `Value` accepts there.
fn checked_in_place(raw: &RawValue) -> bool {
    let text = raw.get();
    if matches!(text, "null" | "true" | "false") || (text.starts_with('"') && !text.contains('\\'))
    {
        return true;
    }
    match plain_nesting(text) {
        Some(depth) => depth < MAX_MEMBER_NESTING,
        None => serde_json::from_str::<Checked>(text).is_ok() && nesting(text) < MAX_MEMBER_NESTING,
    }
}

/// How deep `json` (skipped by serde_json, so of valid grammar) nests, when nothing in it needs
/// more than that grammar: no escape (a lone surrogate), no exponent and no run of 300 digits
/// (a number past `f64`'s range). `None`: serde_json must read it.
fn plain_nesting(json: &str) -> Option<usize> {
    let (mut depth, mut deepest, mut digits, mut in_string) = (0usize, 0usize, 0usize, false);
    for b in json.bytes() {
        if in_string {
            match b {
                b'\\' => return None,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= 300 {
                return None;
            }
            continue;
        }
        digits = 0;
        match b {
            b'"' => in_string = true,
            b'e' | b'E' => return None,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Some(deepest)
}

/// serde_json refuses the 128th level of nesting from the document's root; the root object is
/// the first, so a member's value may nest 126 levels.
const MAX_MEMBER_NESTING: usize = 127;

/// How deep `json` (valid JSON) nests its arrays and objects, counted up to
/// [`MAX_MEMBER_NESTING`] at most.
fn nesting(json: &str) -> usize {
    if json.len() < 2 * MAX_MEMBER_NESTING {
        return 0;
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest >= MAX_MEMBER_NESTING {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Any JSON value, checked and dropped.
struct Checked;

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(true)
    }
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(CheckVisitor).map(|_| Checked)
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
            Ok(serde_json::json!({"type": kind, "transfer_method": "remote_url", "url": url}))
        }
        Some("local_file") => {
            let id = file
                .get("upload_file_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            validate::uuid("upload_file_id", id)?;
            Ok(
                serde_json::json!({"type": kind, "transfer_method": "local_file", "upload_file_id": id}),
            )
        }
        _ => Err(ApiError::invalid(
            "file transfer_method must be remote_url or local_file.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(v).unwrap();
        let request = ChatRequest::parse(&body)?;
        Ok(serde_json::to_value(request.to_upstream()).unwrap())
    }

    fn message(result: Result<Value, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidParam(message)) => message,
            other => panic!("not an invalid_param error: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_streaming_new_conversation_empty_inputs() {
        let up = parse(&json!({"query": "hi"})).unwrap();
        assert_eq!(
            up,
            json!({"inputs": {}, "query": "hi", "response_mode": "streaming", "conversation_id": ""})
        );
    }

    #[test]
    fn client_user_and_unknown_fields_are_not_forwarded() {
        let up = parse(&json!({"query": "hi", "user": "victim", "evil": 1, "inputs": {"a": 1}}))
            .unwrap();
        assert_eq!(
            up,
            json!({"inputs": {"a": 1}, "query": "hi", "response_mode": "streaming", "conversation_id": ""})
        );
    }

    #[test]
    fn inputs_go_as_sent_and_the_upstream_fields_keep_their_order() {
        let body = br#"{"inputs": {"b": [1, {"c": "\u00e9"}], "a": 1.50}, "evil": {"x": [[]]}, "query": "q\"x", "response_mode": "blocking"}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert_eq!(
            serde_json::to_string(&request.to_upstream()).unwrap(),
            r#"{"inputs":{"b": [1, {"c": "\u00e9"}], "a": 1.50},"query":"q\"x","response_mode":"blocking","conversation_id":""}"#
        );
        let owned = request.into_owned();
        assert_eq!(owned.query, "q\"x");
        assert_eq!(owned.mode, ResponseMode::Blocking);
    }

    #[test]
    fn files_and_auto_generate_name_are_sent_only_when_given() {
        let up = parse(&json!({"query": "q", "auto_generate_name": false, "files": []})).unwrap();
        assert_eq!(up["auto_generate_name"], json!(false));
        assert_eq!(up["files"], json!([]));
        let bare = parse(&json!({"query": "q"})).unwrap();
        assert!(bare.get("files").is_none() && bare.get("auto_generate_name").is_none());
    }

    #[test]
    fn nulls_mean_defaults() {
        let up = parse(&json!({"query": "hi", "conversation_id": null, "inputs": null, "files": null, "response_mode": null, "auto_generate_name": null})).unwrap();
        assert_eq!(
            up,
            json!({"inputs": {}, "query": "hi", "response_mode": "streaming", "conversation_id": ""})
        );
    }

    #[test]
    fn escaped_keys_and_values_are_read_and_the_last_of_a_repeated_key_counts() {
        let body = br#"{"qu\u0065ry": "x", "query": "h\u0069", "conversation_id": "aa0483db-e114-40ab-b70f-c2128bd443f\u0061", "response_mode": "bl\u006fcking"}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert_eq!(request.query, "hi");
        assert_eq!(
            request.conversation_id,
            "aa0483db-e114-40ab-b70f-c2128bd443fa"
        );
        assert_eq!(request.mode, ResponseMode::Blocking);
    }

    #[test]
    fn bad_fields_are_rejected_with_their_message() {
        for (body, expected) in [
            (json!({}), "query must be a non-empty string."),
            (json!({"query": "   "}), "query must be a non-empty string."),
            (json!({"query": 5}), "query must be a non-empty string."),
            (json!({"query": null}), "query must be a non-empty string."),
            (
                json!({"query": "q", "conversation_id": "abc"}),
                "conversation_id must be a UUID.",
            ),
            (
                json!({"query": "q", "conversation_id": 1}),
                "conversation_id must be a UUID.",
            ),
            (
                json!({"query": "q", "inputs": "x"}),
                "inputs must be an object.",
            ),
            (
                json!({"query": "q", "inputs": []}),
                "inputs must be an object.",
            ),
            (
                json!({"query": "q", "files": {}}),
                "files must be an array.",
            ),
            (
                json!({"query": "q", "response_mode": "fast"}),
                "response_mode must be \"streaming\" or \"blocking\".",
            ),
            (
                json!({"query": "q", "auto_generate_name": "false"}),
                "auto_generate_name must be a boolean.",
            ),
            (
                json!({"query": "q", "files": [{"type": "image", "transfer_method": "local_file"}]}),
                "upload_file_id must be a UUID.",
            ),
            (
                json!({"query": "q", "files": [{"type": "image", "transfer_method": "remote_url", "url": "javascript:x"}]}),
                "a remote_url file needs an http(s) url.",
            ),
            (
                json!({"query": "q", "files": [{"type": "exe", "transfer_method": "remote_url", "url": "https://x/y.png"}]}),
                "file type must be one of image, document, audio, video, custom.",
            ),
            (
                json!({"query": 5, "inputs": "x"}),
                "query must be a non-empty string.",
            ),
        ] {
            assert_eq!(message(parse(&body)), expected, "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_told_apart() {
        let deep = format!(
            "{{\"query\": \"q\", \"inputs\": {}1{}}}",
            "[".repeat(130),
            "]".repeat(130)
        );
        let lone_surrogate = br#"{"query": "q", "inputs": {"a": "\ud800"}}"#;
        let bad_utf8 = b"{\"query\": \"q\", \"x\": \"\xff\"}";
        for body in [
            &b"{\"query\": "[..],
            b"{'query': 'hi'}",
            b"",
            b"{\"query\": \"hi\"} trailing",
            b"{\"query\": \"hi\", \"x\": 1e400}",
            deep.as_bytes(),
            lone_surrogate,
            bad_utf8,
        ] {
            assert_eq!(
                message(ChatRequest::parse(body).map(|_| Value::Null)),
                "The body is not valid JSON.",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b"[]"[..],
            b"\"x\"",
            b"null",
            b"5",
            b"[{\"query\": \"hi\"}]",
        ] {
            assert_eq!(
                message(ChatRequest::parse(body).map(|_| Value::Null)),
                "The body must be a JSON object."
            );
        }
    }

    #[test]
    fn a_body_is_valid_json_exactly_when_serde_json_reads_it_as_a_value() {
        let mut bodies = Vec::new();
        for field in ["query", "inputs", "files", "response_mode", "x"] {
            for depth in [1, 2, 125, 126, 127, 128] {
                let (open, close) = ("[".repeat(depth), "]".repeat(depth));
                bodies.push(format!("{{\"{field}\": {open}1{close}}}"));
                bodies.push(format!(
                    "{{\"{field}\": {open}\"\\\"[\"{close}, \"query\": \"q\"}}"
                ));
            }
            for value in [
                r#""\ud800""#,
                r#""\ud83d\ude80""#,
                r#""a\u0000""#,
                r#"1e400"#,
                r#"-0.5e-3"#,
                r#"{"a": 1e400}"#,
                r#"{"a": "\udc00"}"#,
                r#"{"a": [1, 2.5, "\n"]}"#,
                r#""plain""#,
                r#"{"big": 1.5E3, "b": [1e2, "e"]}"#,
                r#"true"#,
                r#"null"#,
            ] {
                bodies.push(format!("{{\"{field}\": {value}}}"));
            }
        }
        for digits in [299, 300, 308, 309, 400] {
            let number = "9".repeat(digits);
            bodies.push(format!(
                "{{\"inputs\": {{\"a\": {number}}}, \"query\": \"q\"}}"
            ));
            bodies.push(format!(
                "{{\"inputs\": {{\"a\": -{number}.5}}, \"query\": \"q\"}}"
            ));
        }
        for body in bodies {
            let valid = serde_json::from_str::<Value>(&body).is_ok();
            let ours = ChatRequest::parse(body.as_bytes()).map(|_| Value::Null);
            let refused = matches!(&ours, Err(ApiError::InvalidParam(m)) if m == "The body is not valid JSON.");
            assert_eq!(valid, !refused, "{body}");
        }
    }

    #[test]
    fn files_keep_only_known_keys() {
        let up = parse(&json!({"query": "q", "files": [{"type": "image", "transfer_method": "local_file", "upload_file_id": "aa0483db-e114-40ab-b70f-c2128bd443fa", "x": 1}]})).unwrap();
        assert_eq!(
            up["files"],
            json!([{"type": "image", "transfer_method": "local_file", "upload_file_id": "aa0483db-e114-40ab-b70f-c2128bd443fa"}])
        );
    }
}
