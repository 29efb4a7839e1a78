//! OTLP/HTTP in its protobuf encoding (`application/x-protobuf`), written by hand.
//!
//! The filter writes a handful of message types and reads one small answer, so a few dozen lines
//! of varint and length-delimited encoding replace a protobuf library and its generated code in
//! the module. Field numbers are those of opentelemetry-proto (`collector/trace/v1`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`); the tests
//! decode the output with the project's own generated classes.

/// Protobuf wire types (the encoding guide's `VARINT`, `I64`, `LEN`, `I32`).
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// `Span` fields.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME_UNIX_NANO: u32 = 7;
    pub const END_TIME_UNIX_NANO: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

/// `Span.flags`: the low 8 bits are the W3C trace flags; bit 8 says whether bit 9 (the parent
/// was remote) is known (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`, `..._IS_REMOTE_MASK`).
pub const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
pub const FLAGS_IS_REMOTE: u32 = 0x200;

/// `Span.SpanKind`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// `Status.StatusCode` (UNSET is written by leaving the status out).
pub const STATUS_CODE_ERROR: u64 = 2;
const STATUS_CODE: u32 = 3;

/// `value` as a base-128 varint: the bytes, and how many of them are used.
fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n: usize = 0;
    // A u64 takes at most ten 7-bit groups, so the loop ends by the last slot.
    for slot in bytes.iter_mut() {
        n = n.saturating_add(1);
        if value < 0x80 {
            *slot = value as u8;
            break;
        }
        *slot = (value as u8) | 0x80;
        value >>= 7;
    }
    (bytes, n)
}

/// Appends `value` as a base-128 varint (byte by byte: almost every value here is one byte,
/// and a push is cheaper than copying a slice).
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    // 7 bits per byte, at least one byte (leading_zeros of a non-zero value is below 64).
    (64usize.saturating_sub((value | 1).leading_zeros() as usize)).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

pub fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    key(out, field, VARINT);
    varint(out, value);
}

pub fn fixed64_field(out: &mut Vec<u8>, field: u32, value: u64) {
    key(out, field, I64);
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn fixed32_field(out: &mut Vec<u8>, field: u32, value: u32) {
    key(out, field, I32);
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn bytes_field(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

pub fn string_field(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes_field(out, field, value.as_bytes());
}

/// Appends an embedded message whose body `write` appends. The length is reserved as one byte
/// (most messages here are shorter than 128 bytes) and the body moved along when it is longer.
pub fn message_field(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    write(out);
    let body_start = at.saturating_add(1);
    let body_end = out.len();
    let (prefix, len_bytes) = varint_bytes(body_end.saturating_sub(body_start) as u64);
    let prefix = prefix.get(..len_bytes).unwrap_or_default();
    // The body moves right by the prefix bytes beyond the one reserved.
    let shift = len_bytes.saturating_sub(1);
    if shift > 0 {
        out.resize(body_end.saturating_add(shift), 0);
        out.copy_within(body_start..body_end, body_start.saturating_add(shift));
    }
    if let Some(slot) = out.get_mut(at..at.saturating_add(len_bytes)) {
        slot.copy_from_slice(prefix);
    }
}

/// An attribute value: the two `AnyValue` kinds the filter writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

/// `KeyValue { key = 1; AnyValue value = 2 }` as field `field` of the enclosing message, with
/// `AnyValue { string_value = 1; int_value = 3 }`.
pub fn attribute(out: &mut Vec<u8>, field: u32, key: &str, value: Value) {
    message_field(out, field, |kv| {
        string_field(kv, 1, key);
        message_field(kv, 2, |any| match value {
            Value::Str(text) => string_field(any, 1, text),
            // int64 on the wire: two's complement in a varint.
            Value::Int(n) => varint_field(any, 3, n as u64),
        });
    });
}

/// `Status { message = 2; code = 3 }` with code ERROR and no message (the semantic conventions
/// leave the description out when the status code says it all).
pub fn error_status(out: &mut Vec<u8>) {
    message_field(out, span::STATUS, |status| {
        varint_field(status, STATUS_CODE, STATUS_CODE_ERROR)
    });
}

/// `Resource { repeated KeyValue attributes = 1 }`, as a message body.
pub fn resource(attributes: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in attributes {
        attribute(&mut out, 1, name, Value::Str(value));
    }
    out
}

/// `InstrumentationScope { name = 1; version = 2 }`, as a message body.
pub fn scope(name: &str, version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, name);
    string_field(&mut out, 2, version);
    out
}

fn len_field_size(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3)
        .saturating_add(varint_len(len as u64))
        .saturating_add(len)
}

/// `ExportTraceServiceRequest { resource_spans = 1 }` holding one `ResourceSpans { resource = 1;
/// scope_spans = 2 }` with one `ScopeSpans { scope = 1; spans = 2 }`: every span of the batch
/// comes from this proxy and this filter. `resource`, `scope` and each span are message bodies.
/// Sizes are known up front, so the request is written in one pass into one allocation.
pub fn export_request<'s>(
    resource: &[u8],
    scope: &[u8],
    spans: impl Iterator<Item = &'s [u8]> + Clone,
) -> Vec<u8> {
    let spans_size = spans.clone().fold(0usize, |sum, s| {
        sum.saturating_add(len_field_size(2, s.len()))
    });
    let scope_spans_len = len_field_size(1, scope.len()).saturating_add(spans_size);
    let resource_spans_len =
        len_field_size(1, resource.len()).saturating_add(len_field_size(2, scope_spans_len));
    let mut out = Vec::with_capacity(len_field_size(1, resource_spans_len));
    key(&mut out, 1, LEN);
    varint(&mut out, resource_spans_len as u64);
    bytes_field(&mut out, 1, resource);
    key(&mut out, 2, LEN);
    varint(&mut out, scope_spans_len as u64);
    bytes_field(&mut out, 1, scope);
    for span in spans {
        bytes_field(&mut out, 2, span);
    }
    out
}

/// A body that is not a well-formed `ExportTraceServiceResponse`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Malformed;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or(Malformed)?;
            self.at = self.at.saturating_add(1);
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(len).ok_or(Malformed)?;
        let bytes = self.bytes.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(bytes)
    }

    /// The next field: its number, and its value (a varint, or the bytes of the others).
    fn field(&mut self) -> Result<Option<(u64, FieldValue<'a>)>, Malformed> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match (key & 7) as u8 {
            VARINT => FieldValue::Varint(self.varint()?),
            I64 => FieldValue::Bytes(self.take(8)?),
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                FieldValue::Bytes(self.take(len)?)
            }
            I32 => FieldValue::Bytes(self.take(4)?),
            _ => return Err(Malformed),
        };
        Ok(Some((key >> 3, value)))
    }
}

enum FieldValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The spans a collector rejected, from its `ExportTraceServiceResponse { partial_success = 1 }`
/// (`ExportTracePartialSuccess { int64 rejected_spans = 1; string error_message = 2 }`); 0 when
/// it accepted everything. Unknown fields are skipped, as protobuf readers must.
pub fn rejected_spans(body: &[u8]) -> Result<u64, Malformed> {
    let mut rejected = 0;
    let mut response = Reader { bytes: body, at: 0 };
    while let Some((field, value)) = response.field()? {
        match (field, value) {
            (1, FieldValue::Bytes(partial)) => {
                let mut partial = Reader {
                    bytes: partial,
                    at: 0,
                };
                while let Some((field, value)) = partial.field()? {
                    match (field, value) {
                        // A negative count is nonsense; it rejects nothing.
                        (1, FieldValue::Varint(n)) => rejected = i64::try_from(n).unwrap_or(0),
                        (1, FieldValue::Bytes(_)) => return Err(Malformed),
                        _ => {}
                    }
                }
            }
            (1, FieldValue::Varint(_)) => return Err(Malformed),
            _ => {}
        }
    }
    Ok(rejected.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_from_the_encoding_guide() {
        // protobuf.dev "Encoding": 1 is 01, 150 is 96 01; the largest u64 takes ten bytes.
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (150, &[0x96, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, want) in cases {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out, want, "{value}");
            assert_eq!(varint_len(value), want.len(), "{value}");
        }
    }

    #[test]
    fn fields_from_the_encoding_guide() {
        // The guide's `Test1 { int32 a = 1 }` with a = 150 is 08 96 01; `Test2 { string b = 2 }`
        // with "testing" is 12 07 74 65 73 74 69 6e 67; `Test3 { Test1 c = 3 }` is 1a 03 08 96 01.
        let mut out = Vec::new();
        varint_field(&mut out, 1, 150);
        assert_eq!(out, [0x08, 0x96, 0x01]);
        let mut out = Vec::new();
        string_field(&mut out, 2, "testing");
        assert_eq!(out, b"\x12\x07testing");
        let mut out = Vec::new();
        message_field(&mut out, 3, |m| varint_field(m, 1, 150));
        assert_eq!(out, [0x1a, 0x03, 0x08, 0x96, 0x01]);
        // fixed32 and fixed64 are little-endian, wire types 5 and 1.
        let mut out = Vec::new();
        fixed32_field(&mut out, 16, 0x0301);
        fixed64_field(&mut out, 7, 1);
        assert_eq!(
            out,
            [0x85, 0x01, 0x01, 0x03, 0, 0, 0x39, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn long_embedded_messages_get_a_longer_length_prefix() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let body = vec![0x5a; len];
            let mut out = vec![0xee];
            message_field(&mut out, 2, |m| m.extend_from_slice(&body));
            let mut want = vec![0xee, 0x12];
            varint(&mut want, len as u64);
            want.extend_from_slice(&body);
            assert_eq!(out, want, "body of {len} bytes");
        }
    }

    #[test]
    fn partial_success_is_read_and_other_fields_skipped() {
        let mut partial = Vec::new();
        varint_field(&mut partial, 1, 3);
        string_field(&mut partial, 2, "spans too old");
        let mut body = Vec::new();
        string_field(&mut body, 7, "a field from a newer collector");
        bytes_field(&mut body, 1, &partial);
        fixed64_field(&mut body, 9, 5);
        assert_eq!(rejected_spans(&body), Ok(3));
        assert_eq!(rejected_spans(&[]), Ok(0));
        // An empty partial_success is success.
        assert_eq!(rejected_spans(&[0x0a, 0x00]), Ok(0));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[0x0a],                   // a length missing
            &[0x0a, 0x05, 0x08],       // a length past the end
            &[0x08, 0x01],             // partial_success as a varint
            &[0x0a, 0x02, 0x0a, 0x00], // rejected_spans as bytes
            &[0x0b],                   // wire type 3 (groups are not in proto3)
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ];
        for &body in cases {
            assert_eq!(rejected_spans(body), Err(Malformed), "{body:02x?}");
        }
    }

    #[test]
    fn export_request_lengths_add_up() {
        // One resource attribute, the scope, two spans: decoded by hand, field by field.
        let resource = resource(&[("service.name", "edge")]);
        let scope = scope("tracebridge", "0.1.0");
        let spans: [&[u8]; 2] = [b"\x2a\x03GET", &[0x30, 0x02]];
        let body = export_request(&resource, &scope, spans.iter().copied());
        let mut r = Reader {
            bytes: &body,
            at: 0,
        };
        let Some((1, FieldValue::Bytes(resource_spans))) = r.field().unwrap() else {
            panic!("no resource_spans in {body:02x?}")
        };
        assert!(r.field().unwrap().is_none());
        let mut r = Reader {
            bytes: resource_spans,
            at: 0,
        };
        let Some((1, FieldValue::Bytes(got_resource))) = r.field().unwrap() else {
            panic!("no resource")
        };
        assert_eq!(got_resource, resource.as_slice());
        let Some((2, FieldValue::Bytes(scope_spans))) = r.field().unwrap() else {
            panic!("no scope_spans")
        };
        assert!(r.field().unwrap().is_none());
        let mut r = Reader {
            bytes: scope_spans,
            at: 0,
        };
        let Some((1, FieldValue::Bytes(got_scope))) = r.field().unwrap() else {
            panic!("no scope")
        };
        assert_eq!(got_scope, scope.as_slice());
        for want in spans {
            let Some((2, FieldValue::Bytes(got))) = r.field().unwrap() else {
                panic!("a span is missing")
            };
            assert_eq!(got, want);
        }
        assert!(r.field().unwrap().is_none());
        assert_eq!(body.capacity(), body.len(), "sized up front");
    }
}
