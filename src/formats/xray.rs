//! AWS X-Ray: `X-Amzn-Trace-Id: Root=1-{8 hex epoch}-{24 hex};Parent={16 hex};Sampled={1|0|?}`
//! plus fields X-Ray keeps but does not interpret (`Self`, `Lineage`, custom keys).

use super::{Injection, Propagator};
use crate::bytes::split_once;
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{
    is_printable_ascii, parse_hex_exact, parse_span_id_16, trim_ows, HexCase, TraceId,
};

/// ALB and the SDKs keep the header short (the Java SDK truncates at 256); 1 KiB leaves room for
/// custom fields without accepting hostile sizes.
const MAX_LEN: usize = 1024;

/// The `x-amzn-trace-id` header.
pub struct XRay;

/// What inject needs to know about the header extract parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct XRayState {
    /// The header is already in the form this filter writes: lower-case ids, no empty fields,
    /// no spaces around fields.
    canonical: bool,
    /// Fields other than `Root`, `Parent` and `Sampled` are present (kept for the same trace).
    extra_fields: bool,
}

/// A parsed header.
#[derive(Debug, PartialEq)]
struct Parsed {
    context: IncomingContext,
    state: XRayState,
}

impl Propagator for XRay {
    type State = XRayState;

    fn extract(headers: &RequestHeaders) -> (Extraction, XRayState) {
        match headers.get(HeaderName::AmznTraceId) {
            None => (Extraction::Absent, XRayState::default()),
            Some(value) => match parse(value) {
                Some(parsed) => (Extraction::Context(parsed.context), parsed.state),
                None => (Extraction::Invalid, XRayState::default()),
            },
        }
    }

    /// Rewrites the header for the context; fields other than Root/Parent/Sampled survive when
    /// the X-Ray trace id is unchanged. Uses what extract parsed: the header is not parsed again.
    fn inject(injection: &Injection<'_, '_, XRayState>, edits: &mut Vec<HeaderEdit>) {
        let (ctx, headers, state) = (injection.context, injection.headers, injection.state);
        let incoming = injection.incoming.context();
        if let Some(incoming) = incoming {
            let single_line = headers.count(HeaderName::AmznTraceId) == 1;
            if single_line && state.canonical && ctx.matches(incoming, false) {
                return;
            }
        }
        let same_trace = incoming.is_some_and(|inc| inc.trace_id == ctx.trace_id);
        let kept = headers
            .get(HeaderName::AmznTraceId)
            .filter(|_| same_trace && state.extra_fields);
        let extras = kept.into_iter().flat_map(fields).filter(|field| {
            split_field(field).is_some_and(|(key, _)| !is_known_key(key))
        });
        edits.push(HeaderEdit::Set(
            HeaderName::AmznTraceId,
            encode(ctx, extras),
        ));
    }
}

/// Splits the header into trimmed fields, skipping empty ones (a trailing `;`).
fn fields(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|f| !f.is_empty())
}

/// A field's `(key, value)`; `None` without `=` (the header is then invalid).
fn split_field(field: &[u8]) -> Option<(&[u8], &[u8])> {
    split_once(field, b'=')
}

fn is_known_key(key: &[u8]) -> bool {
    matches!(key, b"Root" | b"Parent" | b"Sampled")
}

fn parse(value: &[u8]) -> Option<Parsed> {
    // Extra fields are kept verbatim, so the whole header must be text.
    if value.len() > MAX_LEN || !is_printable_ascii(value) {
        return None;
    }
    let (mut root, mut parent, mut sampled) = (None, None, None);
    let mut extra_fields = false;
    // No empty field (a trailing `;`) and no space around one: part of the canonical form,
    // seen in the same pass.
    let mut tidy = true;
    for raw in value.split(|&b| b == b';') {
        let field = trim_ows(raw);
        tidy &= !field.is_empty() && field.len() == raw.len();
        if field.is_empty() {
            continue;
        }
        let (key, field_value) = split_field(field)?;
        let slot = match key {
            b"Root" => &mut root,
            b"Parent" => &mut parent,
            b"Sampled" => &mut sampled,
            _ => {
                extra_fields = true;
                continue;
            }
        };
        if slot.replace(field_value).is_some() {
            return None; // the same key twice is ambiguous
        }
    }
    let root = root?;
    // Root = "1-" 8 hex "-" 24 hex; the first part is the epoch second, but X-Ray does not
    // validate it, so any W3C id maps 1:1.
    // As a fixed-size array, its constant positions cannot be out of bounds.
    let root: &[u8; 35] = root.try_into().ok()?;
    if &root[..2] != b"1-" || root[10] != b'-' {
        return None;
    }
    let high = parse_hex_exact(&root[2..10], 8, HexCase::Any)?;
    let low = parse_hex_exact(&root[11..35], 24, HexCase::Any)?;
    let trace_id = TraceId::new((high << 96) | low)?;
    let span_id = match parent {
        None => None,
        Some(parent) => Some(parse_span_id_16(parent, HexCase::Any)?),
    };
    // `?` means "requested": the caller leaves the decision to us, as does any unknown value.
    let decision = match sampled {
        Some(b"1") => Some(Decision::Sampled),
        Some(b"0") => Some(Decision::NotSampled),
        _ => None,
    };
    // Left byte for byte only in the form readers take: lower-case ids, and no empty field or
    // space around one (OpenTelemetry Python's reader rejects a trailing `;`).
    let canonical = tidy
        && !root
            .iter()
            .chain(parent.unwrap_or_default())
            .any(u8::is_ascii_uppercase);
    Some(Parsed {
        context: IncomingContext {
            trace_id,
            span_id,
            decision,
            random_trace_id: false,
        },
        state: XRayState {
            canonical,
            extra_fields,
        },
    })
}

/// `Root=...;Parent=...;Sampled=...` followed by `extra_fields` (each without its `;`), as many
/// whole fields as keep the header within [`MAX_LEN`], the most this reader (and so the next
/// tracebridge hop) accepts: a field that would take it over is left out, later shorter ones
/// still go.
pub fn encode<'a>(ctx: &TraceContext, extra_fields: impl Iterator<Item = &'a [u8]>) -> String {
    let mut out = String::with_capacity(80);
    let trace = ctx.trace_id.to_hex();
    out.push_str("Root=1-");
    out.push_str(&trace[..8]);
    out.push('-');
    out.push_str(&trace[8..]);
    out.push_str(";Parent=");
    ctx.span_id.write_hex(&mut out);
    out.push_str(if ctx.decision.is_sampled() {
        ";Sampled=1"
    } else {
        ";Sampled=0"
    });
    let mut left_out = 0usize;
    for field in extra_fields {
        // Fields are ASCII when the header parsed; anything else is dropped rather than mangled.
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if out.len().saturating_add(1).saturating_add(field.len()) > MAX_LEN {
            left_out = left_out.saturating_add(1);
            continue;
        }
        out.push(';');
        out.push_str(field);
    }
    if left_out > 0 {
        log::debug!(
            "tracebridge: x-amzn-trace-id: {left_out} extra field(s) left out to stay within {MAX_LEN} bytes"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Format;
    use crate::ids::SpanId;

    const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
    const TRACE: u128 = 0x5759e988bd862e3fe1be46a994272793;
    const PARENT: &str = "53995c3f42cd8ad8";

    fn context(span: Option<u64>, decision: Option<Decision>) -> Option<(IncomingContext, bool)> {
        Some((
            IncomingContext {
                trace_id: TraceId::new(TRACE).unwrap(),
                span_id: span.and_then(SpanId::new),
                decision,
                random_trace_id: false,
            },
            true,
        ))
    }

    #[test]
    fn parse_table() {
        // Examples from the AWS X-Ray and ALB request-tracing documentation.
        let p = Some(0x53995c3f42cd8ad8);
        let cases: Vec<(String, Option<(IncomingContext, bool)>)> = vec![
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=1"),
                context(p, Some(Decision::Sampled)),
            ),
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=0"),
                context(p, Some(Decision::NotSampled)),
            ),
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=?"),
                context(p, None),
            ),
            (format!("Root={ROOT};Parent={PARENT}"), context(p, None)),
            (
                format!("Sampled=1;Parent={PARENT};Root={ROOT}"),
                context(p, Some(Decision::Sampled)),
            ),
            (format!("Root={ROOT}"), context(None, None)),
            (
                format!("Self=1-67891234-12456789abcdef012345678;Root={ROOT}"),
                context(None, None),
            ),
            // Read as the AWS SDK reads it (it trims), but not canonical: OpenTelemetry
            // Python's AwsXRayPropagator rejects the empty field after a trailing `;`.
            (
                format!("Root={ROOT}; Parent={PARENT} ;Sampled=1;"),
                context(p, Some(Decision::Sampled)).map(|(c, _)| (c, false)),
            ),
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=1;"),
                context(p, Some(Decision::Sampled)).map(|(c, _)| (c, false)),
            ),
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=1;Lineage=a87bd80c:1|68fd508a:5"),
                context(p, Some(Decision::Sampled)),
            ),
            (format!("Root={ROOT};Sampled=yes"), context(None, None)),
            (
                format!(
                    "Root={};Parent={}",
                    ROOT.to_uppercase(),
                    PARENT.to_uppercase()
                ),
                context(p, None).map(|(c, _)| (c, false)),
            ),
            (format!("Parent={PARENT};Sampled=1"), None),
            (format!("root={ROOT}"), None),
            (format!("Root={ROOT};Root={ROOT}"), None),
            ("Root=2-5759e988-bd862e3fe1be46a994272793".into(), None),
            ("Root=1-5759e98-bd862e3fe1be46a994272793".into(), None),
            ("Root=1-5759e988-bd862e3fe1be46a99427279".into(), None),
            ("Root=1-00000000-000000000000000000000000".into(), None),
            (format!("Root={ROOT};Parent=53995c3f42cd8ad"), None),
            (format!("Root={ROOT};Parent=0000000000000000"), None),
            (format!("Root={ROOT};garbage"), None),
            (
                format!("Root={ROOT};Parent={PARENT};Sampled=1;Foo=\u{e9}"),
                None,
            ),
            (String::new(), None),
        ];
        for (input, want) in cases {
            let got = parse(input.as_bytes()).map(|p| (p.context, p.state.canonical));
            assert_eq!(got, want, "x-amzn-trace-id {input:?}");
        }
    }

    fn inject_value(incoming: &str, trace: u128) -> Vec<HeaderEdit> {
        let pairs = [("x-amzn-trace-id", incoming.as_bytes())];
        let headers = RequestHeaders::from_pairs(pairs);
        let ctx = TraceContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(0x1111111111111111).unwrap(),
            decision: Decision::Sampled,
            random_trace_id: false,
        };
        crate::formats::tests::inject_edits(Format::XRay, &ctx, &headers)
    }

    #[test]
    fn extract_remembers_extra_fields() {
        let with = format!("Self=1-67891234-12456789abcdef012345678;Root={ROOT};Sampled=1");
        let without = format!("Root={ROOT}; Parent={PARENT} ;Sampled=1;");
        assert!(parse(with.as_bytes()).unwrap().state.extra_fields);
        assert!(!parse(without.as_bytes()).unwrap().state.extra_fields);
    }

    #[test]
    fn keeps_extra_fields_for_the_same_trace() {
        let incoming = format!("Self=1-67891234-12456789abcdef012345678;Root={ROOT};Lineage=a87bd80c:1|68fd508a:5;Sampled=?");
        let want = format!(
            "Root={ROOT};Parent=1111111111111111;Sampled=1;Self=1-67891234-12456789abcdef012345678;Lineage=a87bd80c:1|68fd508a:5"
        );
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
    }

    #[test]
    fn drops_extra_fields_of_another_trace() {
        let incoming = format!("Root={ROOT};Lineage=a87bd80c:1|68fd508a:5");
        let want = "Root=1-11111111-222222222222222222222222;Parent=1111111111111111;Sampled=1"
            .to_string();
        assert_eq!(
            inject_value(&incoming, 0x11111111222222222222222222222222),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
    }

    #[test]
    fn unchanged_canonical_header_is_left_alone() {
        let incoming = format!("Root={ROOT};Parent=1111111111111111;Sampled=1;Lineage=x");
        assert_eq!(inject_value(&incoming, TRACE), vec![]);
    }

    /// Issue 10, defect 1: the header written must be one this reader accepts (at most
    /// `MAX_LEN` bytes), so extra fields that do not fit are left out whole.
    #[test]
    fn extra_fields_never_take_the_header_over_its_size_cap() {
        // 1,024 bytes in: valid, and its Lineage (975 bytes) cannot fit beside a Parent.
        let incoming = format!("Root={ROOT};Lineage={}", "a".repeat(975));
        assert_eq!(incoming.len(), MAX_LEN);
        let want = format!("Root={ROOT};Parent=1111111111111111;Sampled=1");
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
        // A field too long is left out; the short ones around it stay, in order.
        let incoming = format!("Root={ROOT};Self=1-a;Pad={};Lineage=b", "p".repeat(960));
        let want = format!("Root={ROOT};Parent=1111111111111111;Sampled=1;Self=1-a;Lineage=b");
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
        // What fits exactly stays: 74 bytes of ids and 950 of field make 1,024.
        let field = format!("Pad={}", "p".repeat(945));
        let incoming = format!("Root={ROOT};{field}");
        let written = format!("Root={ROOT};Parent=1111111111111111;Sampled=1;{field}");
        assert_eq!(written.len(), MAX_LEN);
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, written.clone())]
        );
        // And every header written reads back.
        assert!(parse(written.as_bytes()).is_some());
    }

    #[test]
    fn trailing_semicolon_is_rewritten() {
        let incoming = format!("Root={ROOT};Parent=1111111111111111;Sampled=1;");
        let want = format!("Root={ROOT};Parent=1111111111111111;Sampled=1");
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
    }

    #[test]
    fn upper_case_ids_are_normalised() {
        let incoming = format!(
            "Root={};Parent=1111111111111111;Sampled=1",
            ROOT.to_uppercase()
        );
        let want = format!("Root={ROOT};Parent=1111111111111111;Sampled=1");
        assert_eq!(
            inject_value(&incoming, TRACE),
            vec![HeaderEdit::Set(HeaderName::AmznTraceId, want)]
        );
    }
}
