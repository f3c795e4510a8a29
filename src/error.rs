//! The one error type: every failure outside an open stream becomes Dify-shaped JSON
//! `{"code", "message", "status"}` (API.md §3). Internal causes are logged, never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidParam(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    /// With the `Allow` header's value, where the route knows it (axum adds its own).
    MethodNotAllowed(Option<&'static str>),
    /// The request body stalled for longer than `REQUEST_BODY_TIMEOUT_SECS`.
    RequestTimeout,
    PayloadTooLarge,
    /// The request target is longer than the proxy accepts.
    UriTooLong,
    UnsupportedMediaType(String),
    RateLimited {
        retry_after_secs: u64,
    },
    /// The identity has spent today's `TOKEN_BUDGET_PER_DAY`; retry after the next UTC midnight.
    BudgetExceeded {
        retry_after_secs: u64,
    },
    /// A resume asked for bytes no longer kept.
    StreamExpired,
    /// The cause is logged; the client sees a generic message.
    Internal(String),
    /// The cause is logged; the client sees a generic message.
    UpstreamUnavailable(String),
    Overloaded {
        retry_after_secs: u64,
    },
    ShuttingDown,
    UpstreamTimeout,
    /// An error answered by Dify, normalised to our shape.
    Upstream {
        status: StatusCode,
        code: String,
        message: String,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    status: u16,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::InvalidParam(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParam(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } | ApiError::BudgetExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::StreamExpired => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Overloaded { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Upstream { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::InvalidParam(_) => "invalid_param",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BudgetExceeded { .. } => "budget_exceeded",
            ApiError::StreamExpired => "stream_expired",
            ApiError::Internal(_) => "internal_error",
            ApiError::UpstreamUnavailable(_) => "upstream_unavailable",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::Upstream { code, .. } => code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ApiError::InvalidParam(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Upstream { message: m, .. } => m,
            ApiError::MethodNotAllowed(_) => "The method is not allowed for the requested URL.",
            ApiError::RequestTimeout => "The request body arrived too slowly.",
            ApiError::PayloadTooLarge => "The request body is too large.",
            ApiError::UriTooLong => "The request URL is too long.",
            ApiError::RateLimited { .. } => "Too many requests. Please try again later.",
            ApiError::BudgetExceeded { .. } => {
                "Today's token budget is spent. Please try again after midnight (UTC)."
            }
            ApiError::StreamExpired => "That part of the answer is no longer kept.",
            ApiError::Internal(_) => "The server met an internal error.",
            ApiError::UpstreamUnavailable(_) => "The Dify service cannot be reached.",
            ApiError::Overloaded { .. } => "The server is busy. Please try again later.",
            ApiError::ShuttingDown => "The server is restarting. Please try again.",
            ApiError::UpstreamTimeout => "The Dify service did not answer in time.",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::BudgetExceeded { retry_after_secs }
            | ApiError::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            ApiError::ShuttingDown => Some(5),
            _ => None,
        }
    }

    /// The JSON body bytes of this error.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            code: self.code(),
            message: self.message(),
            status: self.status().as_u16(),
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code(),
            self.message()
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::UpstreamUnavailable(cause) => tracing::warn!(%cause, "upstream unavailable"),
            _ => {}
        }
        let mut response = (self.status(), self.to_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::MethodNotAllowed(Some(allow)) = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_not_shown() {
        let body = ApiError::Internal("db password is hunter2".into()).to_json();
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("\"code\":\"internal_error\""));
        assert!(text.contains("\"status\":500"));
    }

    #[test]
    fn upstream_errors_keep_difys_status_and_code() {
        let e = ApiError::Upstream {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            message: "Conversation Not Exists.".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "not_found", "message": "Conversation Not Exists.", "status": 404})
        );
    }
}
