//! Plugin configuration: JSON (Istio's WasmPlugin sends `pluginConfig` as JSON in a
//! StringValue), validated completely before the plugin starts. Every error names the field.

use crate::baggage::Spelling;
use crate::budget::Limits;
use crate::force::ForceKey;
use crate::formats::Format;
use crate::headers::{HeaderName, Scan, MAX_CUSTOM_HEADERS};
use crate::response::ResponseConfig;
use crate::sampling::{Threshold, MIN_PROBABILITY};
use crate::trust::{Cidr, PrincipalPattern, TrustPolicy};
use serde_json::{Map, Value};
use std::fmt;

pub const DEFAULT_PROBABILITY: f64 = 0.01;
/// The specification's recommended `th` precision.
pub const DEFAULT_PRECISION: u32 = 4;
pub const DEFAULT_FORCE_MAX_PER_SECOND: u64 = 10;
/// Shorter secrets are guessable; HMAC keys should be at least as long as a block of entropy.
const MIN_SECRET_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Formats read in order; the first valid one supplies the context.
    pub extract: Vec<Format>,
    /// Formats written on every request.
    pub inject: Vec<Format>,
    pub sampling: SamplingConfig,
    pub baggage: BaggageConfig,
    /// Header names the rules and the force check read, beyond the trace headers.
    pub custom_headers: Vec<String>,
    /// `response`: what responses carry; `None` leaves them untouched.
    pub response: Option<ResponseConfig>,
}

/// Baggage is opt-in: `"baggage"` in `extract` reads it, in `inject` writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct BaggageConfig {
    pub extract: bool,
    pub inject: bool,
    /// `baggage.spellings`: the spellings written when injecting.
    pub spellings: Vec<Spelling>,
}

impl Default for BaggageConfig {
    fn default() -> Self {
        BaggageConfig {
            extract: false,
            inject: false,
            spellings: Spelling::ALL.to_vec(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub probability: f64,
    /// Hex digits of `th`; thresholds are rounded to this precision.
    pub precision: u32,
    /// Derived from `probability` once, so the request path compares integers only.
    pub threshold: Threshold,
    pub rules: Vec<Rule>,
    pub trust: TrustPolicy,
    pub force: Option<ForceConfig>,
    pub max_sampled_per_second: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            probability: DEFAULT_PROBABILITY,
            precision: DEFAULT_PRECISION,
            threshold: Threshold::from_probability_with_precision(
                DEFAULT_PROBABILITY,
                DEFAULT_PRECISION,
            ),
            rules: Vec::new(),
            trust: TrustPolicy::trust_everyone(),
            force: None,
            max_sampled_per_second: None,
        }
    }
}

impl SamplingConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_sampled_per_second: self.max_sampled_per_second,
            max_forced_per_second: self.force.as_ref().map_or(0, |force| force.max_per_second),
            precision: self.precision,
        }
    }
}

/// `sampling.rules[]`: the first rule whose every condition matches sets the probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub conditions: RuleMatch,
    pub probability: f64,
    pub threshold: Threshold,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct RuleMatch {
    /// Lower-case host, optionally `*.` for any subdomain; compared without the port.
    pub authority: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    /// Index into [`Config::custom_headers`] and the exact value wanted (`None`: present).
    pub header: Option<(usize, Option<String>)>,
}

/// `sampling.force`.
#[derive(Clone, Debug, PartialEq)]
pub struct ForceConfig {
    /// Lower-case header name; its index in [`Config::custom_headers`] is `header_index`.
    pub header: String,
    pub header_index: usize,
    pub keys: Vec<ForceKey>,
    pub max_per_second: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            extract: Format::DEFAULT_EXTRACT.to_vec(),
            inject: Format::DEFAULT_INJECT.to_vec(),
            sampling: SamplingConfig::default(),
            baggage: BaggageConfig::default(),
            custom_headers: Vec::new(),
            response: None,
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

pub(crate) fn error(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        problem: problem.into(),
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
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
pub(crate) fn check_keys(
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

/// The name that turns on baggage in `extract`/`inject` (it is not a trace-context format).
const BAGGAGE: &str = "baggage";

/// A list of format names; `"baggage"` may appear among them and is returned as a flag.
fn format_list(value: &Value, path: &str) -> Result<(Vec<Format>, bool), ConfigError> {
    let Value::Array(items) = value else {
        return Err(error(
            path,
            format!("must be a list of format names, got {}", type_name(value)),
        ));
    };
    let mut formats = Vec::with_capacity(items.len());
    let mut baggage = false;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Value::String(name) = item else {
            return Err(error(
                item_path,
                format!("must be a format name, got {}", type_name(item)),
            ));
        };
        let format = Format::from_name(name);
        let listed_twice = match format {
            Some(format) => formats.contains(&format),
            None if name == BAGGAGE => baggage,
            None => {
                let known: Vec<&str> = Format::ALL
                    .iter()
                    .map(|f| f.name())
                    .chain([BAGGAGE])
                    .collect();
                return Err(error(
                    item_path,
                    format!(
                        "unknown format \"{name}\"; expected one of: {}",
                        known.join(", ")
                    ),
                ));
            }
        };
        if listed_twice {
            return Err(error(
                item_path,
                format!("format \"{name}\" is listed twice"),
            ));
        }
        match format {
            Some(format) => formats.push(format),
            None => baggage = true,
        }
    }
    Ok((formats, baggage))
}

fn baggage(value: &Value, config: &mut BaggageConfig) -> Result<(), ConfigError> {
    let object = object(value, "baggage")?;
    check_keys(object, "baggage.", &["spellings"])?;
    if let Some(value) = object.get("spellings") {
        let mut spellings = Vec::new();
        for (i, item) in list(value, "baggage.spellings")?.iter().enumerate() {
            let path = format!("baggage.spellings[{i}]");
            let name = string(item, &path)?;
            let Some(spelling) = Spelling::from_name(name) else {
                let known: Vec<&str> = Spelling::ALL.iter().map(|s| s.name()).collect();
                return Err(error(
                    path,
                    format!(
                        "unknown spelling \"{name}\"; expected one of: {}",
                        known.join(", ")
                    ),
                ));
            };
            if spellings.contains(&spelling) {
                return Err(error(path, format!("spelling \"{name}\" is listed twice")));
            }
            spellings.push(spelling);
        }
        config.spellings = spellings;
    }
    Ok(())
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

pub(crate) fn object<'v>(
    value: &'v Value,
    path: &str,
) -> Result<&'v Map<String, Value>, ConfigError> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(error(
            path,
            format!("must be an object, got {}", type_name(value)),
        )),
    }
}

pub(crate) fn string<'v>(value: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    match value {
        Value::String(text) if !text.is_empty() => Ok(text),
        Value::String(_) => Err(error(path, "must not be empty")),
        _ => Err(error(
            path,
            format!("must be a string, got {}", type_name(value)),
        )),
    }
}

fn list<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>, ConfigError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(error(
            path,
            format!("must be a list, got {}", type_name(value)),
        )),
    }
}

fn positive_integer(value: &Value, path: &str) -> Result<u64, ConfigError> {
    match value.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(error(
            path,
            format!("must be a whole number of at least 1, got {value}"),
        )),
    }
}

/// A request header name a rule or the force check reads: an HTTP token, compared lower-case.
pub(crate) fn header_name(value: &Value, path: &str) -> Result<String, ConfigError> {
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

/// Finds or adds `name` in the custom header list, returning its index.
fn custom_header(custom: &mut Vec<String>, name: String, path: &str) -> Result<usize, ConfigError> {
    if let Some(i) = custom.iter().position(|known| *known == name) {
        return Ok(i);
    }
    if custom.len() == MAX_CUSTOM_HEADERS {
        return Err(error(
            path,
            format!("at most {MAX_CUSTOM_HEADERS} distinct header names may be used"),
        ));
    }
    custom.push(name);
    Ok(custom.len() - 1)
}

fn rule_match(
    value: &Value,
    path: &str,
    custom: &mut Vec<String>,
) -> Result<RuleMatch, ConfigError> {
    let object = object(value, path)?;
    check_keys(
        object,
        &format!("{path}."),
        &["authority", "path_prefix", "method", "header"],
    )?;
    let mut conditions = RuleMatch::default();
    if let Some(value) = object.get("authority") {
        conditions.authority =
            Some(string(value, &format!("{path}.authority"))?.to_ascii_lowercase());
    }
    if let Some(value) = object.get("path_prefix") {
        let path_prefix = string(value, &format!("{path}.path_prefix"))?;
        if !path_prefix.starts_with('/') {
            return Err(error(
                format!("{path}.path_prefix"),
                "must start with \"/\"",
            ));
        }
        conditions.path_prefix = Some(path_prefix.to_string());
    }
    if let Some(value) = object.get("method") {
        conditions.method = Some(string(value, &format!("{path}.method"))?.to_ascii_uppercase());
    }
    if let Some(value) = object.get("header") {
        let header_path = format!("{path}.header");
        let header = self::object(value, &header_path)?;
        check_keys(header, &format!("{header_path}."), &["name", "value"])?;
        let name_path = format!("{header_path}.name");
        let Some(name) = header.get("name") else {
            return Err(error(name_path, "is required"));
        };
        let name = header_name(name, &name_path)?;
        let wanted = match header.get("value") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(error(
                    format!("{header_path}.value"),
                    format!("must be a string, got {}", type_name(other)),
                ))
            }
        };
        conditions.header = Some((custom_header(custom, name, &name_path)?, wanted));
    }
    Ok(conditions)
}

fn rules(
    value: &Value,
    precision: u32,
    custom: &mut Vec<String>,
) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::new();
    for (i, item) in list(value, "sampling.rules")?.iter().enumerate() {
        let path = format!("sampling.rules[{i}]");
        let object = object(item, &path)?;
        check_keys(object, &format!("{path}."), &["match", "probability"])?;
        let conditions = match object.get("match") {
            None => {
                return Err(error(
                    format!("{path}.match"),
                    "is required (use {} to match every request)",
                ))
            }
            Some(value) => rule_match(value, &format!("{path}.match"), custom)?,
        };
        let Some(p) = object.get("probability") else {
            return Err(error(format!("{path}.probability"), "is required"));
        };
        let p = probability(p, &format!("{path}.probability"))?;
        rules.push(Rule {
            conditions,
            probability: p,
            threshold: Threshold::from_probability_with_precision(p, precision),
        });
    }
    Ok(rules)
}

fn trusted_sources(value: &Value, trust: &mut TrustPolicy) -> Result<(), ConfigError> {
    let object = object(value, "sampling.trusted_sources")?;
    check_keys(
        object,
        "sampling.trusted_sources.",
        &["cidrs", "principals"],
    )?;
    if let Some(value) = object.get("cidrs") {
        for (i, item) in list(value, "sampling.trusted_sources.cidrs")?
            .iter()
            .enumerate()
        {
            let path = format!("sampling.trusted_sources.cidrs[{i}]");
            let cidr = Cidr::parse(string(item, &path)?).map_err(|problem| error(path, problem))?;
            trust.cidrs.push(cidr);
        }
    }
    if let Some(value) = object.get("principals") {
        for (i, item) in list(value, "sampling.trusted_sources.principals")?
            .iter()
            .enumerate()
        {
            let path = format!("sampling.trusted_sources.principals[{i}]");
            trust
                .principals
                .push(PrincipalPattern::new(string(item, &path)?));
        }
    }
    Ok(())
}

/// A secret given inline, or `{"env": "NAME"}` read from the proxy's environment (Istio
/// `WasmPlugin.vmConfig.env`) so that it stays out of configuration dumps.
fn secret(value: &Value, path: &str) -> Result<Vec<u8>, ConfigError> {
    let secret = match value {
        Value::String(text) => text.clone(),
        Value::Object(object) => {
            check_keys(object, &format!("{path}."), &["env"])?;
            let env_path = format!("{path}.env");
            let Some(name) = object.get("env") else {
                return Err(error(env_path, "is required"));
            };
            let name = string(name, &env_path)?;
            std::env::var(name).map_err(|_| {
                error(
                    &env_path,
                    format!("environment variable \"{name}\" is not set (or not UTF-8)"),
                )
            })?
        }
        _ => {
            return Err(error(
                path,
                format!(
                    "must be a secret string or {{\"env\": \"VARIABLE\"}}, got {}",
                    type_name(value)
                ),
            ))
        }
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(error(
            path,
            format!("the secret must be at least {MIN_SECRET_LEN} bytes long"),
        ));
    }
    Ok(secret.into_bytes())
}

fn force(value: &Value, custom: &mut Vec<String>) -> Result<ForceConfig, ConfigError> {
    let object = object(value, "sampling.force")?;
    check_keys(
        object,
        "sampling.force.",
        &["header", "keys", "max_per_second"],
    )?;
    let Some(header) = object.get("header") else {
        return Err(error("sampling.force.header", "is required"));
    };
    let header = header_name(header, "sampling.force.header")?;
    if HeaderName::from_lowercase(&header).is_some() {
        return Err(error(
            "sampling.force.header",
            format!("\"{header}\" is a header tracebridge already reads"),
        ));
    }
    let header_index = custom_header(custom, header.clone(), "sampling.force.header")?;
    let Some(keys_value) = object.get("keys") else {
        return Err(error("sampling.force.keys", "is required"));
    };
    let keys_object = self::object(keys_value, "sampling.force.keys")?;
    if keys_object.is_empty() {
        return Err(error("sampling.force.keys", "must hold at least one key"));
    }
    let mut keys = Vec::new();
    for (id, value) in keys_object {
        let path = format!("sampling.force.keys.{id}");
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(error(
                path,
                "key ids may use only letters, digits, \"_\" and \"-\"",
            ));
        }
        keys.push(ForceKey {
            id: id.clone(),
            secret: secret(value, &path)?,
        });
    }
    let max_per_second = match object.get("max_per_second") {
        None => DEFAULT_FORCE_MAX_PER_SECOND,
        Some(value) => positive_integer(value, "sampling.force.max_per_second")?,
    };
    Ok(ForceConfig {
        header,
        header_index,
        keys,
        max_per_second,
    })
}

const SAMPLING_KEYS: &[&str] = &[
    "probability",
    "precision",
    "rules",
    "trust_incoming",
    "trusted_sources",
    "force",
    "max_sampled_per_second",
];

fn sampling(value: &Value, custom: &mut Vec<String>) -> Result<SamplingConfig, ConfigError> {
    let object = object(value, "sampling")?;
    check_keys(object, "sampling.", SAMPLING_KEYS)?;
    let mut sampling = SamplingConfig::default();
    if let Some(value) = object.get("precision") {
        sampling.precision = match value.as_u64() {
            Some(n @ 1..=14) => n as u32,
            _ => {
                return Err(error(
                    "sampling.precision",
                    format!("must be a whole number from 1 to 14, got {value}"),
                ))
            }
        };
    }
    if let Some(value) = object.get("probability") {
        sampling.probability = probability(value, "sampling.probability")?;
    }
    sampling.threshold =
        Threshold::from_probability_with_precision(sampling.probability, sampling.precision);
    if let Some(value) = object.get("rules") {
        sampling.rules = rules(value, sampling.precision, custom)?;
    }
    if let Some(value) = object.get("trust_incoming") {
        let Value::Bool(trust) = value else {
            return Err(error(
                "sampling.trust_incoming",
                format!("must be true or false, got {}", type_name(value)),
            ));
        };
        sampling.trust.trust_incoming = *trust;
    }
    if let Some(value) = object.get("trusted_sources") {
        trusted_sources(value, &mut sampling.trust)?;
    }
    if let Some(value) = object.get("force") {
        sampling.force = Some(force(value, custom)?);
    }
    if let Some(value) = object.get("max_sampled_per_second") {
        sampling.max_sampled_per_second =
            Some(positive_integer(value, "sampling.max_sampled_per_second")?);
    }
    Ok(sampling)
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
        check_keys(
            object,
            "",
            &["extract", "inject", "sampling", "baggage", "response"],
        )?;
        let mut config = Config::default();
        if let Some(value) = object.get("extract") {
            (config.extract, config.baggage.extract) = format_list(value, "extract")?;
        }
        if let Some(value) = object.get("inject") {
            (config.inject, config.baggage.inject) = format_list(value, "inject")?;
        }
        if let Some(value) = object.get("baggage") {
            baggage(value, &mut config.baggage)?;
        }
        if let Some(value) = object.get("sampling") {
            config.sampling = sampling(value, &mut config.custom_headers)?;
        }
        if let Some(value) = object.get("response") {
            config.response = Some(ResponseConfig::from_json(value)?);
        }
        Ok(config)
    }

    /// What a request view must record for this configuration.
    pub fn scan(&self) -> Scan<'_> {
        Scan {
            custom: &self.custom_headers,
            baggage: self.baggage.extract || self.baggage.inject,
        }
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
        let sampling = &self.sampling;
        let with_baggage = |names: String, on: bool| match (names.is_empty(), on) {
            (_, false) => names,
            (true, true) => BAGGAGE.to_string(),
            (false, true) => format!("{names},{BAGGAGE}"),
        };
        let mut line = format!(
            "extract=[{}] inject=[{}] sampling.probability={} rules={} trust_incoming={} force={} max_sampled_per_second={}",
            with_baggage(names(&self.extract), self.baggage.extract),
            with_baggage(names(&self.inject), self.baggage.inject),
            sampling.probability,
            sampling.rules.len(),
            sampling.trust.trust_incoming,
            sampling.force.as_ref().map_or("off", |_| "on"),
            sampling.max_sampled_per_second.map_or("none".to_string(), |n| n.to_string()),
        );
        if let Some(response) = &self.response {
            line.push_str(" response=");
            line.push_str(&response.summary());
        }
        line
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
            "extract=[xray,b3] inject=[b3,cloudtrace] sampling.probability=0.5 rules=0 trust_incoming=true force=off max_sampled_per_second=none"
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

    /// Each input is rejected with an error naming `path` and mentioning `problem`.
    fn assert_errors(cases: &[(&str, &str, &str)]) {
        for &(input, path, problem) in cases {
            let err = Config::from_json(input.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{input}");
            assert!(err.problem.contains(problem), "{input}: {}", err.problem);
        }
    }

    #[test]
    fn full_sampling_config() {
        std::env::set_var("TRACEBRIDGE_TEST_SECRET", "from-the-environment-0123");
        let config = Config::from_json(
            br#"{"sampling": {
                "probability": 0.0001, "precision": 5,
                "rules": [{"match": {"path_prefix": "/checkout", "header": {"name": "X-Env", "value": "load"}}, "probability": 1}],
                "trust_incoming": false,
                "trusted_sources": {"cidrs": ["10.0.0.0/8", "fd00::/8"], "principals": ["spiffe://cluster.local/*"]},
                "force": {"header": "X-Force-Trace", "keys": {"ops": "0123456789abcdef", "ci": {"env": "TRACEBRIDGE_TEST_SECRET"}}, "max_per_second": 5},
                "max_sampled_per_second": 100
            }}"#,
        )
        .unwrap();
        let sampling = &config.sampling;
        assert_eq!(sampling.threshold.encode_th().as_deref(), Some("fff97247"));
        assert_eq!(sampling.rules[0].threshold, Threshold::ALWAYS);
        assert_eq!(
            config.custom_headers,
            vec!["x-env".to_string(), "x-force-trace".to_string()]
        );
        assert_eq!(
            sampling.rules[0].conditions.header,
            Some((0, Some("load".to_string())))
        );
        assert!(!sampling.trust.trust_incoming);
        assert_eq!(sampling.trust.cidrs.len(), 2);
        let force = sampling.force.as_ref().unwrap();
        assert_eq!(
            (
                force.header.as_str(),
                force.header_index,
                force.max_per_second
            ),
            ("x-force-trace", 1, 5)
        );
        let ci = force.keys.iter().find(|key| key.id == "ci").unwrap();
        assert_eq!(ci.secret, b"from-the-environment-0123".to_vec());
        assert_eq!(sampling.limits().max_sampled_per_second, Some(100));
    }

    #[test]
    fn sampling_error_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"sampling": {"precision": 0}}"#,
                "sampling.precision",
                "from 1 to 14",
            ),
            (
                r#"{"sampling": {"precision": 15}}"#,
                "sampling.precision",
                "from 1 to 14",
            ),
            (
                r#"{"sampling": {"rules": {}}}"#,
                "sampling.rules",
                "must be a list",
            ),
            (
                r#"{"sampling": {"rules": [{"probability": 1}]}}"#,
                "sampling.rules[0].match",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {}}]}}"#,
                "sampling.rules[0].probability",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {}, "probability": 2}]}}"#,
                "sampling.rules[0].probability",
                "between 0 and 1",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"host": "a"}, "probability": 1}]}}"#,
                "sampling.rules[0].match.host",
                "unknown key",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"path_prefix": "api"}, "probability": 1}]}}"#,
                "sampling.rules[0].match.path_prefix",
                "must start with",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"header": {"value": "x"}}, "probability": 1}]}}"#,
                "sampling.rules[0].match.header.name",
                "is required",
            ),
            (
                r#"{"sampling": {"rules": [{"match": {"header": {"name": "a b"}}, "probability": 1}]}}"#,
                "sampling.rules[0].match.header.name",
                "not a valid HTTP header name",
            ),
            (
                r#"{"sampling": {"trust_incoming": "no"}}"#,
                "sampling.trust_incoming",
                "true or false",
            ),
            (
                r#"{"sampling": {"trusted_sources": {"cidrs": ["10.0.0.1/8"]}}}"#,
                "sampling.trusted_sources.cidrs[0]",
                "did you mean 10.0.0.0/8",
            ),
            (
                r#"{"sampling": {"trusted_sources": {"ips": []}}}"#,
                "sampling.trusted_sources.ips",
                "unknown key",
            ),
            (
                r#"{"sampling": {"force": {"keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "is required",
            ),
            (
                r#"{"sampling": {"force": {"header": "traceparent", "keys": {"a": "0123456789abcdef"}}}}"#,
                "sampling.force.header",
                "already reads",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {}}}}"#,
                "sampling.force.keys",
                "at least one key",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a.b": "0123456789abcdef"}}}}"#,
                "sampling.force.keys.a.b",
                "key ids may use only",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": "short"}}}}"#,
                "sampling.force.keys.a",
                "at least 16 bytes",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": {"env": "TRACEBRIDGE_UNSET_VARIABLE"}}}}}"#,
                "sampling.force.keys.a.env",
                "is not set",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": 5}}}}"#,
                "sampling.force.keys.a",
                "must be a secret string",
            ),
            (
                r#"{"sampling": {"force": {"header": "x-f", "keys": {"a": "0123456789abcdef"}, "max_per_second": 0}}}"#,
                "sampling.force.max_per_second",
                "at least 1",
            ),
            (
                r#"{"sampling": {"max_sampled_per_second": -1}}"#,
                "sampling.max_sampled_per_second",
                "at least 1",
            ),
            (
                r#"{"sampling": {"max_sampled_per_second": 1.5}}"#,
                "sampling.max_sampled_per_second",
                "at least 1",
            ),
        ];
        assert_errors(cases);
    }

    #[test]
    fn baggage_is_opt_in_through_the_format_lists() {
        let config =
            Config::from_json(br#"{"extract": ["b3", "baggage"], "inject": ["baggage"]}"#).unwrap();
        assert_eq!(config.extract, vec![Format::B3]);
        assert!(config.inject.is_empty());
        assert!(config.baggage.extract && config.baggage.inject);
        assert_eq!(config.baggage.spellings, Spelling::ALL.to_vec());
        assert!(config
            .summary()
            .starts_with("extract=[b3,baggage] inject=[baggage] "));
        assert!(!Config::default().baggage.extract && !Config::default().baggage.inject);
        let config =
            Config::from_json(br#"{"baggage": {"spellings": ["w3c", "opentracing"]}}"#).unwrap();
        assert_eq!(
            config.baggage.spellings,
            vec![Spelling::W3c, Spelling::OpenTracing]
        );
        assert_errors(&[
            (
                r#"{"extract": ["baggage", "baggage"]}"#,
                "extract[1]",
                "listed twice",
            ),
            (
                r#"{"baggage": {"spellings": ["zipkin"]}}"#,
                "baggage.spellings[0]",
                "unknown spelling",
            ),
            (
                r#"{"baggage": {"spellings": ["w3c", "w3c"]}}"#,
                "baggage.spellings[1]",
                "listed twice",
            ),
            (
                r#"{"baggage": {"limit": 3}}"#,
                "baggage.limit",
                "unknown key",
            ),
            (r#"{"baggage": []}"#, "baggage", "must be an object"),
        ]);
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
        assert_errors(cases);
    }
}
