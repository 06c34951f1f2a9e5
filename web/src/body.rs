//! Reading the JSON bodies of `POST /api/jobs` and `POST /api/live`: the
//! object and its typed members, a clear 400 for anything else.
use axum::body::Bytes;
use serde_json::Value;

use crate::error::ApiError;

/// The body of `POST /api/jobs` or `POST /api/live`, as a JSON object.
pub(crate) fn parse_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not valid JSON: {e}"))),
    }
}

pub(crate) fn opt_string(m: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(ApiError::bad_request(format!("'{key}' must be a string, not {v}"))),
    }
}

/// `models`: a list of names, or one comma-separated string.
pub(crate) fn models_of(m: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = match m.get("models") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("'models' must list names (strings), not {v}"))))
            .collect::<Result<_, _>>()?,
        Some(v) => Err(ApiError::bad_request(format!("'models' must be a list of names, not {v}")))?,
    };
    Ok(names)
}

/// `rules`: alert rules, a list of strings (absent: none).
pub(crate) fn rules_of(m: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    strings_of(m, "rules", "rules", r#"["crowd: count(person) >= 3 for 10s"]"#)
}

/// `zones`: a list of `NAME=x1,y1,...` strings (the coordinator checks them).
pub(crate) fn zones_of(m: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    strings_of(m, "zones", "zones", r#"["door=0.6,0.2,0.9,0.2,0.9,1,0.6,1"]"#)
}

fn strings_of(m: &serde_json::Map<String, Value>, key: &str, what: &str, example: &str) -> Result<Vec<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("'{key}' must list {what} (strings), not {v}"))))
            .collect(),
        Some(v) => Err(ApiError::bad_request(format!("'{key}' must be a list of {what} (strings), such as {example}, not {v}"))),
    }
}

/// `frame_step`: an integer (the coordinator refuses negative ones; 0 or
/// absent means every frame).
pub(crate) fn frame_step_of(m: &serde_json::Map<String, Value>) -> Result<i64, ApiError> {
    match m.get("frame_step") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("'frame_step' must be an integer (1 = every frame), not {v}"))),
    }
}

/// A boolean member of a request body; false when absent.
pub(crate) fn opt_bool(m: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| ApiError::bad_request(format!("'{key}' must be true or false, not {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_bodies_are_checked() {
        let m = |s: &str| serde_json::from_str::<serde_json::Map<String, Value>>(s).unwrap();
        assert_eq!(models_of(&m(r#"{"models":"objects, colors"}"#)).unwrap(), ["objects", "colors"]);
        assert_eq!(models_of(&m(r#"{"models":["joy"]}"#)).unwrap(), ["joy"]);
        assert!(models_of(&m(r#"{"models":[1]}"#)).is_err());
        assert_eq!(frame_step_of(&m(r#"{}"#)).unwrap(), 0);
        assert!(frame_step_of(&m(r#"{"frame_step":"two"}"#)).is_err());
        assert!(parse_object(&Bytes::from_static(b"[1]")).is_err());
    }
}
