//! Reading typed fields of a JSON request body, with errors that name the field.

use super::ApiError;
use serde_json::{Map, Value};

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
    ApiError {
        status: 413,
        kind: "invalid_request_error",
        message: format!(
            "{key} has {n} items; at most {max_items} are accepted per request \
             (MAX_ITEMS_PER_REQUEST)"
        ),
        param: Some(key.into()),
    }
}
