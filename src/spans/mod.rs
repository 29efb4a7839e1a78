//! The proxy's own span (`spans` configured): one per sampled request, reported to an OTLP/HTTP
//! receiver by the filter itself, so the span follows tracebridge's sampling decision rather
//! than Envoy's tracer's.
//!
//! Transport-free, like the rest of the core: [`record`] builds and encodes a span, [`export`]
//! queues and batches them, [`otlp`] is the protobuf encoding, [`resource`] the resource from
//! Envoy's node, [`config`] the `spans` configuration. The filter supplies the clock, the
//! properties and the HTTP calls.

pub mod config;
pub mod export;
pub mod otlp;
pub mod record;
pub mod resource;

/// The instrumentation scope of every span: this filter, at this version.
pub const SCOPE_NAME: &str = "tracebridge";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");
