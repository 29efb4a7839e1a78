//! One span of the proxy, in OTLP's `Span` encoding: what is known when the request headers
//! arrive is encoded right away (so no request text has to be kept), the rest when the stream
//! completes. Protobuf readers accept fields in any order, so the end time written last is fine.
//!
//! Names and attributes follow OpenTelemetry's HTTP semantic conventions (server and client
//! spans, `http.*`, `url.*`, `server.*`, `network.*`, `user_agent.original`, `error.type`).

use super::otlp::{self, span, SpanKind, Value};
use crate::headers::{HeaderEdit, HeaderName};
use crate::ids::{SpanId, TraceId};
use std::borrow::Cow;
use std::net::SocketAddr;

/// Attribute values longer than this are cut (at a character boundary): a hostile 60 KB path
/// must not become a 60 KB span in every queue slot. Envoy's tracers cut paths at 256 bytes.
pub const MAX_VALUE_LEN: usize = 1024;

/// The well-known methods of the semantic conventions (`http.request.method`); any other is
/// reported as `_OTHER`, with the original in `http.request.method_original`.
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// Query parameters whose values the semantic conventions redact by default (`url.query`,
/// `url.full`): signed-URL credentials.
const REDACTED_QUERY_KEYS: [&str; 4] = ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// The request as the filter sees it when its headers arrive (all values as bytes from the
/// host; none needs to be UTF-8).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpRequest<'a> {
    pub method: Option<&'a [u8]>,
    /// `:path`, query included.
    pub path: Option<&'a [u8]>,
    pub scheme: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// Envoy's `source.address` (`ip:port`): the peer of a server span.
    pub downstream_peer: Option<&'a [u8]>,
    /// Envoy's `request.protocol` (`HTTP/1.1`, `HTTP/2`, `HTTP/3`).
    pub protocol: Option<&'a [u8]>,
}

/// Everything a span needs at its start.
#[derive(Clone, Copy, Debug)]
pub struct SpanStart<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span; `None` for a span that starts the trace here.
    pub parent: Option<SpanId>,
    /// W3C trace flags as written on the request (`01` sampled, `02` random trace id).
    pub trace_flags: u8,
    /// The `tracestate` the request leaves with.
    pub trace_state: Option<&'a str>,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub request: HttpRequest<'a>,
    /// `tracebridge.sampling.reason`: why the request was sampled.
    pub sampling_reason: &'a str,
    /// `tracebridge.source_format`: the format that supplied the context (`None`: new trace).
    pub source_format: Option<&'a str>,
}

/// What the filter learns when the stream completes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanEnd<'a> {
    pub end_unix_nanos: u64,
    /// Envoy's `response.code`; `None` or 0 when no response was sent.
    pub status_code: Option<u64>,
    /// Envoy's `upstream.address`: the peer of a client span.
    pub upstream_peer: Option<&'a [u8]>,
}

/// A span whose start is encoded; [`OpenSpan::finish`] completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSpan {
    body: Vec<u8>,
    kind: SpanKind,
    start_unix_nanos: u64,
}

impl OpenSpan {
    pub fn start(start: &SpanStart) -> OpenSpan {
        let request = &start.request;
        // Room for the fixed part and every value (the client's url.full repeats the authority
        // and path), so the span is written without growing its buffer.
        let len = |value: Option<&[u8]>| value.map_or(0, |v| v.len().min(MAX_VALUE_LEN));
        let repeated = len(request.path).saturating_add(len(request.authority));
        let capacity = [
            512,
            repeated,
            repeated,
            len(request.user_agent),
            start.trace_state.map_or(0, str::len),
        ]
        .iter()
        .fold(0usize, |sum, n| sum.saturating_add(*n));
        let mut body = Vec::with_capacity(capacity);
        otlp::bytes_field(
            &mut body,
            span::TRACE_ID,
            &start.trace_id.value().to_be_bytes(),
        );
        otlp::bytes_field(
            &mut body,
            span::SPAN_ID,
            &start.span_id.value().to_be_bytes(),
        );
        if let Some(state) = start.trace_state.filter(|s| !s.is_empty()) {
            otlp::string_field(&mut body, span::TRACE_STATE, state);
        }
        if let Some(parent) = start.parent {
            otlp::bytes_field(
                &mut body,
                span::PARENT_SPAN_ID,
                &parent.value().to_be_bytes(),
            );
        }
        let method = request.method.map(|m| text(m));
        let known = method.as_deref().and_then(known_method);
        // `{method}` (no route template is known to a proxy); "HTTP" for other methods.
        otlp::string_field(&mut body, span::NAME, known.unwrap_or("HTTP"));
        otlp::varint_field(&mut body, span::KIND, start.kind as u64);
        otlp::fixed64_field(
            &mut body,
            span::START_TIME_UNIX_NANO,
            start.start_unix_nanos,
        );
        let remote = if start.parent.is_some() {
            otlp::FLAGS_IS_REMOTE
        } else {
            0
        };
        otlp::fixed32_field(
            &mut body,
            span::FLAGS,
            u32::from(start.trace_flags) | otlp::FLAGS_HAS_IS_REMOTE | remote,
        );

        let mut attr =
            |key: &str, value: Value| otlp::attribute(&mut body, span::ATTRIBUTES, key, value);
        attr("http.request.method", Value::Str(known.unwrap_or("_OTHER")));
        if let (None, Some(original)) = (known, method.as_deref()) {
            attr("http.request.method_original", Value::Str(original));
        }
        let scheme = request.scheme.map(|s| text(s));
        if let Some(scheme) = scheme.as_deref() {
            attr("url.scheme", Value::Str(scheme));
        }
        let (path, query) = match request.path {
            Some(path) => split_path(path),
            None => (None, None),
        };
        let query = query.map(|q| redact_query(q));
        let authority = request.authority.map(|a| text(a));
        let (host, port) = authority.as_deref().map_or((None, None), split_authority);
        if let Some(host) = host {
            attr("server.address", Value::Str(host));
        }
        match start.kind {
            SpanKind::Server => {
                if let Some(port) = port {
                    attr("server.port", Value::Int(i64::from(port)));
                }
                if let Some(path) = path.as_deref() {
                    attr("url.path", Value::Str(path));
                }
                if let Some(query) = query.as_deref() {
                    attr("url.query", Value::Str(query));
                }
                if let Some((address, port)) = request.downstream_peer.and_then(peer_address) {
                    attr("network.peer.address", Value::Str(address));
                    attr("network.peer.port", Value::Int(i64::from(port)));
                }
                if let Some(version) = request.protocol.and_then(protocol_version) {
                    attr("network.protocol.version", Value::Str(version));
                }
            }
            SpanKind::Client => {
                // Required for client spans; the scheme's default when the authority has none.
                let default_port = match scheme.as_deref() {
                    Some("https") => Some(443),
                    Some("http") => Some(80),
                    _ => None,
                };
                if let Some(port) = port.or(default_port).filter(|_| host.is_some()) {
                    attr("server.port", Value::Int(i64::from(port)));
                }
                if let (Some(scheme), Some(authority)) = (scheme.as_deref(), authority.as_deref()) {
                    let mut full =
                        format!("{scheme}://{authority}{}", path.as_deref().unwrap_or(""));
                    if let Some(query) = query.as_deref() {
                        full.push('?');
                        full.push_str(query);
                    }
                    attr("url.full", Value::Str(truncate(&full)));
                }
            }
        }
        if let Some(agent) = request.user_agent {
            attr("user_agent.original", Value::Str(&text(agent)));
        }
        attr(
            "tracebridge.sampling.reason",
            Value::Str(start.sampling_reason),
        );
        if let Some(format) = start.source_format {
            attr("tracebridge.source_format", Value::Str(format));
        }
        OpenSpan {
            body,
            kind: start.kind,
            start_unix_nanos: start.start_unix_nanos,
        }
    }

    pub fn kind(&self) -> SpanKind {
        self.kind
    }

    /// The finished span, an OTLP `Span` message body.
    pub fn finish(mut self, end: &SpanEnd) -> Vec<u8> {
        let body = &mut self.body;
        // A clock that stepped back must not make a span end before it started.
        let end_time = end.end_unix_nanos.max(self.start_unix_nanos);
        otlp::fixed64_field(body, span::END_TIME_UNIX_NANO, end_time);
        let code = end.status_code.filter(|&code| code > 0);
        if let Some(code) = code {
            otlp::attribute(
                body,
                span::ATTRIBUTES,
                "http.response.status_code",
                Value::Int(code.min(i64::MAX as u64) as i64),
            );
        }
        if self.kind == SpanKind::Client {
            if let Some((address, port)) = end.upstream_peer.and_then(peer_address) {
                otlp::attribute(
                    body,
                    span::ATTRIBUTES,
                    "network.peer.address",
                    Value::Str(address),
                );
                otlp::attribute(
                    body,
                    span::ATTRIBUTES,
                    "network.peer.port",
                    Value::Int(i64::from(port)),
                );
            }
        }
        // Server spans: 5xx is an error, 4xx is the client's (status left unset). Client spans:
        // 4xx and 5xx are errors. No response at all is an error for both.
        let error_from = match self.kind {
            SpanKind::Server => 500,
            SpanKind::Client => 400,
        };
        let error_type = match code {
            None => Some(Cow::Borrowed("_OTHER")),
            Some(code) if code >= error_from => Some(Cow::Owned(code.to_string())),
            Some(_) => None,
        };
        if let Some(error_type) = error_type {
            otlp::attribute(
                body,
                span::ATTRIBUTES,
                "error.type",
                Value::Str(&error_type),
            );
            otlp::error_status(body);
        }
        self.body
    }
}

/// The `tracestate` the request leaves with: what the translation set, nothing if it removed
/// it, else (with `tracecontext` injected and the caller's list kept) the caller's lines.
pub fn outgoing_tracestate(
    edits: &[HeaderEdit],
    incoming_lines: Option<&[&[u8]]>,
    injects_tracecontext: bool,
) -> Option<String> {
    for edit in edits {
        match edit {
            HeaderEdit::Set(HeaderName::Tracestate, value) => return Some(value.clone()),
            HeaderEdit::Remove(HeaderName::Tracestate) => return None,
            _ => {}
        }
    }
    if !injects_tracecontext {
        return None;
    }
    let lines = incoming_lines?;
    let joined: Vec<Cow<str>> = lines
        .iter()
        .map(|line| String::from_utf8_lossy(line))
        .collect();
    Some(joined.join(",")).filter(|s| !s.is_empty())
}

fn known_method(method: &str) -> Option<&'static str> {
    KNOWN_METHODS.into_iter().find(|&known| known == method)
}

/// `bytes` as text (invalid UTF-8 replaced, since protobuf strings must be UTF-8), cut to
/// [`MAX_VALUE_LEN`].
fn text(bytes: &[u8]) -> Cow<'_, str> {
    // A few bytes past the limit, so a character the limit cuts is still whole here.
    let head = bytes
        .get(..MAX_VALUE_LEN.saturating_add(4))
        .unwrap_or(bytes);
    match String::from_utf8_lossy(head) {
        Cow::Borrowed(s) => Cow::Borrowed(truncate(s)),
        Cow::Owned(s) => Cow::Owned(truncate(&s).to_string()),
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_VALUE_LEN {
        return s;
    }
    // A character is at most 4 bytes: one of these is a boundary (0 always is).
    let end = (0..=MAX_VALUE_LEN)
        .rev()
        .find(|&end| s.is_char_boundary(end))
        .unwrap_or(0);
    s.get(..end).unwrap_or_default()
}

/// `:path` split into `url.path` and `url.query` (without the `?`; absent when empty).
fn split_path(path: &[u8]) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    match crate::bytes::split_once(path, b'?') {
        Some((path, query)) => (
            Some(text(path)),
            Some(text(query)).filter(|query| !query.is_empty()),
        ),
        None => (Some(text(path)), None),
    }
}

/// The query with the values of [`REDACTED_QUERY_KEYS`] replaced by `REDACTED`.
fn redact_query(query: Cow<'_, str>) -> Cow<'_, str> {
    let sensitive = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(key, _)| REDACTED_QUERY_KEYS.contains(&key))
    };
    if !query.split('&').any(sensitive) {
        return query;
    }
    let pairs: Vec<Cow<str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if sensitive(pair) => Cow::Owned(format!("{key}=REDACTED")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

/// `:authority` as host (IPv6 without brackets) and port; a port that is not a number up to
/// 65535 is left out.
fn split_authority(authority: &str) -> (Option<&str>, Option<u16>) {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            // More than one colon without brackets is not host:port.
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (authority, None),
        }
    };
    let port = port.and_then(|p| p.parse::<u16>().ok());
    (Some(host).filter(|h| !h.is_empty()), port)
}

/// Envoy's `ip:port` address properties (IPv6 in brackets), as Envoy wrote the address;
/// anything else (a pipe name) is not reported.
fn peer_address(address: &[u8]) -> Option<(&str, u16)> {
    let text = std::str::from_utf8(address).ok()?;
    let socket: SocketAddr = text.parse().ok()?;
    let (ip, _) = text.rsplit_once(':')?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|ip| ip.strip_suffix(']'))
        .unwrap_or(ip);
    Some((ip, socket.port()))
}

/// `HTTP/1.1` → `1.1` (`network.protocol.version`).
fn protocol_version(protocol: &[u8]) -> Option<&'static str> {
    Some(match protocol {
        b"HTTP/1.0" => "1.0",
        b"HTTP/1.1" => "1.1",
        b"HTTP/2" => "2",
        b"HTTP/3" => "3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_per_the_semantic_conventions() {
        // http.request.method: the listed methods, case-sensitive; anything else is _OTHER.
        for (method, want) in [
            ("GET", Some("GET")),
            ("PATCH", Some("PATCH")),
            ("CONNECT", Some("CONNECT")),
            ("get", None),
            ("PROPFIND", None),
            ("", None),
        ] {
            assert_eq!(known_method(method), want, "{method:?}");
        }
    }

    #[test]
    fn authority_table() {
        let cases: &[(&str, Option<&str>, Option<u16>)] = &[
            ("api.example.com", Some("api.example.com"), None),
            ("api.example.com:8443", Some("api.example.com"), Some(8443)),
            ("10.1.2.80:80", Some("10.1.2.80"), Some(80)),
            ("[2001:db8::1]:443", Some("2001:db8::1"), Some(443)),
            ("[2001:db8::1]", Some("2001:db8::1"), None),
            ("2001:db8::1", Some("2001:db8::1"), None),
            ("host:99999", Some("host"), None),
            ("host:", Some("host"), None),
            (":80", None, Some(80)),
            ("", None, None),
        ];
        for &(authority, host, port) in cases {
            assert_eq!(split_authority(authority), (host, port), "{authority:?}");
        }
    }

    #[test]
    fn path_and_query() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("/orders/7", Some("/orders/7"), None),
            ("/orders?id=7&x", Some("/orders"), Some("id=7&x")),
            ("/?", Some("/"), None),
            ("*", Some("*"), None),
        ];
        for &(input, path, query) in cases {
            let (got_path, got_query) = split_path(input.as_bytes());
            assert_eq!(
                (got_path.as_deref(), got_query.as_deref()),
                (path, query),
                "{input:?}"
            );
        }
    }

    #[test]
    fn signed_url_credentials_are_redacted() {
        // The semantic conventions' url.query example: `q=OpenTelemetry` stays, the values of
        // AWSAccessKeyId, Signature, sig and X-Goog-Signature become REDACTED.
        let cases = [
            ("q=OpenTelemetry", "q=OpenTelemetry"),
            (
                "AWSAccessKeyId=AKIA&Signature=abc%2F&Expires=1",
                "AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=1",
            ),
            ("sv=2015&sig=secret", "sv=2015&sig=REDACTED"),
            ("X-Goog-Signature=00ff&a=1", "X-Goog-Signature=REDACTED&a=1"),
            // Keys are case-sensitive, and a key without a value has nothing to hide.
            ("signature=x&sig", "signature=x&sig"),
        ];
        for (query, want) in cases {
            assert_eq!(redact_query(Cow::Borrowed(query)), want, "{query}");
        }
    }

    #[test]
    fn values_are_text_and_bounded() {
        assert_eq!(text(b"curl/8.5.0"), "curl/8.5.0");
        assert_eq!(text(b"bad \xff byte"), "bad \u{fffd} byte");
        let long = "\u{e9}".repeat(MAX_VALUE_LEN); // two bytes each
        let cut = text(long.as_bytes());
        assert_eq!(cut.len(), MAX_VALUE_LEN);
        assert!(cut.chars().all(|c| c == '\u{e9}'));
        let long = vec![b'a'; 60_000];
        assert_eq!(text(&long).len(), MAX_VALUE_LEN);
    }

    #[test]
    fn peers_and_protocols() {
        assert_eq!(peer_address(b"10.0.0.7:41234"), Some(("10.0.0.7", 41234)));
        assert_eq!(peer_address(b"[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(peer_address(b"10.0.0.7"), None);
        assert_eq!(peer_address(b"@pipe"), None);
        assert_eq!(protocol_version(b"HTTP/2"), Some("2"));
        assert_eq!(protocol_version(b"HTTP/1.1"), Some("1.1"));
        assert_eq!(protocol_version(b"SPDY"), None);
    }

    #[test]
    fn the_outgoing_tracestate() {
        let set = [HeaderEdit::Set(
            HeaderName::Tracestate,
            "ot=th:0,a=1".into(),
        )];
        let removed = [HeaderEdit::Remove(HeaderName::Tracestate)];
        let lines: &[&[u8]] = &[b"a=1", b"b=2"];
        assert_eq!(
            outgoing_tracestate(&set, Some(lines), true).as_deref(),
            Some("ot=th:0,a=1")
        );
        assert_eq!(outgoing_tracestate(&removed, Some(lines), true), None);
        assert_eq!(
            outgoing_tracestate(&[], Some(lines), true).as_deref(),
            Some("a=1,b=2")
        );
        assert_eq!(outgoing_tracestate(&[], Some(lines), false), None);
        assert_eq!(outgoing_tracestate(&[], None, true), None);
    }
}
