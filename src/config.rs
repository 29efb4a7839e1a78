//! Plugin configuration: JSON (Istio's WasmPlugin sends `pluginConfig` as JSON in a
//! StringValue), validated completely before the plugin starts. Every error names the field.

use crate::formats::Format;
use crate::sampling::{Threshold, MIN_PROBABILITY};
use serde_json::{Map, Value};
use std::fmt;

pub const DEFAULT_PROBABILITY: f64 = 0.01;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Formats read in order; the first valid one supplies the context.
    pub extract: Vec<Format>,
    /// Formats written on every request.
    pub inject: Vec<Format>,
    pub sampling: SamplingConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub probability: f64,
    /// Derived from `probability` once, so the request path compares integers only.
    pub threshold: Threshold,
}

impl SamplingConfig {
    fn new(probability: f64) -> Self {
        SamplingConfig {
            probability,
            threshold: Threshold::from_probability(probability),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            extract: Format::DEFAULT_EXTRACT.to_vec(),
            inject: Format::DEFAULT_INJECT.to_vec(),
            sampling: SamplingConfig::new(DEFAULT_PROBABILITY),
        }
    }
}

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

fn error(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        problem: problem.into(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Rejects keys outside `allowed`, naming the first unknown one.
fn check_keys(
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

fn format_list(value: &Value, path: &str) -> Result<Vec<Format>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(error(
            path,
            format!("must be a list of format names, got {}", type_name(value)),
        ));
    };
    let mut formats = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Value::String(name) = item else {
            return Err(error(
                item_path,
                format!("must be a format name, got {}", type_name(item)),
            ));
        };
        let Some(format) = Format::from_name(name) else {
            let known: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            return Err(error(
                item_path,
                format!(
                    "unknown format \"{name}\"; expected one of: {}",
                    known.join(", ")
                ),
            ));
        };
        if formats.contains(&format) {
            return Err(error(
                item_path,
                format!("format \"{name}\" is listed twice"),
            ));
        }
        formats.push(format);
    }
    Ok(formats)
}

fn probability(value: &Value, path: &str) -> Result<f64, ConfigError> {
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

fn sampling(value: &Value) -> Result<SamplingConfig, ConfigError> {
    let Value::Object(object) = value else {
        return Err(error(
            "sampling",
            format!("must be an object, got {}", type_name(value)),
        ));
    };
    check_keys(object, "sampling.", &["probability"])?;
    let p = match object.get("probability") {
        None => DEFAULT_PROBABILITY,
        Some(value) => probability(value, "sampling.probability")?,
    };
    Ok(SamplingConfig::new(p))
}

impl Config {
    /// Parses the plugin configuration. Empty (or only white space) means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let root: Value = serde_json::from_slice(bytes)
            .map_err(|e| error("(configuration)", format!("not valid JSON: {e}")))?;
        let Value::Object(object) = &root else {
            return Err(error(
                "(configuration)",
                format!("must be a JSON object, got {}", type_name(&root)),
            ));
        };
        check_keys(object, "", &["extract", "inject", "sampling"])?;
        let mut config = Config::default();
        if let Some(value) = object.get("extract") {
            config.extract = format_list(value, "extract")?;
        }
        if let Some(value) = object.get("inject") {
            config.inject = format_list(value, "inject")?;
        }
        if let Some(value) = object.get("sampling") {
            config.sampling = sampling(value)?;
        }
        Ok(config)
    }

    /// One line for the log when the plugin starts.
    pub fn summary(&self) -> String {
        let names = |formats: &[Format]| {
            formats
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "extract=[{}] inject=[{}] sampling.probability={}",
            names(&self.extract),
            names(&self.inject),
            self.sampling.probability
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        for input in ["", "  \n", "{}"] {
            assert_eq!(
                Config::from_json(input.as_bytes()),
                Ok(Config::default()),
                "{input:?}"
            );
        }
        let config = Config::default();
        assert_eq!(config.extract, Format::ALL.to_vec());
        assert_eq!(
            config.inject,
            vec![
                Format::TraceContext,
                Format::B3Multi,
                Format::XRay,
                Format::CloudTrace
            ]
        );
        assert_eq!(config.sampling.probability, 0.01);
    }

    #[test]
    fn full_config() {
        let config = Config::from_json(
            br#"{"extract": ["xray", "b3"], "inject": ["b3", "cloudtrace"], "sampling": {"probability": 0.5}}"#,
        )
        .unwrap();
        assert_eq!(config.extract, vec![Format::XRay, Format::B3]);
        assert_eq!(config.inject, vec![Format::B3, Format::CloudTrace]);
        assert_eq!(config.sampling.threshold, Threshold::from_probability(0.5));
        assert_eq!(
            config.summary(),
            "extract=[xray,b3] inject=[b3,cloudtrace] sampling.probability=0.5"
        );
    }

    #[test]
    fn empty_lists_and_edge_probabilities_are_allowed() {
        let config =
            Config::from_json(br#"{"extract": [], "inject": [], "sampling": {"probability": 0}}"#)
                .unwrap();
        assert!(config.extract.is_empty() && config.inject.is_empty());
        assert_eq!(config.sampling.threshold, Threshold::NEVER);
        let config = Config::from_json(br#"{"sampling": {"probability": 1}}"#).unwrap();
        assert_eq!(config.sampling.threshold, Threshold::ALWAYS);
    }

    #[test]
    fn error_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("{", "(configuration)", "not valid JSON"),
            ("[]", "(configuration)", "must be a JSON object, got a list"),
            (
                r#"{"foo": 1}"#,
                "foo",
                "unknown key; expected one of: extract, inject, sampling",
            ),
            (
                r#"{"extract": "b3"}"#,
                "extract",
                "must be a list of format names, got a string",
            ),
            (
                r#"{"extract": ["b3", "zipkin"]}"#,
                "extract[1]",
                "unknown format \"zipkin\"",
            ),
            (
                r#"{"inject": ["b3", 3]}"#,
                "inject[1]",
                "must be a format name, got a number",
            ),
            (
                r#"{"inject": ["xray", "xray"]}"#,
                "inject[1]",
                "listed twice",
            ),
            (
                r#"{"sampling": 0.5}"#,
                "sampling",
                "must be an object, got a number",
            ),
            (
                r#"{"sampling": {"rate": 0.5}}"#,
                "sampling.rate",
                "unknown key; expected one of: probability",
            ),
            (
                r#"{"sampling": {"probability": "0.5"}}"#,
                "sampling.probability",
                "got a string",
            ),
            (
                r#"{"sampling": {"probability": 1.5}}"#,
                "sampling.probability",
                "must be between 0 and 1, got 1.5",
            ),
            (
                r#"{"sampling": {"probability": -0.1}}"#,
                "sampling.probability",
                "must be between 0 and 1",
            ),
            (
                r#"{"sampling": {"probability": 1e-20}}"#,
                "sampling.probability",
                "below the smallest",
            ),
        ];
        for &(input, path, problem) in cases {
            let err = Config::from_json(input.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{input}");
            assert!(err.problem.contains(problem), "{input}: {}", err.problem);
        }
    }
}
