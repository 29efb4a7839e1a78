//! tracebridge: a proxy-wasm HTTP filter that reads the trace context a request carries in any
//! supported header format, chooses one by a configured precedence, and writes that same context
//! into every configured format.
//!
//! Everything but [`filter`] is free of proxy-wasm types and tested natively.

pub mod baggage;
pub mod budget;
pub mod config;
pub mod context;
pub mod force;
pub mod formats;
pub mod header_map;
pub mod headers;
pub mod ids;
pub mod metrics;
pub mod otel_tracestate;
pub mod response;
pub mod sampling;
pub mod translate;
pub mod trust;

// The proxy-wasm layer only links inside a proxy; clippy still checks it on the host.
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
