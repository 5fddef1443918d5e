//! The automation service's `RunCompleteRequest` rules, as its fixtures
//! (`tests/data/fixtures/run_complete_{valid,invalid}.json`) show them:
//! a JSON object; `status` is `COMPLETED` or `FAILED`; no field outside
//! the model's seven; strings where strings are due (no coercion);
//! `cost` a number or a numeric string; `error` a string or an object;
//! `blocking_factor` and `task_outcome` objects; every optional field may
//! be null.
//!
//! Shared by the integration tests (the callback sink checks every body it
//! receives) and by the unit tests of `callbacks::payload` (`#[path]`).

use serde_json::Value;

/// The model's fields.
pub const FIELDS: [&str; 7] = [
    "status",
    "run_id",
    "conversation_id",
    "error",
    "cost",
    "blocking_factor",
    "task_outcome",
];

/// Checks a body against the rules; the error names the first broken one.
pub fn validate(body: &Value) -> Result<(), String> {
    let Some(map) = body.as_object() else {
        return Err(format!("body is not an object: {body}"));
    };
    if let Some(extra) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("extra field {extra:?} is forbidden"));
    }
    match map.get("status") {
        Some(Value::String(s)) if s == "COMPLETED" || s == "FAILED" => {}
        other => return Err(format!("status must be COMPLETED or FAILED, not {other:?}")),
    }
    for field in ["run_id", "conversation_id"] {
        match map.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => return Err(format!("{field} must be a string, not {other}")),
        }
    }
    match map.get("error") {
        None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Object(_)) => {}
        Some(other) => return Err(format!("error must be a string or an object, not {other}")),
    }
    match map.get("cost") {
        None | Some(Value::Null) | Some(Value::Number(_)) => {}
        Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => {}
        Some(other) => return Err(format!("cost must be a number, not {other}")),
    }
    for field in ["blocking_factor", "task_outcome"] {
        match map.get(field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => return Err(format!("{field} must be an object, not {other}")),
        }
    }
    Ok(())
}

/// Checks a raw body (text) against the rules.
pub fn validate_text(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    validate(&value)?;
    Ok(value)
}

/// Checks that [`validate`] agrees with every case of the fixtures.
pub fn check_against_fixtures(dir: &std::path::Path) {
    let read = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let valid = read("run_complete_valid.json");
    let invalid = read("run_complete_invalid.json");
    assert!(valid.len() > 10 && invalid.len() > 10, "fixtures present");
    for case in &valid {
        if let Err(err) = validate(&case["payload"]) {
            panic!("valid fixture {:?} rejected: {err}", case["name"]);
        }
    }
    for case in &invalid {
        let res = match case.get("raw_json") {
            Some(raw) => validate_text(raw.as_str().unwrap()).map(|_| ()),
            None => validate(&case["payload"]),
        };
        assert!(
            res.is_err(),
            "invalid fixture {:?} accepted by the rules",
            case["name"]
        );
    }
}
