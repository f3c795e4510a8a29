//! The four error families of Dify 0.15.3 (protocol §2).

use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::respond::json_response;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiError {
    /// An HTTP exception: `{"code", "message", "status"}`.
    Http {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// A reqparse argument error: 400 `{"code": "invalid_param", "message", "params"}`.
    Param { field: String, message: String },
    /// A `ValueError` reaching the top: 400 `invalid_param` with a `status` key.
    Value(String),
    /// An unhandled exception: 500 `{"message": "Internal Server Error", "code": "unknown"}`.
    Unknown,
}

impl ApiError {
    pub(crate) fn http(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Http {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: &str) -> Self {
        Self::http(404, "not_found", message)
    }

    pub(crate) fn param(field: &str, message: impl Into<String>) -> Self {
        ApiError::Param {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn value(message: impl Into<String>) -> Self {
        ApiError::Value(message.into())
    }

    pub(crate) fn user_required() -> Self {
        Self::value("Arg user must be provided.")
    }

    /// Werkzeug's `BadRequest` default text: malformed JSON (capture 48).
    pub(crate) fn bad_json() -> Self {
        Self::http(400, "bad_request", BROWSER_SENT_BAD_REQUEST)
    }

    /// `request.files["file"]` raising `KeyError` (capture 36).
    pub(crate) fn bad_request_key_error() -> Self {
        Self::http(400, "bad_request_key_error", BROWSER_SENT_BAD_REQUEST)
    }

    /// Flask's `get_json()` on a body without a JSON content type (capture 61).
    pub(crate) fn unsupported_media_type() -> Self {
        Self::http(
            415,
            "unsupported_media_type",
            "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
        )
    }

    pub(crate) fn completion_request_error(message: &str) -> Self {
        Self::http(400, "completion_request_error", message)
    }
}

const BROWSER_SENT_BAD_REQUEST: &str =
    "The browser (or proxy) sent a request that this server could not understand.";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Http {
                status,
                code,
                message,
            } => json_response(
                status,
                &json!({"code": code, "message": message, "status": status}),
            ),
            ApiError::Param { field, message } => json_response(
                400,
                &json!({"code": "invalid_param", "message": message, "params": field}),
            ),
            ApiError::Value(message) => json_response(
                400,
                &json!({"code": "invalid_param", "message": message, "status": 400}),
            ),
            ApiError::Unknown => json_response(
                500,
                &json!({"message": "Internal Server Error", "code": "unknown"}),
            ),
        }
    }
}
