//! Checking `inputs` against the app's input form, as 0.15.3's `_prepare_user_inputs` does on a
//! conversation's first turn.

use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::pyvalue::py_repr;

struct Variable<'a> {
    kind: &'a str,
    name: &'a str,
    required: bool,
    max_length: Option<u64>,
    options: Option<&'a Value>,
}

/// The form's variables: `user_input_form` is a list of one-key objects `{"<type>": {...}}`.
fn variables(form: &Value) -> Vec<Variable<'_>> {
    form.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let (kind, spec) = item.as_object()?.iter().next()?;
            Some(Variable {
                kind,
                name: spec.get("variable")?.as_str()?,
                required: spec
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                max_length: spec.get("max_length").and_then(Value::as_u64),
                options: spec.get("options"),
            })
        })
        .collect()
}

/// The inputs Dify stores: one entry per form variable (absent ones as null), validated, with
/// NUL characters removed; keys outside the form are dropped.
pub(crate) fn prepare_inputs(
    form: &Value,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let mut inputs = Map::new();
    for var in variables(form) {
        let value = validate(&var, given.get(var.name).cloned().unwrap_or(Value::Null))?;
        let value = match value {
            Value::String(s) => Value::String(s.replace('\0', "")),
            other => other,
        };
        inputs.insert(var.name.to_owned(), value);
    }
    Ok(inputs)
}

fn validate(var: &Variable<'_>, value: Value) -> Result<Value, ApiError> {
    let name = var.name;
    if value.is_null() {
        if var.required {
            return Err(ApiError::value(format!("{name} is required in input form")));
        }
        return Ok(value);
    }
    let textual = matches!(var.kind, "text-input" | "select" | "paragraph");
    if textual && !value.is_string() {
        return Err(ApiError::value(format!(
            "(type '{}') {name} in input form must be a string",
            var.kind
        )));
    }
    if var.kind == "number"
        && let Value::String(s) = &value
    {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Value::Null);
        }
        let number = if s.contains('.') {
            s.parse::<f64>().ok().map(|f| json!(f))
        } else {
            s.parse::<i64>().ok().map(|i| json!(i))
        };
        return number.ok_or_else(|| {
            ApiError::value(format!("{name} in input form must be a valid number"))
        });
    }
    if var.kind == "select" {
        let options = var.options.cloned().unwrap_or(json!([]));
        let allowed = options.as_array().is_some_and(|o| o.contains(&value));
        if !allowed {
            return Err(ApiError::value(format!(
                "{name} in input form must be one of the following: {}",
                py_repr(&options)
            )));
        }
    }
    if matches!(var.kind, "text-input" | "paragraph")
        && let (Some(max), Some(text)) = (var.max_length.filter(|m| *m > 0), value.as_str())
        && text.chars().count() as u64 > max
    {
        return Err(ApiError::value(format!(
            "{name} in input form must be less than {max} characters"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> Value {
        json!([
            {"text-input": {"label": "Name", "variable": "name", "required": true, "max_length": 5}},
            {"select": {"label": "Tone", "variable": "tone", "required": false, "options": ["calm", "fun"]}},
            {"number": {"label": "Age", "variable": "age", "required": false}},
        ])
    }

    fn err(given: Value) -> String {
        match prepare_inputs(&form(), given.as_object().unwrap()) {
            Err(ApiError::Value(message)) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_inputs_keep_only_form_variables() {
        let inputs = prepare_inputs(
            &form(),
            json!({"name": "Al\u{0}i", "age": "42", "extra": 1})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(inputs),
            json!({"name": "Ali", "tone": null, "age": 42})
        );
        assert_eq!(prepare_inputs(&json!([]), &Map::new()).unwrap(), Map::new());
    }

    #[test]
    fn invalid_inputs_give_difys_messages() {
        assert_eq!(err(json!({})), "name is required in input form");
        assert_eq!(
            err(json!({"name": 1})),
            "(type 'text-input') name in input form must be a string"
        );
        assert_eq!(
            err(json!({"name": "toolong"})),
            "name in input form must be less than 5 characters"
        );
        assert_eq!(
            err(json!({"name": "a", "tone": "sad"})),
            "tone in input form must be one of the following: ['calm', 'fun']"
        );
        assert_eq!(
            err(json!({"name": "a", "age": "x"})),
            "age in input form must be a valid number"
        );
    }
}
