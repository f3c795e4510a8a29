//! The app-key check of `validate_and_get_api_token` (protocol §1, captures 39–41).

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::errors::ApiError;

const MUST_START_WITH_BEARER: &str =
    "Authorization header must be provided and start with 'Bearer'";

pub(crate) fn check(headers: &HeaderMap, api_key: &str) -> Result<(), ApiError> {
    let unauthorized = |message: &str| ApiError::http(401, "unauthorized", message);
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthorized(MUST_START_WITH_BEARER));
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    if !value.contains(' ') {
        return Err(unauthorized(MUST_START_WITH_BEARER));
    }
    // Python's `value.split(None, 1)` unpacked into two names.
    let trimmed = value.trim_start();
    let (scheme, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let token = rest.trim_start();
    if token.is_empty() {
        return Err(ApiError::value(
            "not enough values to unpack (expected 2, got 1)",
        ));
    }
    if scheme.to_lowercase() != "bearer" {
        return Err(unauthorized("Authorization scheme must be 'Bearer'"));
    }
    if token != api_key {
        return Err(unauthorized("Access token is invalid"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const KEY: &str = "app-TESTKEY0000000000000000";

    fn with(value: Option<&str>) -> Result<(), ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        check(&headers, KEY)
    }

    fn message(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::Http {
                status: 401,
                message,
                ..
            }) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_keys_pass_with_any_scheme_case() {
        assert_eq!(with(Some(&format!("Bearer {KEY}"))), Ok(()));
        assert_eq!(with(Some(&format!("bearer {KEY}"))), Ok(()));
        assert_eq!(with(Some(&format!("BEARER  \t{KEY}"))), Ok(()));
    }

    #[test]
    fn failures_give_the_three_captured_messages() {
        assert_eq!(message(with(None)), MUST_START_WITH_BEARER);
        assert_eq!(message(with(Some(KEY))), MUST_START_WITH_BEARER);
        assert_eq!(
            message(with(Some("Basic abc"))),
            "Authorization scheme must be 'Bearer'"
        );
        assert_eq!(
            message(with(Some("Bearer app-doesnotexist0000000000"))),
            "Access token is invalid"
        );
        assert_eq!(
            message(with(Some(&format!("Bearer {KEY} ")))),
            "Access token is invalid"
        );
    }

    #[test]
    fn a_scheme_without_a_key_is_pythons_unpacking_error() {
        assert_eq!(
            with(Some("Bearer ")),
            Err(ApiError::value(
                "not enough values to unpack (expected 2, got 1)"
            ))
        );
    }
}
