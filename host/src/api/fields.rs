//! Reading typed fields of a JSON request body, with errors that name the field.

use super::{ApiError, ErrorKind};
use crate::text::Truncation;
use serde_json::{Map, Value};

/// What kind of JSON value `v` is, for messages ("a string", "an array", ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string field.
pub fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(
            key,
            format!("{key} must be a string, got {}", type_name(other)),
        )),
    }
}

/// The first of `names` present in `body` (they are synonyms; giving two is an error).
pub fn one_of<'a>(
    body: &'a Map<String, Value>,
    names: &[&'a str],
) -> Result<Option<(&'a str, &'a Value)>, ApiError> {
    let present: Vec<(&str, &Value)> = names
        .iter()
        .filter_map(|n| body.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
        .collect();
    match present.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        [(a, _), (b, _), ..] => Err(ApiError::invalid(
            b,
            format!("{a} and {b} mean the same; give only one of them"),
        )),
    }
}

/// An optional boolean field.
pub fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid(
            key,
            format!("{key} must be a boolean, got {}", type_name(other)),
        )),
    }
}

/// An optional integer field of at least 1.
pub fn opt_positive(body: &Map<String, Value>, key: &str) -> Result<Option<usize>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(ApiError::invalid(
                key,
                format!("{key} must be a positive integer, got {v}"),
            )),
        },
    }
}

/// The request body as a JSON object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::invalid(
            "body",
            format!(
                "request body must be a JSON object, got {}",
                type_name(body)
            ),
        )
    })
}

/// The error for a list longer than `MAX_ITEMS_PER_REQUEST`.
pub fn too_many(key: &str, n: usize, max_items: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        format!(
            "{key} has {n} items; at most {max_items} are accepted per request \
             (MAX_ITEMS_PER_REQUEST)"
        ),
    )
    .at(key)
}

/// A required list of texts (or one text) under `key`, naming the item at fault.
pub fn texts(
    body: &Map<String, Value>,
    key: &str,
    max_items: usize,
) -> Result<Vec<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Err(ApiError::invalid(
            key,
            format!("{key} is required: a string or a list of strings"),
        )),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid(
                    key,
                    format!("{key} must not be an empty list"),
                ));
            }
            if items.len() > max_items {
                return Err(too_many(key, items.len(), max_items));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ApiError::invalid(
                        key,
                        format!(
                            "{key}[{i}] must be a string, got {} (token-id arrays are not \
                             accepted)",
                            type_name(other)
                        ),
                    )),
                })
                .collect()
        }
        Some(other) => Err(ApiError::invalid(
            key,
            format!(
                "{key} must be a string or a list of strings, got {}",
                type_name(other)
            ),
        )),
    }
}

/// What to do with over-long inputs: `truncate` (TEI's boolean, or Cohere's `NONE` / `START`
/// / `END`) and `truncation_direction` (`left` / `right`); by default the end is cut off.
pub fn truncation(body: &Map<String, Value>) -> Result<Truncation, ApiError> {
    let direction = match opt_str(body, "truncation_direction")? {
        None => None,
        Some(d) => match d.to_ascii_lowercase().as_str() {
            "right" => Some(Truncation::Right),
            "left" => Some(Truncation::Left),
            _ => {
                return Err(ApiError::invalid(
                    "truncation_direction",
                    format!("truncation_direction must be 'left' or 'right', got '{d}'"),
                ))
            }
        },
    };
    let side = direction.unwrap_or_default();
    match body.get("truncate") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(side),
        Some(Value::Bool(false)) => Ok(Truncation::Refuse),
        Some(Value::String(s)) => match s.to_ascii_uppercase().as_str() {
            "NONE" => Ok(Truncation::Refuse),
            "END" => Ok(Truncation::Right),
            "START" => Ok(Truncation::Left),
            _ => Err(ApiError::invalid(
                "truncate",
                format!("truncate must be a boolean or one of NONE, START, END; got '{s}'"),
            )),
        },
        Some(other) => Err(ApiError::invalid(
            "truncate",
            format!(
                "truncate must be a boolean or one of NONE, START, END; got {}",
                type_name(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn how(v: Value) -> Result<Truncation, ApiError> {
        truncation(v.as_object().unwrap())
    }

    #[test]
    fn truncation_reads_teis_and_coheres_spellings() {
        assert_eq!(how(json!({})).unwrap(), Truncation::Right);
        assert_eq!(how(json!({"truncate": true})).unwrap(), Truncation::Right);
        assert_eq!(how(json!({"truncate": false})).unwrap(), Truncation::Refuse);
        let left = json!({"truncate": true, "truncation_direction": "Left"});
        assert_eq!(how(left).unwrap(), Truncation::Left);
        assert_eq!(
            how(json!({"truncate": "NONE"})).unwrap(),
            Truncation::Refuse
        );
        assert_eq!(how(json!({"truncate": "start"})).unwrap(), Truncation::Left);
        assert_eq!(how(json!({"truncate": "END"})).unwrap(), Truncation::Right);
        let e = how(json!({"truncate": "MIDDLE"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("truncate"));
        let e = how(json!({"truncate": 1})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("truncate"));
        let e = how(json!({"truncation_direction": "up"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("truncation_direction"));
    }

    #[test]
    fn texts_name_the_key_and_item() {
        let body = json!({"inputs": ["a", 2]});
        let e = texts(body.as_object().unwrap(), "inputs", 4).unwrap_err();
        assert!(e.message.contains("inputs[1]"), "{}", e.message);
        let body = json!({"inputs": ["a", "b", "c"]});
        assert_eq!(
            texts(body.as_object().unwrap(), "inputs", 2)
                .unwrap_err()
                .status(),
            413
        );
        let body = json!({"inputs": "one"});
        assert_eq!(
            texts(body.as_object().unwrap(), "inputs", 2).unwrap(),
            ["one"]
        );
    }
}
