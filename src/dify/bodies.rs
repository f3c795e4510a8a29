//! The JSON bodies Dify is sent, one type per endpoint, borrowing from the request so they are
//! serialised without a copy. None has a `user`: the client adds it to every call, in one place.

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// `POST /chat-messages`.
#[derive(Debug, Serialize)]
pub struct ChatMessage<'a> {
    pub inputs: &'a Inputs<'a>,
    pub query: &'a str,
    pub response_mode: &'static str,
    pub conversation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_generate_name: Option<bool>,
}

impl ChatMessage<'_> {
    /// The body with the caller's `user`, as `serde_json` writes [`WithUser`] of it, in one
    /// buffer of its exact size.
    pub(super) fn to_vec_with_user(&self, user: &str) -> Result<Vec<u8>, serde_json::Error> {
        if self.files.is_some() {
            return serde_json::to_vec(&WithUser { body: self, user });
        }
        let inputs = match self.inputs {
            Inputs::Empty => "{}",
            Inputs::Raw(raw) => raw.get(),
            Inputs::Owned(raw) => raw.get(),
        };
        let auto_generate_name = match self.auto_generate_name {
            None => "",
            Some(true) => ",\"auto_generate_name\":true",
            Some(false) => ",\"auto_generate_name\":false",
        };
        let len = r#"{"inputs":,"query":,"response_mode":"","conversation_id":,"user":}"#.len()
            + inputs.len()
            + escaped_len(self.query)
            + self.response_mode.len()
            + escaped_len(self.conversation_id)
            + auto_generate_name.len()
            + escaped_len(user);
        let mut out = Vec::with_capacity(len);
        let string = |out: &mut Vec<u8>, text: &str| {
            if escaped_len(text) == text.len() + 2 {
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
                Ok(())
            } else {
                serde_json::to_writer(&mut *out, text)
            }
        };
        out.extend_from_slice(b"{\"inputs\":");
        out.extend_from_slice(inputs.as_bytes());
        out.extend_from_slice(b",\"query\":");
        string(&mut out, self.query)?;
        out.extend_from_slice(b",\"response_mode\":\"");
        out.extend_from_slice(self.response_mode.as_bytes());
        out.extend_from_slice(b"\",\"conversation_id\":");
        string(&mut out, self.conversation_id)?;
        out.extend_from_slice(auto_generate_name.as_bytes());
        out.extend_from_slice(b",\"user\":");
        string(&mut out, user)?;
        out.push(b'}');
        Ok(out)
    }
}

/// The length of `text` as a JSON string, quotes included, escaped as `serde_json` escapes it.
fn escaped_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | b'\t' | b'\n' | 0x0c | b'\r' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// `inputs` as the client sent it (a JSON object, forwarded as given); absent or `null` is `{}`.
#[derive(Debug, Clone)]
pub enum Inputs<'a> {
    Empty,
    Raw(&'a RawValue),
    Owned(Box<RawValue>),
}

impl Serialize for Inputs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Inputs::Empty => serde::ser::SerializeMap::end(serializer.serialize_map(Some(0))?),
            Inputs::Raw(raw) => raw.serialize(serializer),
            Inputs::Owned(raw) => raw.serialize(serializer),
        }
    }
}

impl Inputs<'_> {
    pub fn into_owned(self) -> Inputs<'static> {
        match self {
            Inputs::Empty => Inputs::Empty,
            Inputs::Raw(raw) => Inputs::Owned(raw.to_owned()),
            Inputs::Owned(raw) => Inputs::Owned(raw),
        }
    }
}

/// `POST /conversations/{id}/name`: a name, or a name Dify makes up (which costs tokens).
#[derive(Debug, PartialEq, Serialize)]
pub struct Rename<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub auto_generate: bool,
}

/// `POST /messages/{id}/feedbacks`: `rating` is `null` to take a rating back.
#[derive(Debug, PartialEq, Serialize)]
pub struct Feedback<'a> {
    pub rating: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// `POST /text-to-audio`: a message's answer read aloud, or a text.
#[derive(Debug, PartialEq, Serialize)]
pub struct TextToAudio<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<&'a str>,
}

/// The calls Dify expects with a JSON body that holds nothing but the `user` (stop, delete).
#[derive(Debug, Serialize)]
pub struct UserOnly {}

/// Any body with the caller's `user` added (after the body's own fields).
#[derive(Serialize)]
pub(super) struct WithUser<'a, B: ?Sized> {
    #[serde(flatten)]
    pub body: &'a B,
    pub user: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent<B: Serialize>(body: &B) -> Value {
        serde_json::to_value(WithUser { body, user: "u" }).unwrap_or_default()
    }

    #[test]
    fn a_chat_message_is_written_as_serde_json_writes_it() {
        let raw = serde_json::value::RawValue::from_string(r#"{"a": [1, "\u00e9"]}"#.into())
            .unwrap_or_else(|_| unreachable!());
        let files = [json!({"type": "image"})];
        for text in [
            "",
            "hi",
            "q\"x\\y",
            "\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}",
            "é🚀",
        ] {
            for inputs in [&Inputs::Empty, &Inputs::Raw(&raw)] {
                for (files, auto_generate_name) in [
                    (None, None),
                    (None, Some(true)),
                    (None, Some(false)),
                    (Some(&files[..]), Some(false)),
                ] {
                    let message = ChatMessage {
                        inputs,
                        query: text,
                        response_mode: "streaming",
                        conversation_id: text,
                        files,
                        auto_generate_name,
                    };
                    let ours = message.to_vec_with_user(text).unwrap_or_default();
                    let theirs = serde_json::to_vec(&WithUser {
                        body: &message,
                        user: text,
                    })
                    .unwrap_or_default();
                    assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&theirs)
                    );
                    if files.is_none() {
                        assert_eq!(ours.len(), ours.capacity(), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_user_is_added_to_every_body() {
        assert_eq!(sent(&UserOnly {}), json!({"user": "u"}));
        assert_eq!(
            sent(&Rename {
                name: Some("Trip"),
                auto_generate: false
            }),
            json!({"name": "Trip", "auto_generate": false, "user": "u"})
        );
        assert_eq!(
            sent(&Feedback {
                rating: None,
                content: None
            }),
            json!({"rating": null, "user": "u"})
        );
    }
}
