//! Flask-RESTful `reqparse` as Dify 0.15.3 uses it: argument conversions and their error texts.

use serde_json::{Map, Value};

use super::errors::ApiError;
use super::pyvalue::{py_repr, py_str, type_name};

/// Query-string arguments, decoded like Werkzeug (`+` is a space, bad UTF-8 is replaced).
#[derive(Debug, Default, Clone)]
pub(crate) struct QueryArgs(Vec<(String, String)>);

impl QueryArgs {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k), form_decode(v))
            })
            .collect();
        QueryArgs(pairs)
    }

    /// The first value, as `request.args.get` and reqparse's `store` action take it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `application/x-www-form-urlencoded` decoding.
pub(crate) fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Percent-decoding; invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) enum Location {
    Json,
    Args,
}

/// A required argument that is absent.
pub(crate) fn missing(field: &str, location: Location) -> ApiError {
    let place = match location {
        Location::Json => "the JSON body",
        Location::Args => "the query string",
    };
    ApiError::param(field, format!("Missing required parameter in {place}"))
}

/// Python's `uuid.UUID(s)`: hyphens anywhere, braces, `urn:uuid:` prefix, any case. Returns the
/// canonical lower-case hyphenated form.
pub(crate) fn parse_python_uuid(s: &str) -> Option<String> {
    let hex = s.replace("urn:", "").replace("uuid:", "");
    let hex = hex.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Dify's `uuid_value` on a string argument: `""` passes as "none given".
pub(crate) fn uuid_value(field: &str, raw: &str) -> Result<Option<String>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    parse_python_uuid(raw)
        .map(Some)
        .ok_or_else(|| ApiError::param(field, format!("{raw} is not a valid uuid.")))
}

/// Dify's `uuid_value` on a JSON argument; `null` passes (reqparse arguments are nullable).
pub(crate) fn uuid_json(field: &str, v: &Value) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => uuid_value(field, s),
        other => Err(ApiError::param(
            field,
            format!("'{}' object has no attribute 'replace'", type_name(other)),
        )),
    }
}

/// Flask-RESTful's `int_range(lo, hi)`.
pub(crate) fn int_range(field: &str, raw: &str, lo: i64, hi: i64) -> Result<i64, ApiError> {
    let Some(digits) = python_int(raw) else {
        return Err(ApiError::param(
            field,
            format!("{raw} is not a valid integer"),
        ));
    };
    match digits.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(ApiError::param(
            field,
            format!("Invalid argument: {digits}. argument must be within the range {lo} - {hi}"),
        )),
    }
}

/// Python's `int(s)` for base 10, as the canonical decimal text (any size).
fn python_int(raw: &str) -> Option<String> {
    let s = raw.trim();
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let well_formed = !body.is_empty()
        && !body.starts_with('_')
        && !body.ends_with('_')
        && !body.contains("__")
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    let digits = digits.trim_start_matches('0');
    Some(match (digits.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits.to_owned(),
    })
}

/// A `choices=[...]` check on a value already turned into a string by `type=str`.
pub(crate) fn choice(field: &str, value: &str, choices: &[&str]) -> Result<(), ApiError> {
    if choices.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::param(
            field,
            format!("{value} is not a valid choice"),
        ))
    }
}

/// reqparse `type=str` on a JSON value (`null` stays `None`).
pub(crate) fn json_str(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => Some(py_str(other)),
    }
}

/// Python's `dict(v)`, which reqparse applies to `inputs`.
pub(crate) fn to_dict(v: &Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(map) => Ok(map.clone()),
        Value::String(s) if s.is_empty() => Ok(Map::new()),
        Value::String(_) => Err(bad_dict_element(0, 1)),
        Value::Array(items) => {
            let mut map = Map::new();
            for (i, item) in items.iter().enumerate() {
                let (key, value) = dict_pair(i, item)?;
                map.insert(key, value);
            }
            Ok(map)
        }
        other => Err(format!("'{}' object is not iterable", type_name(other))),
    }
}

fn dict_pair(i: usize, item: &Value) -> Result<(String, Value), String> {
    let parts: Vec<Value> = match item {
        Value::String(s) => s.chars().map(|c| Value::String(c.to_string())).collect(),
        Value::Array(a) => a.clone(),
        Value::Object(o) => o.keys().map(|k| Value::String(k.clone())).collect(),
        _ => {
            return Err(format!(
                "cannot convert dictionary update sequence element #{i} to a sequence"
            ));
        }
    };
    match parts.as_slice() {
        [key, value] => match key {
            Value::Array(_) | Value::Object(_) => {
                Err(format!("unhashable type: '{}'", type_name(key)))
            }
            Value::String(k) => Ok((k.clone(), value.clone())),
            other => Ok((py_repr(other), value.clone())),
        },
        _ => Err(bad_dict_element(i, parts.len())),
    }
}

fn bad_dict_element(i: usize, len: usize) -> String {
    format!("dictionary update sequence element #{i} has length {len}; 2 is required")
}

/// Python's `list(v)`, which reqparse applies to `files`.
pub(crate) fn to_list(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        Value::String(s) => Ok(s.chars().map(|c| Value::String(c.to_string())).collect()),
        Value::Object(o) => Ok(o.keys().map(|k| Value::String(k.clone())).collect()),
        other => Err(format!("'{}' object is not iterable", type_name(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn query_args_decode_like_werkzeug() {
        let q = QueryArgs::parse(Some("user=a+b%20c&limit=1&user=second&empty="));
        assert_eq!(q.get("user"), Some("a b c"));
        assert_eq!(q.get("limit"), Some("1"));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(q.get("none"), None);
        assert_eq!(percent_decode("%E4%BD%A0%zz"), "你%zz");
    }

    #[test]
    fn limit_errors_match_captures_11_to_13() {
        let err = |raw| match int_range("limit", raw, 1, 100) {
            Err(ApiError::Param { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err("0"),
            "Invalid argument: 0. argument must be within the range 1 - 100"
        );
        assert_eq!(
            err("101"),
            "Invalid argument: 101. argument must be within the range 1 - 100"
        );
        assert_eq!(err("abc"), "abc is not a valid integer");
        assert_eq!(
            err("00"),
            "Invalid argument: 0. argument must be within the range 1 - 100"
        );
        assert_eq!(int_range("limit", " +0_7 ", 1, 100), Ok(7));
        assert_eq!(int_range("limit", "100", 1, 100), Ok(100));
    }

    #[test]
    fn uuid_values_follow_python() {
        let id = "aa0483db-e114-40ab-b70f-c2128bd443fa";
        assert_eq!(uuid_value("last_id", id), Ok(Some(id.to_owned())));
        assert_eq!(
            uuid_value("last_id", "{AA0483DBE11440ABB70FC2128BD443FA}"),
            Ok(Some(id.to_owned()))
        );
        assert_eq!(uuid_value("last_id", ""), Ok(None));
        assert_eq!(
            uuid_value("last_id", "not-a-uuid"),
            Err(ApiError::param(
                "last_id",
                "not-a-uuid is not a valid uuid."
            ))
        );
        assert_eq!(
            uuid_json("conversation_id", &json!(5)),
            Err(ApiError::param(
                "conversation_id",
                "'int' object has no attribute 'replace'"
            ))
        );
    }

    #[test]
    fn dict_conversion_matches_capture_74_and_python() {
        assert_eq!(
            to_dict(&json!("x")),
            Err("dictionary update sequence element #0 has length 1; 2 is required".to_owned())
        );
        assert_eq!(to_dict(&json!("")), Ok(Map::new()));
        assert_eq!(
            to_dict(&json!(5)),
            Err("'int' object is not iterable".to_owned())
        );
        assert_eq!(
            to_dict(&json!([["a", 1]])).map(Value::Object),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            to_dict(&json!([1])),
            Err("cannot convert dictionary update sequence element #0 to a sequence".to_owned())
        );
    }
}
