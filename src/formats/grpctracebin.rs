//! gRPC binary trace context, `grpc-trace-bin`: the OpenCensus binary format (version 0; field 0
//! trace id, field 1 span id, field 2 options), base64 on the wire as Envoy passes it.

use super::{inject_single_header, Injection, Propagator};
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{SpanId, TraceId};

/// Canonical length: version, 1 + 16, 1 + 8, 1 + 1.
const CANONICAL_LEN: usize = 29;
/// Decoders stop at the first unknown field, so trailing fields may follow; bound them.
const MAX_DECODED_LEN: usize = 128;
const VERSION: u8 = 0;
const FIELD_TRACE_ID: u8 = 0;
const FIELD_SPAN_ID: u8 = 1;
const FIELD_OPTIONS: u8 = 2;

/// The `grpc-trace-bin` header.
pub struct GrpcTraceBin;

impl Propagator for GrpcTraceBin {
    type State = ();

    fn extract(headers: &RequestHeaders) -> (Extraction, ()) {
        let extraction = match headers.get(HeaderName::GrpcTraceBin) {
            None => Extraction::Absent,
            Some(value) => parse(value).map_or(Extraction::Invalid, Extraction::Context),
        };
        (extraction, ())
    }

    fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
        inject_single_header(injection, HeaderName::GrpcTraceBin, false, encode, edits);
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_value(byte: u8) -> Option<u8> {
    // The letters and digits are consecutive runs of the alphabet, starting at 0, 26 and 52.
    match byte {
        b'A'..=b'Z' => byte.checked_sub(b'A'),
        b'a'..=b'z' => byte.checked_sub(b'a' - 26),
        b'0'..=b'9' => byte.checked_add(52 - b'0'),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn base64_char(sextet: u8) -> char {
    ALPHABET.get(usize::from(sextet)).map_or('A', |&c| char::from(c))
}

/// Standard base64 (RFC 4648 section 4), padded or not ("implementations MUST accept padded
/// and un-padded values"). Writes into `out`, returning the decoded length.
fn decode_base64(text: &[u8], out: &mut [u8; MAX_DECODED_LEN]) -> Option<usize> {
    let unpadded = match text {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => text,
    };
    let padded = unpadded.len() != text.len();
    if unpadded.len() % 4 == 1 || (padded && text.len() % 4 != 0) {
        return None;
    }
    let mut slots = out.iter_mut();
    let mut push = |byte: u8| slots.next().map(|slot| *slot = byte);
    let sextet = |c: u8| base64_value(c).map(u32::from);
    // Four characters carry three bytes.
    let mut groups = unpadded.chunks_exact(4);
    for group in &mut groups {
        let &[a, b, c, d] = group else {
            return None;
        };
        let n = sextet(a)? << 18 | sextet(b)? << 12 | sextet(c)? << 6 | sextet(d)?;
        push((n >> 16) as u8)?;
        push((n >> 8) as u8)?;
        push(n as u8)?;
    }
    // Two or three characters left carry one or two bytes; their leftover low bits must be
    // zero (canonical encoding).
    match *groups.remainder() {
        [] => {}
        [a, b] => {
            let n = sextet(a)? << 18 | sextet(b)? << 12;
            if n & 0xffff != 0 {
                return None;
            }
            push((n >> 16) as u8)?;
        }
        [a, b, c] => {
            let n = sextet(a)? << 18 | sextet(b)? << 12 | sextet(c)? << 6;
            if n & 0xff != 0 {
                return None;
            }
            push((n >> 16) as u8)?;
            push((n >> 8) as u8)?;
        }
        _ => return None,
    }
    MAX_DECODED_LEN.checked_sub(slots.len())
}

fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3).saturating_mul(4));
    // The six-bit groups of `n`, a 24-bit group of three bytes, from the top.
    let sextet = |n: u32, shift: u32| base64_char((n >> shift & 63) as u8);
    let mut groups = bytes.chunks_exact(3);
    for group in &mut groups {
        if let &[a, b, c] = group {
            let n = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
            out.extend([sextet(n, 18), sextet(n, 12), sextet(n, 6), sextet(n, 0)]);
        }
    }
    // One or two bytes left make two or three characters (no padding).
    match *groups.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend([sextet(n, 18), sextet(n, 12)]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend([sextet(n, 18), sextet(n, 12), sextet(n, 6)]);
        }
        _ => {}
    }
    out
}

/// Version 0 only; the trace id field first, then the span id, then optional options; unknown
/// trailing fields end the decoding; zero ids are invalid.
pub fn parse(value: &[u8]) -> Option<IncomingContext> {
    let mut buf = [0u8; MAX_DECODED_LEN];
    let len = decode_base64(value, &mut buf)?;
    let bytes = buf.get(..len)?;
    let [VERSION, FIELD_TRACE_ID, rest @ ..] = bytes else {
        return None;
    };
    let (trace, rest) = rest.split_first_chunk::<16>()?;
    let [FIELD_SPAN_ID, rest @ ..] = rest else {
        return None;
    };
    let (span, rest) = rest.split_first_chunk::<8>()?;
    let options = match rest {
        [FIELD_OPTIONS, options, ..] => *options,
        [FIELD_OPTIONS] => return None,
        _ => 0,
    };
    Some(IncomingContext {
        trace_id: TraceId::new(u128::from_be_bytes(*trace))?,
        span_id: Some(SpanId::new(u64::from_be_bytes(*span))?),
        decision: Some(Decision::from_sampled(options & 1 == 1)),
        random_trace_id: false,
    })
}

/// The canonical 29 bytes (options: the sampled bit only), base64 without padding.
pub fn encode(ctx: &TraceContext) -> String {
    // Constant positions in a fixed-size array: none can be out of bounds.
    let mut bytes = [0u8; CANONICAL_LEN];
    bytes[0] = VERSION;
    bytes[1] = FIELD_TRACE_ID;
    bytes[2..18].copy_from_slice(&ctx.trace_id.value().to_be_bytes());
    bytes[18] = FIELD_SPAN_ID;
    bytes[19..27].copy_from_slice(&ctx.span_id.value().to_be_bytes());
    bytes[27] = FIELD_OPTIONS;
    bytes[28] = u8::from(ctx.decision.is_sampled());
    encode_base64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenCensus specification's example: trace id 4bf92f3577b34da6a3ce929d0e0e4736,
    /// span id 00f067aa0ba902b7, sampled.
    const EXAMPLE: [u8; 29] = [
        0, 0, 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
        0x47, 0x36, 1, 0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7, 2, 1,
    ];
    /// EXAMPLE in standard base64, computed independently (Python `base64.b64encode`).
    const EXAMPLE_B64: &str = "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=";

    fn sampled_example() -> Option<IncomingContext> {
        Some(IncomingContext {
            trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7),
            decision: Some(Decision::Sampled),
            random_trace_id: false,
        })
    }

    fn b64(bytes: &[u8]) -> String {
        encode_base64(bytes)
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(format!("{}=", b64(&EXAMPLE)), EXAMPLE_B64);
        for text in ["", "Zg", "Zg==", "Zm8", "Zm8=", "Zm9v"] {
            let mut out = [0u8; MAX_DECODED_LEN];
            let len = decode_base64(text.as_bytes(), &mut out).unwrap();
            assert_eq!(b64(&out[..len]), text.trim_end_matches('='), "{text}");
        }
        let mut out = [0u8; MAX_DECODED_LEN];
        for bad in ["Z", "Zg=", "Z===", "Zh==", "Zm9v_w", "Zm9v-w", "Zm 9"] {
            assert_eq!(decode_base64(bad.as_bytes(), &mut out), None, "{bad}");
        }
    }

    #[test]
    fn parse_table() {
        let mut not_sampled = EXAMPLE;
        not_sampled[28] = 0;
        let mut trailing = EXAMPLE.to_vec();
        trailing.extend_from_slice(&[3, 9, 9]);
        let mut version_1 = EXAMPLE;
        version_1[0] = 1;
        let mut zero_trace = EXAMPLE;
        zero_trace[2..18].fill(0);
        let mut span_first = EXAMPLE;
        span_first[1] = 1;
        let cases: Vec<(String, Option<IncomingContext>)> = vec![
            (EXAMPLE_B64.into(), sampled_example()),
            (b64(&EXAMPLE), sampled_example()),
            (
                b64(&not_sampled),
                sampled_example().map(|c| IncomingContext {
                    decision: Some(Decision::NotSampled),
                    ..c
                }),
            ),
            // Options are optional (default 0); unknown trailing fields are not an error.
            (
                b64(&EXAMPLE[..27]),
                sampled_example().map(|c| IncomingContext {
                    decision: Some(Decision::NotSampled),
                    ..c
                }),
            ),
            (b64(&trailing), sampled_example()),
            (b64(&EXAMPLE[..28]), None),
            (b64(&EXAMPLE[..20]), None),
            (b64(&version_1), None),
            (b64(&zero_trace), None),
            (b64(&span_first), None),
            ("not base64!".into(), None),
            (String::new(), None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input.as_bytes()), want, "grpc-trace-bin {input:?}");
        }
    }

    #[test]
    fn encodes_canonical_unpadded() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision: Decision::Debug,
            random_trace_id: true,
        };
        assert_eq!(encode(&ctx), EXAMPLE_B64.trim_end_matches('='));
    }
}
