//! Normalises Dify's error answers (several shapes across versions, dify-protocol.md §2) into
//! our one shape.

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;

/// Turns a non-success upstream answer to a keyed call into the error the browser gets.
/// Dify refusing our key (401, or 403 `forbidden`) is not the browser's fault: 502, logged
/// loudly. A 403 about the request itself (`file_access_denied`) is relayed as any error.
pub fn from_upstream(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> ApiError {
    let refused = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
            && !matches!(
                normalise(status, content_type, body),
                ApiError::Upstream { ref code, .. } if code != "forbidden" && code != "invalid_param"
            );
    if refused {
        tracing::error!(
            upstream_status = status.as_u16(),
            "Dify refused our API key: check DIFY_API_KEY and that the app's API access is enabled"
        );
        return ApiError::UpstreamUnavailable(format!("Dify answered {status} to our key"));
    }
    normalise(status, content_type, body)
}

/// `GET /site`'s non-success answer. Dify ≥ 1.4 answers 403 `forbidden` there for an app with no
/// site row or in an archived workspace (dify-protocol.md §10.4): the app has no WebApp settings,
/// not a refused key, so it is our `not_found`, as is the 404 of a Dify before 1.4. A 401, or a
/// 403 that is not Dify's `forbidden` (a proxy's page), is read as on any keyed call.
pub fn from_site_upstream(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> ApiError {
    if status == StatusCode::FORBIDDEN {
        let error = normalise(status, content_type, body);
        if error.code() == "forbidden" {
            return ApiError::NotFound(
                "This app has no WebApp settings (Dify answered 403 forbidden for /site).".into(),
            );
        }
    }
    match from_upstream(status, content_type, body) {
        error if error.status() == StatusCode::NOT_FOUND => ApiError::NotFound(
            "This Dify version has no WebApp settings (/site needs Dify 1.4 or later).".into(),
        ),
        error => error,
    }
}

/// Whether a `Content-Type` is an HTML page (`text/html`, in any case, with any parameters).
pub fn is_html(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"text/html")
}

/// A 2xx HTML page where Dify answers JSON or an event stream: a login page (SSO, Cloudflare
/// Access) or another page of a proxy in front of Dify, not Dify's answer. 502, logged as a
/// warning with its status and type (at most [`MAX_LOGGED_TYPE`] bytes of it).
pub fn from_html_success(status: StatusCode, content_type: &str) -> ApiError {
    let shown = content_type
        .char_indices()
        .take_while(|(i, _)| *i < MAX_LOGGED_TYPE)
        .map(|(_, c)| c)
        .collect::<String>();
    tracing::warn!(
        upstream_status = status.as_u16(),
        content_type = %shown,
        "Dify's address answered with an HTML page, not Dify's JSON: a login or proxy page in front of Dify? Check DIFY_BASE_URL and that the proxy lets API calls through"
    );
    ApiError::UpstreamUnavailable(format!("Dify answered {status} with an HTML page"))
}

/// The most of a `Content-Type` that goes into a log line.
const MAX_LOGGED_TYPE: usize = 200;

/// For signed file URLs (no key involved): Dify's 4xx are relayed in our shape, an HTML 4xx
/// keeps its status with a code derived from it.
pub fn from_file_upstream(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> ApiError {
    let error = normalise(status, content_type, body);
    if status.is_client_error() && matches!(error, ApiError::UpstreamUnavailable(_)) {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "invalid_param",
        };
        return ApiError::Upstream {
            status,
            code: code.to_owned(),
            message: "The file link is invalid or has expired.".to_owned(),
        };
    }
    error
}

fn normalise(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> ApiError {
    let looks_json = content_type
        .map(|ct| ct.to_ascii_lowercase().contains("json"))
        .unwrap_or(true);
    let parsed = if looks_json {
        serde_json::from_slice::<Value>(body).ok()
    } else {
        None
    };
    let Some(Value::Object(obj)) = parsed else {
        if status == StatusCode::NOT_FOUND && is_werkzeug_404(body) {
            return ApiError::NotFound(
                "This Dify version has no such endpoint (it may need a newer Dify).".into(),
            );
        }
        return ApiError::UpstreamUnavailable(format!(
            "Dify answered {status} with a non-JSON body ({} bytes)",
            body.len()
        ));
    };
    let code = obj
        .get("code")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if status.is_server_error() {
                "upstream_error".to_owned()
            } else {
                "invalid_param".to_owned()
            }
        });
    let mut message = obj
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(Value::Object(errors)) = obj.get("errors") {
        for (field, text) in errors {
            let text = text.as_str().unwrap_or_default();
            message.push_str(&format!("; {field}: {text}"));
        }
    } else if let Some(Value::String(param)) = obj.get("params")
        && !message.is_empty()
    {
        message.push_str(&format!(" ({param})"));
    }
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    ApiError::Upstream {
        status,
        code,
        message,
    }
}

/// Dify's own page for a route it does not have (an older version): Werkzeug's, not a proxy's.
fn is_werkzeug_404(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"The requested URL was not found on the server.").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(status: u16, body: &str) -> (u16, String, String) {
        let e = from_upstream(
            StatusCode::from_u16(status).unwrap(),
            Some("application/json"),
            body.as_bytes(),
        );
        (
            e.status().as_u16(),
            e.code().to_owned(),
            e.message().to_owned(),
        )
    }

    #[test]
    fn full_envelope_is_kept() {
        let got = norm(
            404,
            r#"{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}"#,
        );
        assert_eq!(
            got,
            (404, "not_found".into(), "Conversation Not Exists.".into())
        );
    }

    #[test]
    fn reqparse_shape_without_status_gets_it_from_http() {
        let got = norm(
            400,
            r#"{"code": "invalid_param", "message": "abc is not a valid integer", "params": "limit"}"#,
        );
        assert_eq!(got.0, 400);
        assert_eq!(got.1, "invalid_param");
        assert!(got.2.contains("abc is not a valid integer"));
    }

    #[test]
    fn restx_shape_without_code_becomes_invalid_param() {
        let got = norm(
            400,
            r#"{"errors": {"query": "The chat query Missing required parameter"}, "message": "Input payload validation failed"}"#,
        );
        assert_eq!(got.1, "invalid_param");
        assert!(got.2.starts_with("Input payload validation failed"));
    }

    #[test]
    fn a_500_without_status_keeps_difys_code() {
        let got = norm(
            500,
            r#"{"message": "Internal Server Error", "code": "unknown"}"#,
        );
        assert_eq!(got, (500, "unknown".into(), "Internal Server Error".into()));
    }

    #[test]
    fn a_5xx_without_code_becomes_upstream_error() {
        assert_eq!(norm(503, r#"{"message": "busy"}"#).1, "upstream_error");
    }

    #[test]
    fn html_error_pages_become_502() {
        let e = from_upstream(
            StatusCode::BAD_GATEWAY,
            Some("text/html"),
            b"<html>bad gateway</html>",
        );
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (502, "upstream_unavailable")
        );
    }

    #[test]
    fn difys_own_html_404_for_a_route_it_lacks_is_not_found() {
        let page = b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n";
        let e = from_upstream(
            StatusCode::NOT_FOUND,
            Some("text/html; charset=utf-8"),
            page,
        );
        assert_eq!((e.status().as_u16(), e.code()), (404, "not_found"));
    }

    #[test]
    fn a_proxys_html_404_is_still_502() {
        let page = b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        let e = from_upstream(StatusCode::NOT_FOUND, Some("text/html"), page);
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (502, "upstream_unavailable")
        );
    }

    #[test]
    fn a_403_about_the_request_is_relayed() {
        let got = norm(
            403,
            r#"{"code": "file_access_denied", "message": "File access denied", "status": 403}"#,
        );
        assert_eq!((got.0, got.1.as_str()), (403, "file_access_denied"));
    }

    #[test]
    fn a_403_forbidden_is_a_refused_key() {
        let got = norm(
            403,
            r#"{"code": "forbidden", "message": "The app's API service has been disabled.", "status": 403}"#,
        );
        assert_eq!((got.0, got.1.as_str()), (502, "upstream_unavailable"));
    }

    #[test]
    fn html_is_recognised_in_any_case_and_with_any_parameters() {
        for html in [
            "text/html",
            "text/html; charset=utf-8",
            "Text/HTML;charset=UTF-8",
            " TEXT/html ; q=1",
        ] {
            assert!(is_html(html.as_bytes()), "{html}");
        }
        for other in [
            "application/json",
            "text/event-stream; charset=utf-8",
            "text/htmlx",
            "application/xhtml+xml",
            "text/plain; x=text/html",
            "",
        ] {
            assert!(!is_html(other.as_bytes()), "{other}");
        }
    }

    fn site(status: u16, body: &str) -> (u16, String) {
        let e = from_site_upstream(
            StatusCode::from_u16(status).unwrap(),
            Some("application/json"),
            body.as_bytes(),
        );
        (e.status().as_u16(), e.code().to_owned())
    }

    #[test]
    fn a_site_dify_refuses_with_403_forbidden_is_not_found() {
        let got = site(
            403,
            r#"{"code": "forbidden", "message": "You don't have the permission to access the requested resource. It is either read-protected or not readable by the server.", "status": 403}"#,
        );
        assert_eq!(got, (404, "not_found".into()));
    }

    /// What `f` logs at WARN and above, captured on this thread only.
    fn logged(f: impl FnOnce()) -> String {
        crate::telemetry::captured::logged(tracing::Level::WARN, f)
    }

    #[test]
    fn a_site_without_settings_blames_no_key_and_a_403_elsewhere_does() {
        let forbidden = br#"{"code": "forbidden", "message": "You don't have the permission to access the requested resource. It is either read-protected or not readable by the server.", "status": 403}"#;
        let json = Some("application/json");
        let site = logged(|| {
            from_site_upstream(StatusCode::FORBIDDEN, json, forbidden);
        });
        assert_eq!(site, "", "nothing logged for an app without a site");
        let elsewhere = logged(|| {
            from_upstream(StatusCode::FORBIDDEN, json, forbidden);
        });
        assert!(
            elsewhere.contains("Dify refused our API key"),
            "{elsewhere}"
        );
    }

    #[test]
    fn a_site_dify_lacks_is_not_found_and_a_refused_key_still_502() {
        assert_eq!(
            site(
                404,
                r#"{"message": "The requested URL was not found on the server.", "status": 404}"#
            ),
            (404, "not_found".into())
        );
        assert_eq!(
            site(
                401,
                r#"{"code": "unauthorized", "message": "Access token is invalid", "status": 401}"#
            ),
            (502, "upstream_unavailable".into())
        );
        let proxy_403 = from_site_upstream(
            StatusCode::FORBIDDEN,
            Some("text/html"),
            b"<html>403 Forbidden</html>",
        );
        assert_eq!(proxy_403.code(), "upstream_unavailable");
    }

    #[test]
    fn a_refused_key_is_not_the_browsers_fault() {
        let e = norm(
            401,
            r#"{"code": "unauthorized", "message": "Access token is invalid", "status": 401}"#,
        );
        assert_eq!((e.0, e.1.as_str()), (502, "upstream_unavailable"));
    }
}
