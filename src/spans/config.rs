//! The `spans` section of the plugin configuration, validated with field paths
//! (`spans.cluster: is required`).

use super::export::Limits;
use crate::config::json::{check_keys, object, type_name};
use crate::config::ConfigError;
use serde_json::{Map, Value};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/v1/traces";
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// The OpenTelemetry SDKs' batch span processor defaults (`maxQueueSize`, `maxExportBatchSize`).
pub const DEFAULT_MAX_QUEUE: usize = 2048;
pub const DEFAULT_MAX_BATCH: usize = 512;
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Each queued span takes a few hundred bytes; this bounds a worker's queue to some megabytes.
pub const MAX_MAX_QUEUE: u64 = 65_536;

const KEYS: &[&str] = &[
    "cluster",
    "authority",
    "path",
    "service_name",
    "kind",
    "flush_interval_ms",
    "max_queue",
    "max_batch",
    "timeout_ms",
];

/// Which span kind the proxy reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KindSetting {
    Server,
    Client,
    /// The listener's `traffic_direction`: OUTBOUND is a client span, anything else a server
    /// span. One Istio `CLIENT_AND_SERVER` plugin reports both sides.
    Listener,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpansConfig {
    /// The Envoy cluster of the OTLP/HTTP receiver.
    pub cluster: String,
    /// `:authority` of the export requests.
    pub authority: String,
    pub path: String,
    /// `service.name`; `None`: from the node (see `resource::service_name`).
    pub service_name: Option<String>,
    pub kind: KindSetting,
    pub flush_interval: Duration,
    pub max_queue: usize,
    /// Spans per export request: at most `max_queue`.
    pub max_batch: usize,
    pub timeout: Duration,
}

fn error(path: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        path: format!("spans.{path}"),
        problem: problem.into(),
    }
}

fn text<'v>(object: &'v Map<String, Value>, key: &str) -> Result<Option<&'v str>, ConfigError> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(error(key, "must not be empty")),
        Some(Value::String(s)) if s.bytes().any(|b| b.is_ascii_control() || b == b' ') => {
            Err(error(key, "must not contain spaces or control characters"))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(error(
            key,
            format!("must be a string, got {}", type_name(other)),
        )),
    }
}

fn whole_number(
    object: &Map<String, Value>,
    key: &str,
    max: u64,
    default: u64,
) -> Result<u64, ConfigError> {
    match object.get(key) {
        None => Ok(default),
        Some(value) => match value.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(error(
                key,
                format!("must be a whole number from 1 to {max}, got {value}"),
            )),
        },
    }
}

impl SpansConfig {
    /// Parses the value of `spans`.
    pub fn from_json(value: &Value) -> Result<SpansConfig, ConfigError> {
        let object = object(value, "spans")?;
        check_keys(object, "spans.", KEYS)?;
        let cluster = text(object, "cluster")?.ok_or_else(|| {
            error(
                "cluster",
                "is required (the Envoy cluster of the OTLP/HTTP receiver)",
            )
        })?;
        let authority = text(object, "authority")?.unwrap_or(cluster);
        let path = text(object, "path")?.unwrap_or(DEFAULT_PATH);
        if !path.starts_with('/') {
            return Err(error("path", "must start with \"/\""));
        }
        let service_name = match object.get("service_name") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::String(_)) => return Err(error("service_name", "must not be empty")),
            Some(other) => {
                return Err(error(
                    "service_name",
                    format!("must be a string, got {}", type_name(other)),
                ))
            }
        };
        let kind = match text(object, "kind")? {
            None | Some("listener") => KindSetting::Listener,
            Some("server") => KindSetting::Server,
            Some("client") => KindSetting::Client,
            Some(other) => {
                return Err(error(
                    "kind",
                    format!("unknown kind \"{other}\"; expected one of: server, client, listener"),
                ))
            }
        };
        // proxy-wasm timers and call timeouts are u32 milliseconds.
        let millis = u64::from(u32::MAX);
        let flush_interval_ms = whole_number(
            object,
            "flush_interval_ms",
            millis,
            DEFAULT_FLUSH_INTERVAL_MS,
        )?;
        let timeout_ms = whole_number(object, "timeout_ms", millis, DEFAULT_TIMEOUT_MS)?;
        let max_queue = whole_number(object, "max_queue", MAX_MAX_QUEUE, DEFAULT_MAX_QUEUE as u64)?;
        let max_batch = whole_number(object, "max_batch", MAX_MAX_QUEUE, DEFAULT_MAX_BATCH as u64)?;
        Ok(SpansConfig {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            service_name,
            kind,
            flush_interval: Duration::from_millis(flush_interval_ms),
            max_queue: max_queue as usize,
            max_batch: max_batch.min(max_queue) as usize,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_queue: self.max_queue,
            max_batch: self.max_batch,
            flush_interval: self.flush_interval,
            timeout: self.timeout,
        }
    }

    /// One line for the log when the plugin starts.
    pub fn summary(&self) -> String {
        format!(
            "spans to cluster {} ({}{}), kind {}, every {} ms or {} spans, queue {}, timeout {} ms",
            self.cluster,
            self.authority,
            self.path,
            match self.kind {
                KindSetting::Server => "server",
                KindSetting::Client => "client",
                KindSetting::Listener => "from the listener",
            },
            self.flush_interval.as_millis(),
            self.max_batch,
            self.max_queue,
            self.timeout.as_millis(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SpansConfig, ConfigError> {
        SpansConfig::from_json(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn defaults() {
        let config = parse(r#"{"cluster": "otel-collector"}"#).unwrap();
        assert_eq!(
            config,
            SpansConfig {
                cluster: "otel-collector".into(),
                authority: "otel-collector".into(),
                path: "/v1/traces".into(),
                service_name: None,
                kind: KindSetting::Listener,
                flush_interval: Duration::from_millis(1000),
                max_queue: 2048,
                max_batch: 512,
                timeout: Duration::from_millis(1000),
            }
        );
    }

    #[test]
    fn every_key() {
        let config = parse(
            r#"{"cluster": "outbound|4318||otel-collector.observability.svc.cluster.local",
                "authority": "otel-collector.observability:4318", "path": "/otlp/v1/traces",
                "service_name": "checkout", "kind": "server", "flush_interval_ms": 250,
                "max_queue": 100, "max_batch": 500, "timeout_ms": 3000}"#,
        )
        .unwrap();
        assert_eq!(
            config.cluster,
            "outbound|4318||otel-collector.observability.svc.cluster.local"
        );
        assert_eq!(config.authority, "otel-collector.observability:4318");
        assert_eq!(config.path, "/otlp/v1/traces");
        assert_eq!(config.service_name.as_deref(), Some("checkout"));
        assert_eq!(config.kind, KindSetting::Server);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.timeout, Duration::from_secs(3));
        // A batch never exceeds the queue.
        assert_eq!((config.max_queue, config.max_batch), (100, 100));
        assert_eq!(
            parse(r#"{"cluster": "c", "kind": "client"}"#).unwrap().kind,
            KindSetting::Client
        );
        assert_eq!(
            parse(r#"{"cluster": "c", "kind": "listener"}"#)
                .unwrap()
                .kind,
            KindSetting::Listener
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"[]"#, "spans", "must be an object"),
            (r#"{}"#, "spans.cluster", "is required"),
            (r#"{"cluster": ""}"#, "spans.cluster", "must not be empty"),
            (
                r#"{"cluster": 4318}"#,
                "spans.cluster",
                "must be a string, got a number",
            ),
            (
                r#"{"cluster": "c", "endpoint": "x"}"#,
                "spans.endpoint",
                "unknown key",
            ),
            (
                r#"{"cluster": "c", "path": "v1/traces"}"#,
                "spans.path",
                "must start with",
            ),
            (
                r#"{"cluster": "c", "authority": "a b"}"#,
                "spans.authority",
                "spaces",
            ),
            (
                r#"{"cluster": "c", "kind": "producer"}"#,
                "spans.kind",
                "unknown kind",
            ),
            (
                r#"{"cluster": "c", "service_name": ""}"#,
                "spans.service_name",
                "must not be empty",
            ),
            (
                r#"{"cluster": "c", "flush_interval_ms": 0}"#,
                "spans.flush_interval_ms",
                "from 1 to",
            ),
            (
                r#"{"cluster": "c", "timeout_ms": 1.5}"#,
                "spans.timeout_ms",
                "whole number",
            ),
            (
                r#"{"cluster": "c", "timeout_ms": 5000000000}"#,
                "spans.timeout_ms",
                "from 1 to 4294967295",
            ),
            (
                r#"{"cluster": "c", "max_queue": 65537}"#,
                "spans.max_queue",
                "from 1 to 65536",
            ),
            (
                r#"{"cluster": "c", "max_batch": -1}"#,
                "spans.max_batch",
                "whole number",
            ),
        ];
        for &(input, path, problem) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err.path, path, "{input}");
            assert!(err.problem.contains(problem), "{input}: {}", err.problem);
        }
    }
}
