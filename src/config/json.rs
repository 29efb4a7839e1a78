//! The small helpers every configuration section parses with: typed reads of JSON values that
//! fail with a [`ConfigError`] naming the field path, so that every section reports its problems
//! the same way. Each feature parses its own section with these, next to the code it configures.

use crate::headers::MAX_CUSTOM_HEADERS;
use crate::sampling::MIN_PROBABILITY;
use serde_json::{Map, Value};
use std::fmt;

/// A configuration problem: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for ConfigError {}

pub fn error(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        problem: problem.into(),
    }
}

/// How an error message names the type of a value it did not expect.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Rejects keys outside `allowed`, naming the first unknown one (`prefix` is the object's path
/// with its trailing `.`, or empty at the top level).
pub fn check_keys(
    object: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(error(
            format!("{prefix}{key}"),
            format!("unknown key; expected one of: {}", allowed.join(", ")),
        )),
    }
}

pub fn object<'v>(value: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ConfigError> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(error(
            path,
            format!("must be an object, got {}", type_name(value)),
        )),
    }
}

/// A non-empty string.
pub fn string<'v>(value: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    match value {
        Value::String(text) if !text.is_empty() => Ok(text),
        Value::String(_) => Err(error(path, "must not be empty")),
        _ => Err(error(
            path,
            format!("must be a string, got {}", type_name(value)),
        )),
    }
}

pub fn list<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>, ConfigError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(error(
            path,
            format!("must be a list, got {}", type_name(value)),
        )),
    }
}

pub fn boolean(value: &Value, path: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        _ => Err(error(
            path,
            format!("must be true or false, got {}", type_name(value)),
        )),
    }
}

pub fn positive_integer(value: &Value, path: &str) -> Result<u64, ConfigError> {
    match value.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(error(
            path,
            format!("must be a whole number of at least 1, got {value}"),
        )),
    }
}

/// A sampling probability: 0, or within [2^-56, 1].
pub fn probability(value: &Value, path: &str) -> Result<f64, ConfigError> {
    let Some(p) = value.as_f64() else {
        return Err(error(
            path,
            format!("must be a number between 0 and 1, got {}", type_name(value)),
        ));
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(error(path, format!("must be between 0 and 1, got {p}")));
    }
    if p > 0.0 && p < MIN_PROBABILITY {
        return Err(error(
            path,
            format!(
                "{p} is below the smallest expressible probability 2^-56 (use 0 to never sample)"
            ),
        ));
    }
    Ok(p)
}

/// A request header name a rule or the force check reads: an HTTP token, compared lower-case.
pub fn header_name(value: &Value, path: &str) -> Result<String, ConfigError> {
    let name = string(value, path)?.to_ascii_lowercase();
    let token = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(error(
            path,
            format!("\"{name}\" is not a valid HTTP header name"),
        ));
    }
    Ok(name)
}

/// Finds or adds `name` in the configuration's custom header names (what every request view
/// records beyond the trace headers), returning its index.
pub fn custom_header(
    custom: &mut Vec<String>,
    name: String,
    path: &str,
) -> Result<usize, ConfigError> {
    if let Some(i) = custom.iter().position(|known| *known == name) {
        return Ok(i);
    }
    if custom.len() >= MAX_CUSTOM_HEADERS {
        return Err(error(
            path,
            format!("at most {MAX_CUSTOM_HEADERS} distinct header names may be used"),
        ));
    }
    let index = custom.len();
    custom.push(name);
    Ok(index)
}
