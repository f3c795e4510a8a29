//! Checks on ids and query parameters, made before any upstream call.

use std::collections::HashMap;

use crate::error::ApiError;

/// A hyphenated UUID (the only form Dify produces).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

pub fn uuid<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if is_uuid(value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!("{name} must be a UUID.")))
    }
}

pub fn task_id(value: &str) -> Result<&str, ApiError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            "task_id must be 1–64 characters of letters, digits and '-'.",
        ))
    }
}

/// The query string as a map; a parameter given twice is refused rather than guessed at.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::invalid(format!("{k} is given more than once.")));
            }
        }
        Ok(Query(map))
    }

    /// A value, with `""` counting as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn limit(&self) -> Result<Option<&str>, ApiError> {
        match self.get("limit") {
            None => Ok(None),
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(Some(raw)),
                _ => Err(ApiError::invalid("limit must be an integer from 1 to 100.")),
            },
        }
    }

    pub fn uuid(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.get(name).map(|v| uuid(name, v)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_pass() {
        assert!(is_uuid("aa0483db-e114-40ab-b70f-c2128bd443fa"));
        assert!(!is_uuid("aa0483dbe11440abb70fc2128bd443fa"));
        assert!(!is_uuid("{aa0483db-e114-40ab-b70f-c2128bd443fa}"));
        assert!(!is_uuid("../../etc/passwd"));
    }

    #[test]
    fn task_ids_are_restricted() {
        assert!(task_id("f02dec3c-358c-4b01-9451-860821071dba").is_ok());
        assert!(task_id("").is_err());
        assert!(task_id("a/b").is_err());
        assert!(task_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn limit_is_1_to_100() {
        for bad in ["0", "101", "abc", "-1", "1.5"] {
            let q = Query::parse(Some(&format!("limit={bad}"))).unwrap();
            assert!(q.limit().is_err(), "{bad}");
        }
        let q = Query::parse(Some("limit=100")).unwrap();
        assert_eq!(q.limit().unwrap(), Some("100"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(Query::parse(Some("limit=1&limit=2")).is_err());
    }
}
