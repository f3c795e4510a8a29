//! What a handler gets: the shared state, the request head, its query and its body, with
//! Flask's ways of reading JSON and Dify's ways of finding the end user.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::pyvalue::{py_str, truthy};
use super::reqparse::QueryArgs;
use super::state::{Shared, lock};

/// The end user Dify falls back to when `user` is optional and absent.
pub(crate) const DEFAULT_USER: &str = "DEFAULT-USER";

pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub headers: HeaderMap,
    pub query: QueryArgs,
    pub body: Bytes,
}

impl Ctx {
    /// Flask's `request.get_json()` followed by Dify's `.get(...)` on it.
    pub(crate) fn json(&self) -> Result<Map<String, Value>, ApiError> {
        if !is_json_content_type(&self.headers) {
            return Err(ApiError::unsupported_media_type());
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(map),
            // Dify calls `.get` on whatever was sent: an AttributeError.
            Ok(_) => Err(ApiError::Unknown),
            Err(_) => Err(ApiError::bad_json()),
        }
    }

    /// `user` from a JSON body; required or falling back to the default end user.
    pub(crate) fn json_user(
        &self,
        body: &Map<String, Value>,
        required: bool,
    ) -> Result<String, ApiError> {
        let user = body.get("user").filter(|u| truthy(u)).map(py_str);
        self.end_user(user, required)
    }

    /// `user` from the query string.
    pub(crate) fn query_user(&self, required: bool) -> Result<String, ApiError> {
        let user = self
            .query
            .get("user")
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        self.end_user(user, required)
    }

    fn end_user(&self, user: Option<String>, required: bool) -> Result<String, ApiError> {
        let user = match user {
            Some(user) => user,
            None if required => return Err(ApiError::user_required()),
            None => DEFAULT_USER.to_owned(),
        };
        lock(&self.shared.store).end_user_id(&user);
        Ok(user)
    }
}

/// Flask's `is_json`: `application/json` or `application/*+json`.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types_follow_flask() {
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap(),
            );
            is_json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_json_content_type(&HeaderMap::new()));
    }
}
