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
