//! tracebridge: a proxy-wasm HTTP filter that reads the trace context a request carries in any
//! supported header format, chooses one by a configured precedence, and writes that same context
//! into every configured format.
//!
//! Everything but [`filter`] is free of proxy-wasm types and tested natively.

/// Declares a field-less enum with `ALL`, its variants in declaration order, so that a table
/// sized by `ALL.len()` and indexed by `variant as usize` cannot miss one.
macro_rules! listed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order (`ALL[v as usize] == v`).
            pub const ALL: [$name; [$( stringify!($variant) ),+].len()] = [$( $name::$variant ),+];
        }
    };
}

pub mod baggage;
pub mod budget;
pub mod bytes;
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
pub mod rules;
pub mod sampling;
pub mod spans;
pub mod translate;
pub mod trust;

// The proxy-wasm layer only links inside a proxy; clippy still checks it on the host.
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
