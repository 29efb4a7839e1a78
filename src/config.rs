//! Plugin configuration: JSON (Istio's WasmPlugin sends `pluginConfig` as JSON in a
//! StringValue), validated completely before the plugin starts. Every error names the field.
//!
//! This module parses the top level (`extract`, `inject`, `sampling`, `baggage`) and the
//! `sampling` scalars; each feature parses its own section next to its code, with the helpers in
//! [`json`]: rules in [`crate::rules`], `sampling.force` in [`crate::force`],
//! `sampling.trusted_sources` in [`crate::trust`], `baggage` in [`crate::baggage`], `spans` in
//! [`crate::spans::config`].

pub mod json;

use crate::baggage::BaggageConfig;
use crate::budget::Limits;
use crate::force::ForceConfig;
use crate::formats::Format;
use crate::headers::Scan;
use crate::metrics::MetricsConfig;
use crate::response::ResponseConfig;
use crate::rules::{self, Rule};
use crate::sampling::Threshold;
use crate::spans::config::SpansConfig;
use crate::trust::TrustPolicy;
pub use json::ConfigError;
use json::{boolean, check_keys, error, object, positive_integer, probability, type_name};
use serde_json::Value;

pub const DEFAULT_PROBABILITY: f64 = 0.01;
/// The specification's recommended `th` precision.
pub const DEFAULT_PRECISION: u32 = 4;

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
    /// `spans`: the proxy's own spans (`None`: none are recorded).
    pub spans: Option<SpansConfig>,
    /// `metrics`: how often the counters reach Envoy.
    pub metrics: MetricsConfig,
    /// `filter_state.sampling_reason`: store each request's reason in Envoy's filter state (for
    /// access logs). Off by default: it is a host call on every request.
    pub reason_in_filter_state: bool,
    /// `extract` then the formats only in `inject`: what a request reads, each format once.
    formats_read: Vec<Format>,
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
    /// Formats whose trace id an untrusted caller keeps (in `extract` order); empty: none.
    pub keep_trace_id_from: Vec<Format>,
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
            keep_trace_id_from: Vec::new(),
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

impl Default for Config {
    fn default() -> Self {
        let mut config = Config {
            extract: Format::DEFAULT_EXTRACT.to_vec(),
            inject: Format::DEFAULT_INJECT.to_vec(),
            sampling: SamplingConfig::default(),
            baggage: BaggageConfig::default(),
            custom_headers: Vec::new(),
            response: None,
            spans: None,
            metrics: MetricsConfig::default(),
            reason_in_filter_state: false,
            formats_read: Vec::new(),
        };
        config.formats_read = formats_read(&config.extract, &config.inject);
        config
    }
}

/// `extract`, then the formats of `inject` not in it.
fn formats_read(extract: &[Format], inject: &[Format]) -> Vec<Format> {
    let mut read = extract.to_vec();
    read.extend(inject.iter().filter(|f| !extract.contains(f)));
    read
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

const SAMPLING_KEYS: &[&str] = &[
    "probability",
    "precision",
    "rules",
    "trust_incoming",
    "trusted_sources",
    "keep_trace_id_from",
    "force",
    "max_sampled_per_second",
];

/// `sampling.keep_trace_id_from`: trace-context formats, each also in `extract` (a trace id can
/// only be kept from a format that is read).
fn keep_trace_id_from(value: &Value, extract: &[Format]) -> Result<Vec<Format>, ConfigError> {
    const PATH: &str = "sampling.keep_trace_id_from";
    let (formats, baggage) = format_list(value, PATH)?;
    if baggage {
        let i = value
            .as_array()
            .and_then(|items| items.iter().position(|item| item == BAGGAGE))
            .unwrap_or_default();
        return Err(error(
            format!("{PATH}[{i}]"),
            "\"baggage\" carries no trace id; expected a trace-context format",
        ));
    }
    // Baggage is not among them, so an index into `formats` is one into the list.
    match formats.iter().position(|format| !extract.contains(format)) {
        Some(i) => Err(error(
            format!("{PATH}[{i}]"),
            format!(
                "format \"{}\" is not in extract, so its trace id is never read",
                formats.get(i).map_or("", |format| format.name())
            ),
        )),
        None => Ok(formats),
    }
}

fn sampling(
    value: &Value,
    extract: &[Format],
    custom: &mut Vec<String>,
) -> Result<SamplingConfig, ConfigError> {
    let object = object(value, "sampling")?;
    check_keys(object, "sampling.", SAMPLING_KEYS)?;
    let mut sampling = SamplingConfig::default();
    if let Some(value) = object.get("precision") {
        sampling.precision = match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n @ 1..=14) => n,
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
        sampling.rules = rules::parse(value, sampling.precision, custom)?;
    }
    if let Some(value) = object.get("trust_incoming") {
        sampling.trust.trust_incoming = boolean(value, "sampling.trust_incoming")?;
    }
    if let Some(value) = object.get("trusted_sources") {
        sampling.trust.parse_trusted_sources(value)?;
    }
    if let Some(value) = object.get("keep_trace_id_from") {
        sampling.keep_trace_id_from = keep_trace_id_from(value, extract)?;
    }
    if let Some(value) = object.get("force") {
        sampling.force = Some(ForceConfig::parse(value, custom)?);
    }
    if let Some(value) = object.get("max_sampled_per_second") {
        sampling.max_sampled_per_second =
            Some(positive_integer(value, "sampling.max_sampled_per_second")?);
    }
    Ok(sampling)
}

/// The `filter_state` section: which of a request's facts Envoy's filter state holds.
fn filter_state(value: &Value) -> Result<bool, ConfigError> {
    let object = object(value, "filter_state")?;
    check_keys(object, "filter_state.", &["sampling_reason"])?;
    object.get("sampling_reason").map_or(Ok(false), |value| {
        boolean(value, "filter_state.sampling_reason")
    })
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
            &[
                "extract",
                "inject",
                "sampling",
                "baggage",
                "response",
                "spans",
                "metrics",
                "filter_state",
            ],
        )?;
        let mut config = Config::default();
        if let Some(value) = object.get("extract") {
            (config.extract, config.baggage.extract) = format_list(value, "extract")?;
        }
        if let Some(value) = object.get("inject") {
            (config.inject, config.baggage.inject) = format_list(value, "inject")?;
        }
        if let Some(value) = object.get("baggage") {
            config.baggage.parse_section(value)?;
        }
        if let Some(value) = object.get("sampling") {
            config.sampling = sampling(value, &config.extract, &mut config.custom_headers)?;
        }
        if let Some(value) = object.get("response") {
            config.response = Some(ResponseConfig::from_json(value)?);
        }
        if let Some(value) = object.get("spans") {
            config.spans = Some(SpansConfig::from_json(value)?);
        }
        if let Some(value) = object.get("metrics") {
            config.metrics = MetricsConfig::from_json(value)?;
        }
        if let Some(value) = object.get("filter_state") {
            config.reason_in_filter_state = filter_state(value)?;
        }
        config.check_force_header()?;
        config.formats_read = formats_read(&config.extract, &config.inject);
        Ok(config)
    }

    /// The force header must not be a header the response writes either (the names tracebridge
    /// always owns are refused in [`ForceConfig::parse`]; the link's is configured).
    fn check_force_header(&self) -> Result<(), ConfigError> {
        let (Some(force), Some(link)) = (
            &self.sampling.force,
            self.response.as_ref().and_then(|r| r.link.as_ref()),
        ) else {
            return Ok(());
        };
        if force.header == link.header {
            return Err(error(
                "sampling.force.header",
                format!(
                    "\"{}\" is also response.link.header: the token could travel on in it",
                    force.header
                ),
            ));
        }
        Ok(())
    }

    /// The formats a request reads: `extract`, then those only in `inject` (whose headers must
    /// be known to be rewritten), each once.
    pub fn formats_read(&self) -> &[Format] {
        &self.formats_read
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
pub(crate) mod tests {
    use super::*;
    use crate::baggage::Spelling;
    use std::time::Duration;

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
    pub(crate) fn assert_errors(cases: &[(&str, &str, &str)]) {
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
                r#"{"sampling": {"trust_incoming": "no"}}"#,
                "sampling.trust_incoming",
                "true or false",
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

    /// Issue 15: `sampling.keep_trace_id_from` names trace-context formats that are read.
    #[test]
    fn keep_trace_id_from_lists_formats_in_extract() {
        let config = Config::from_json(
            br#"{"extract": ["tracecontext", "xray", "cloudtrace"],
                "sampling": {"trust_incoming": false, "keep_trace_id_from": ["cloudtrace", "xray"]}}"#,
        )
        .unwrap();
        assert_eq!(
            config.sampling.keep_trace_id_from,
            vec![Format::CloudTrace, Format::XRay]
        );
        assert!(Config::default().sampling.keep_trace_id_from.is_empty());
        // The default extract reads every format.
        let config =
            Config::from_json(br#"{"sampling": {"keep_trace_id_from": ["datadog"]}}"#).unwrap();
        assert_eq!(config.sampling.keep_trace_id_from, vec![Format::Datadog]);
        assert_errors(&[
            (
                r#"{"extract": ["tracecontext", "xray"], "sampling": {"keep_trace_id_from": ["xray", "cloudtrace"]}}"#,
                "sampling.keep_trace_id_from[1]",
                "format \"cloudtrace\" is not in extract",
            ),
            (
                r#"{"sampling": {"keep_trace_id_from": ["xray", "alb"]}}"#,
                "sampling.keep_trace_id_from[1]",
                "unknown format \"alb\"",
            ),
            (
                r#"{"extract": ["xray", "baggage"], "sampling": {"keep_trace_id_from": ["xray", "baggage"]}}"#,
                "sampling.keep_trace_id_from[1]",
                "carries no trace id",
            ),
            (
                r#"{"sampling": {"keep_trace_id_from": ["xray", "xray"]}}"#,
                "sampling.keep_trace_id_from[1]",
                "listed twice",
            ),
            (
                r#"{"sampling": {"keep_trace_id_from": "xray"}}"#,
                "sampling.keep_trace_id_from",
                "must be a list of format names",
            ),
        ]);
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
        assert_errors(&[(
            r#"{"extract": ["baggage", "baggage"]}"#,
            "extract[1]",
            "listed twice",
        )]);
    }

    #[test]
    fn filter_state_and_metrics_sections() {
        let config = Config::default();
        assert!(!config.reason_in_filter_state);
        assert_eq!(config.metrics.flush_interval, Duration::from_millis(1000));
        let config = Config::from_json(
            br#"{"filter_state": {"sampling_reason": true}, "metrics": {"flush_interval_ms": 50}}"#,
        )
        .unwrap();
        assert!(config.reason_in_filter_state);
        assert_eq!(config.metrics.flush_interval, Duration::from_millis(50));
        assert_errors(&[
            (
                r#"{"filter_state": {"sampling_reason": "yes"}}"#,
                "filter_state.sampling_reason",
                "must be true or false",
            ),
            (
                r#"{"filter_state": {"reason": true}}"#,
                "filter_state.reason",
                "unknown key; expected one of: sampling_reason",
            ),
            (
                r#"{"filter_state": true}"#,
                "filter_state",
                "must be an object",
            ),
            (
                r#"{"metrics": {"flush_interval_ms": 0}}"#,
                "metrics.flush_interval_ms",
                "from 1 to",
            ),
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
