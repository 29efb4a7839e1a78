//! The response side: telling the caller which trace its request belongs to.
//!
//! With `response` configured, the filter keeps the context it sent upstream and adds to the
//! response
//! - the W3C `trace` Server-Timing metric, `server-timing: trace;desc=00-<trace id>-<span id>-<flags>`
//!   (w3c/trace-context editor's draft, `spec/21-http_response_header_format.md`, "Trace Context
//!   Server Timing Metric Format"), which browsers show in their developer tools and give to
//!   pages through `PerformanceResourceTiming.serverTiming`;
//! - optionally the `traceresponse` header of the earlier drafts (which the metric replaced), with
//!   the same value, for clients that still read it;
//! - optionally a header with a link to the trace in a tracing console;
//! - optionally `Timing-Allow-Origin`, which lets pages of other origins read the metric.
//!
//! Nothing the upstream set is replaced: the metric goes on a header line of its own, beside the
//! upstream's Server-Timing lines, and a header (or a `trace` metric) the upstream already set
//! is left as it is, since the upstream knows its own span better than the proxy does.
//!
//! Configuration parsing and every value are here, free of proxy-wasm; the filter only keeps
//! the context and adds the lines this module returns.

use crate::config::json::{check_keys, error, header_name, object, string, type_name, ConfigError};
use crate::context::TraceContext;
use crate::formats::tracecontext::encode_traceparent;
use serde_json::Value;

pub const SERVER_TIMING: &str = "server-timing";
pub const TRACERESPONSE: &str = "traceresponse";
pub const TIMING_ALLOW_ORIGIN: &str = "timing-allow-origin";
/// The metric name of the W3C draft ("tracing systems SHOULD encode the metric name as ASCII
/// lowercase").
const TRACE_METRIC: &[u8] = b"trace";

/// `response`: what is added to responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseConfig {
    /// `response.server_timing`: add the `trace` Server-Timing metric.
    pub server_timing: bool,
    /// `response.traceresponse`: also add the earlier drafts' `traceresponse` header.
    pub traceresponse: bool,
    pub link: Option<Link>,
    pub when: When,
    /// `response.timing_allow_origin`: the `Timing-Allow-Origin` value.
    pub timing_allow_origin: Option<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            server_timing: true,
            traceresponse: false,
            link: None,
            when: When::Sampled,
            timing_allow_origin: None,
        }
    }
}

/// `response.when`: which responses carry the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Only sampled requests: unsampled traffic reveals nothing.
    Sampled,
    Always,
}

/// `response.link`: a header whose value links to the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Lower-case header name.
    pub header: String,
    pub template: Template,
}

/// A link template, compiled: literal text and the ids to fill in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Bytes of the rendered value, to allocate once.
    len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(Placeholder),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    /// 32 lower-case hex digits.
    Trace,
    /// 16 lower-case hex digits.
    Span,
    /// `1-` 8 hex digits `-` 24 hex digits: the X-Ray form of the same trace id.
    XrayTrace,
}

/// The placeholders as a configuration error lists them (kept equal to [`Placeholder::ALL`] by
/// a test; a constant, so no list is joined at run time).
const PLACEHOLDERS: &str = "{trace_id}, {span_id}, {xray_trace_id}";

impl Placeholder {
    const ALL: [Placeholder; 3] = [
        Placeholder::Trace,
        Placeholder::Span,
        Placeholder::XrayTrace,
    ];

    fn name(self) -> &'static str {
        match self {
            Placeholder::Trace => "trace_id",
            Placeholder::Span => "span_id",
            Placeholder::XrayTrace => "xray_trace_id",
        }
    }

    fn len(self) -> usize {
        match self {
            Placeholder::Trace => 32,
            Placeholder::Span => 16,
            Placeholder::XrayTrace => 35,
        }
    }

    fn write(self, ctx: &TraceContext, out: &mut String) {
        match self {
            Placeholder::Trace => ctx.trace_id.write_hex(out),
            Placeholder::Span => ctx.span_id.write_hex(out),
            Placeholder::XrayTrace => {
                let mut hex = String::with_capacity(32);
                ctx.trace_id.write_hex(&mut hex);
                out.push_str("1-");
                out.push_str(&hex[..8]);
                out.push('-');
                out.push_str(&hex[8..]);
            }
        }
    }
}

impl Template {
    /// Compiles `text`: `{trace_id}`, `{span_id}` and `{xray_trace_id}` are filled in, `{{` and
    /// `}}` stand for literal braces. The value must be visible ASCII, as a header value and a
    /// URL need (percent-encode anything else).
    pub fn parse(text: &str) -> Result<Template, String> {
        if let Some(bad) = text.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
            return Err(format!(
                "may contain only visible ASCII characters (percent-encode the rest), found byte 0x{bad:02x}"
            ));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.bytes().position(|b| b == b'{' || b == b'}') {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(
                    "has a \"}\" that closes nothing (write \"}}\" for a literal brace)".into(),
                );
            } else {
                // `tail` starts with `{`: the placeholder's name runs to the next `}`.
                let Some((name, after)) = tail.get(1..).and_then(|inner| inner.split_once('}'))
                else {
                    return Err(
                        "has a \"{\" that is never closed (write \"{{\" for a literal brace)"
                            .into(),
                    );
                };
                let Some(placeholder) = Placeholder::ALL.into_iter().find(|p| p.name() == name)
                else {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; expected one of: {PLACEHOLDERS} (\"{{{{\" and \"}}}}\" for literal braces)"
                    ));
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Placeholder(placeholder));
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Placeholder(_))) {
            return Err(
                "contains no placeholder: use {trace_id}, {span_id} or {xray_trace_id}".into(),
            );
        }
        let len = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.len(),
                Piece::Placeholder(p) => p.len(),
            })
            .sum();
        Ok(Template { pieces, len })
    }

    pub fn render(&self, ctx: &TraceContext) -> String {
        let mut out = String::with_capacity(self.len);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(p) => p.write(ctx, &mut out),
            }
        }
        out
    }
}

/// Headers tracebridge writes itself; the link must not take one of their names, nor one that
/// frames the message.
const RESERVED_HEADERS: [&str; 10] = [
    SERVER_TIMING,
    TRACERESPONSE,
    TIMING_ALLOW_ORIGIN,
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "set-cookie",
];

fn boolean(value: &Value, path: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(on) => Ok(*on),
        _ => Err(error(
            path,
            format!("must be true or false, got {}", type_name(value)),
        )),
    }
}

fn link(value: &Value) -> Result<Link, ConfigError> {
    let object = object(value, "response.link")?;
    check_keys(object, "response.link.", &["header", "template"])?;
    let Some(header) = object.get("header") else {
        return Err(error("response.link.header", "is required"));
    };
    let header = header_name(header, "response.link.header")?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(error(
            "response.link.header",
            format!(
                "\"{header}\" cannot carry the link; use a header of its own, e.g. x-trace-link"
            ),
        ));
    }
    let Some(template) = object.get("template") else {
        return Err(error("response.link.template", "is required"));
    };
    let template = Template::parse(string(template, "response.link.template")?)
        .map_err(|problem| error("response.link.template", problem))?;
    Ok(Link { header, template })
}

/// `Timing-Allow-Origin = 1#( origin-or-null / wildcard )` (W3C Resource Timing), with
/// `serialized-origin = scheme "://" host [ ":" port ]` (RFC 6454): no path, no trailing slash.
/// (Parsed as bytes: the string searchers of `str` would cost the module kilobytes.)
fn timing_allow_origin(value: &Value) -> Result<String, ConfigError> {
    const PATH: &str = "response.timing_allow_origin";
    let text = string(value, PATH)?;
    let mut origins = String::with_capacity(text.len());
    for item in text.as_bytes().split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() {
            return Err(error(PATH, "has an empty item in its comma-separated list"));
        }
        // Split at ASCII bytes of a `str`, so still UTF-8.
        let item_text = std::str::from_utf8(item).unwrap_or_default();
        if !(item == b"*" || item == b"null" || is_serialized_origin(item)) {
            return Err(error(
                PATH,
                format!("\"{item_text}\" is not \"*\", \"null\" or an origin (scheme://host[:port], without path or trailing slash)"),
            ));
        }
        if !origins.is_empty() {
            origins.push_str(", ");
        }
        origins.push_str(item_text);
    }
    Ok(origins)
}

fn is_serialized_origin(item: &[u8]) -> bool {
    let Some(separator) = item.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let Some((scheme, authority)) = item
        .split_at_checked(separator)
        .and_then(|(scheme, rest)| Some((scheme, rest.strip_prefix(b"://")?)))
    else {
        return false;
    };
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    // A colon after the last `]` starts the port; one inside `[...]` belongs to an IPv6 host.
    let (host, port) = match crate::bytes::rsplit_once(authority, b':') {
        Some((host, port)) if !port.contains(&b']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => {
            !host.is_empty()
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    scheme_ok && host_ok && port_ok
}

impl ResponseConfig {
    /// Parses the `response` object; every error names its field.
    pub fn from_json(value: &Value) -> Result<ResponseConfig, ConfigError> {
        let object = object(value, "response")?;
        check_keys(
            object,
            "response.",
            &[
                "server_timing",
                "traceresponse",
                "link",
                "when",
                "timing_allow_origin",
            ],
        )?;
        let mut config = ResponseConfig::default();
        if let Some(value) = object.get("server_timing") {
            config.server_timing = boolean(value, "response.server_timing")?;
        }
        if let Some(value) = object.get("traceresponse") {
            config.traceresponse = boolean(value, "response.traceresponse")?;
        }
        if let Some(value) = object.get("link") {
            config.link = Some(link(value)?);
        }
        if let Some(value) = object.get("when") {
            config.when = match value {
                Value::String(when) if when == "sampled" => When::Sampled,
                Value::String(when) if when == "always" => When::Always,
                _ => {
                    return Err(error(
                        "response.when",
                        format!("must be \"sampled\" or \"always\", got {value}"),
                    ))
                }
            };
        }
        if let Some(value) = object.get("timing_allow_origin") {
            config.timing_allow_origin = Some(timing_allow_origin(value)?);
        }
        if !config.server_timing && !config.traceresponse && config.link.is_none() {
            return Err(error(
                "response",
                "adds nothing: server_timing and traceresponse are false and there is no link",
            ));
        }
        Ok(config)
    }

    /// Whether a request with this context gets anything on its response (decided on the
    /// request path, so that other responses cost nothing).
    pub fn applies(&self, ctx: &TraceContext) -> bool {
        self.when == When::Always || ctx.decision.is_sampled()
    }

    /// For the log line at start-up.
    pub fn summary(&self) -> String {
        let link = self.link.as_ref().map(|link| link.header.as_str());
        let parts = [
            (self.server_timing, "server_timing", ""),
            (self.traceresponse, "traceresponse", ""),
            (link.is_some(), "link:", link.unwrap_or_default()),
            (
                self.timing_allow_origin.is_some(),
                "timing_allow_origin",
                "",
            ),
        ];
        let mut line = String::from("[");
        for (on, name, detail) in parts {
            if on {
                if line.len() > 1 {
                    line.push(',');
                }
                line.push_str(name);
                line.push_str(detail);
            }
        }
        line.push_str(match self.when {
            When::Sampled => "] when=sampled",
            When::Always => "] when=always",
        });
        line
    }
}

/// What the upstream's response already carries, of what tracebridge would add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present {
    pub trace_metric: bool,
    pub traceresponse: bool,
    pub link: bool,
    pub timing_allow_origin: bool,
}

impl Present {
    /// Scans the response's header lines (names lower-case, as proxies hand them over).
    pub fn scan<'a>(
        lines: impl Iterator<Item = (&'a str, &'a [u8])>,
        config: &ResponseConfig,
    ) -> Present {
        let link = config.link.as_ref().map(|link| link.header.as_str());
        let mut present = Present::default();
        for (name, value) in lines {
            match name {
                SERVER_TIMING => present.trace_metric |= has_trace_metric(value),
                TRACERESPONSE => present.traceresponse = true,
                TIMING_ALLOW_ORIGIN => present.timing_allow_origin = true,
                _ if Some(name) == link => present.link = true,
                _ => {}
            }
        }
        present
    }
}

/// Whether one Server-Timing field value names a metric `trace` (ASCII case-insensitive). The
/// list splits at commas outside quoted strings (RFC 9110 lists, Fetch's "get, decode, and
/// split"); a metric's name runs to its first `;`, trimmed (W3C Server Timing, "parse a
/// server-timing header field").
pub fn has_trace_metric(value: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    let at_list_comma = |&b: &u8| {
        if in_quotes {
            match b {
                b'\\' if !escaped => escaped = true,
                b'"' if !escaped => in_quotes = false,
                _ => escaped = false,
            }
            false
        } else {
            in_quotes = b == b'"';
            b == b','
        }
    };
    value.split(at_list_comma).any(|metric| {
        let name = metric.split(|&b| b == b';').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(TRACE_METRIC)
    })
}

/// The response header lines to add for a request that was sent upstream with `sent`.
pub fn additions<'c>(
    config: &'c ResponseConfig,
    sent: &TraceContext,
    present: &Present,
) -> Vec<(&'c str, String)> {
    let mut lines = Vec::with_capacity(4);
    let traceparent = || encode_traceparent(sent);
    if config.server_timing && !present.trace_metric {
        let mut metric = String::with_capacity(10 + 55);
        // The description is a token (hex digits and "-"), so it needs no quoting.
        metric.push_str("trace;desc=");
        metric.push_str(&traceparent());
        lines.push((SERVER_TIMING, metric));
    }
    if config.traceresponse && !present.traceresponse {
        lines.push((TRACERESPONSE, traceparent()));
    }
    if let Some(link) = &config.link {
        if !present.link {
            lines.push((link.header.as_str(), link.template.render(sent)));
        }
    }
    if let Some(origins) = &config.timing_allow_origin {
        if !present.timing_allow_origin {
            lines.push((TIMING_ALLOW_ORIGIN, origins.clone()));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::context::Decision;
    use crate::ids::{SpanId, TraceId};

    /// The example of the W3C draft's "Trace Context Server Timing Metric Format"
    /// (w3c/trace-context, spec/21-http_response_header_format.md):
    /// `server-timing: trace;desc=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01`.
    const DRAFT_TRACE: u128 = 0x0af7651916cd43dd8448eb211c80319c;
    const DRAFT_CHILD: u64 = 0xb7ad6b7169203331;

    fn context(decision: Decision, random_trace_id: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::new(DRAFT_TRACE).unwrap(),
            span_id: SpanId::new(DRAFT_CHILD).unwrap(),
            decision,
            random_trace_id,
        }
    }

    fn config(json: &str) -> Result<ResponseConfig, ConfigError> {
        ResponseConfig::from_json(&serde_json::from_str(json).unwrap())
    }

    fn lines(
        config: &ResponseConfig,
        sent: &TraceContext,
        present: &Present,
    ) -> Vec<(String, String)> {
        additions(config, sent, present)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    #[test]
    fn metric_value_follows_the_w3c_draft() {
        // Flags: sampled 0x01 and random-trace-id 0x02 (W3C Trace Context Level 2, trace-flags;
        // the draft's metric uses the same bits). Debug is sampled: W3C has no debug flag.
        let cases = [
            (
                Decision::Sampled,
                false,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            (
                Decision::Sampled,
                true,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
            ),
            (
                Decision::Debug,
                false,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            (
                Decision::NotSampled,
                false,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            ),
            (
                Decision::NotSampled,
                true,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02",
            ),
        ];
        let config = config(r#"{"traceresponse": true}"#).unwrap();
        for (decision, random, want) in cases {
            let got = lines(&config, &context(decision, random), &Present::default());
            assert_eq!(
                got,
                vec![
                    ("server-timing".to_string(), format!("trace;desc={want}")),
                    ("traceresponse".to_string(), want.to_string()),
                ],
                "{decision:?} random={random}"
            );
        }
    }

    #[test]
    fn when_decides_which_requests_carry_anything() {
        let sampled = context(Decision::Sampled, true);
        let unsampled = context(Decision::NotSampled, true);
        let default = config("{}").unwrap();
        assert_eq!(default.when, When::Sampled);
        assert!(default.applies(&sampled) && default.applies(&context(Decision::Debug, false)));
        assert!(!default.applies(&unsampled));
        let always = config(r#"{"when": "always"}"#).unwrap();
        assert!(always.applies(&sampled) && always.applies(&unsampled));
    }

    #[test]
    fn defaults() {
        let config = config("{}").unwrap();
        assert_eq!(config, ResponseConfig::default());
        assert!(config.server_timing && !config.traceresponse);
        assert!(config.link.is_none() && config.timing_allow_origin.is_none());
        let sent = context(Decision::Sampled, false);
        assert_eq!(
            lines(&config, &sent, &Present::default()),
            vec![(
                "server-timing".to_string(),
                "trace;desc=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()
            )]
        );
    }

    /// Field values from the W3C Server Timing specification's examples and grammar
    /// (`server-timing-metric = metric-name *( OWS ";" OWS server-timing-param )`, values
    /// `token / quoted-string`), and the draft's "the metric name is ASCII case-insensitive".
    #[test]
    fn trace_metric_detection_table() {
        let cases: &[(&str, bool)] = &[
            ("miss, db;dur=53, app;dur=47.2", false),
            ("customView, dc;desc=atl", false),
            (r#"cache;desc="Cache Read";dur=23.2"#, false),
            ("total;dur=123.4", false),
            (
                "trace;desc=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                true,
            ),
            (
                "TRACE;desc=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                true,
            ),
            ("Trace", true),
            ("db;dur=53, trace;desc=x", true),
            ("db;dur=53,trace", true),
            ("  trace  ;desc=x", true),
            ("db;desc=\"a, trace\", app", false),
            ("db;desc=\"a \\\" , trace\"", false),
            ("db;desc=\"a \\\"\", trace", true),
            // Splunk's earlier convention is another metric.
            (
                "traceparent;desc=\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"",
                false,
            ),
            ("tracer;desc=x", false),
            ("db;trace=1", false),
            ("", false),
            (",,", false),
            ("\"trace", false),
        ];
        for &(value, want) in cases {
            assert_eq!(has_trace_metric(value.as_bytes()), want, "{value:?}");
        }
    }

    #[test]
    fn the_upstreams_own_lines_are_never_replaced() {
        let config = config(
            r#"{"traceresponse": true, "timing_allow_origin": "*",
                "link": {"header": "X-Trace-Link", "template": "https://t.example/{trace_id}"}}"#,
        )
        .unwrap();
        let upstream = [
            ("server-timing", b"db;dur=53, app;dur=47.2".as_slice()),
            (
                "server-timing",
                b"cache;desc=\"Cache Read\";dur=23.2".as_slice(),
            ),
            ("content-type", b"text/html".as_slice()),
        ];
        let present = Present::scan(upstream.into_iter(), &config);
        assert_eq!(present, Present::default());
        let sent = context(Decision::Sampled, true);
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";
        assert_eq!(
            lines(&config, &sent, &present),
            vec![
                ("server-timing".to_string(), format!("trace;desc={value}")),
                ("traceresponse".to_string(), value.to_string()),
                (
                    "x-trace-link".to_string(),
                    "https://t.example/0af7651916cd43dd8448eb211c80319c".to_string()
                ),
                ("timing-allow-origin".to_string(), "*".to_string()),
            ]
        );
        // An upstream that reports its own trace (its own span) and headers keeps them alone.
        let upstream = [
            ("server-timing", b"db;dur=53".as_slice()),
            (
                "server-timing",
                b"app;dur=4, trace;desc=00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
                    .as_slice(),
            ),
            (
                "traceresponse",
                b"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".as_slice(),
            ),
            ("x-trace-link", b"https://elsewhere.example/".as_slice()),
            ("timing-allow-origin", b"https://app.example".as_slice()),
        ];
        let present = Present::scan(upstream.into_iter(), &config);
        assert_eq!(
            present,
            Present {
                trace_metric: true,
                traceresponse: true,
                link: true,
                timing_allow_origin: true
            }
        );
        assert!(lines(&config, &sent, &present).is_empty());
    }

    #[test]
    fn link_templates() {
        let sent = context(Decision::Sampled, false);
        let cases: &[(&str, &str)] = &[
            ("https://t.example/trace/{trace_id}", "https://t.example/trace/0af7651916cd43dd8448eb211c80319c"),
            ("{trace_id}/{span_id}", "0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331"),
            // X-Ray trace id: "1-" 8 hex digits (the time) "-" 24 hex digits (AWS X-Ray
            // developer guide, "Tracing header"; 1-5759e988-bd862e3fe1be46a994272793 is the
            // example id of 5759e988bd862e3fe1be46a994272793).
            (
                "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#xray:traces/{xray_trace_id}",
                "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#xray:traces/1-0af76519-16cd43dd8448eb211c80319c",
            ),
            ("a{{b}}c{trace_id}{{", "a{b}c0af7651916cd43dd8448eb211c80319c{"),
            ("{{{trace_id}}}", "{0af7651916cd43dd8448eb211c80319c}"),
        ];
        for &(template, want) in cases {
            let compiled = Template::parse(template).unwrap();
            let got = compiled.render(&sent);
            assert_eq!(got, want, "{template}");
            assert_eq!(compiled.len, got.len(), "{template}: capacity estimate");
        }
        let xray = Template::parse("{xray_trace_id}")
            .unwrap()
            .render(&TraceContext {
                trace_id: TraceId::new(0x5759e988bd862e3fe1be46a994272793).unwrap(),
                ..sent
            });
        assert_eq!(xray, "1-5759e988-bd862e3fe1be46a994272793");
    }

    #[test]
    fn the_error_lists_every_placeholder() {
        let names: Vec<String> = Placeholder::ALL
            .iter()
            .map(|p| format!("{{{}}}", p.name()))
            .collect();
        assert_eq!(PLACEHOLDERS, names.join(", "));
    }

    #[test]
    fn response_error_table() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"[]"#, "response", "must be an object"),
            (r#"{"server_timing": false}"#, "response", "adds nothing"),
            (r#"{"servertiming": true}"#, "response.servertiming", "unknown key"),
            (r#"{"server_timing": "yes"}"#, "response.server_timing", "true or false"),
            (r#"{"traceresponse": 1}"#, "response.traceresponse", "true or false"),
            (r#"{"when": "never"}"#, "response.when", "\"sampled\" or \"always\""),
            (r#"{"when": true}"#, "response.when", "\"sampled\" or \"always\""),
            (r#"{"link": "x"}"#, "response.link", "must be an object"),
            (r#"{"link": {"template": "{trace_id}"}}"#, "response.link.header", "is required"),
            (r#"{"link": {"header": "x-l"}}"#, "response.link.template", "is required"),
            (r#"{"link": {"header": "x l", "template": "{trace_id}"}}"#, "response.link.header", "not a valid HTTP header name"),
            (r#"{"link": {"header": ":status", "template": "{trace_id}"}}"#, "response.link.header", "not a valid HTTP header name"),
            (r#"{"link": {"header": "Server-Timing", "template": "{trace_id}"}}"#, "response.link.header", "cannot carry the link"),
            (r#"{"link": {"header": "content-length", "template": "{trace_id}"}}"#, "response.link.header", "cannot carry the link"),
            (r#"{"link": {"header": "x-l", "template": "{trace_id}", "name": "a"}}"#, "response.link.name", "unknown key"),
            (r#"{"link": {"header": "x-l", "template": "https://t/{traceid}"}}"#, "response.link.template", "unknown placeholder {traceid}; expected one of: {trace_id}, {span_id}, {xray_trace_id}"),
            (r#"{"link": {"header": "x-l", "template": "https://t/{trace_id"}}"#, "response.link.template", "never closed"),
            (r#"{"link": {"header": "x-l", "template": "https://t/}{trace_id}"}}"#, "response.link.template", "closes nothing"),
            (r#"{"link": {"header": "x-l", "template": "https://t/"}}"#, "response.link.template", "no placeholder"),
            (r#"{"link": {"header": "x-l", "template": "https://t/ {trace_id}"}}"#, "response.link.template", "visible ASCII"),
            (r#"{"link": {"header": "x-l", "template": "https://t/é{trace_id}"}}"#, "response.link.template", "visible ASCII"),
            (r#"{"link": {"header": "x-l", "template": ""}}"#, "response.link.template", "must not be empty"),
            (r#"{"timing_allow_origin": ""}"#, "response.timing_allow_origin", "must not be empty"),
            (r#"{"timing_allow_origin": ["*"]}"#, "response.timing_allow_origin", "must be a string"),
            (r#"{"timing_allow_origin": "https://app.example/"}"#, "response.timing_allow_origin", "is not \"*\", \"null\" or an origin"),
            (r#"{"timing_allow_origin": "app.example"}"#, "response.timing_allow_origin", "is not"),
            (r#"{"timing_allow_origin": "https://app.example:80a"}"#, "response.timing_allow_origin", "is not"),
            (r#"{"timing_allow_origin": "https://a.example,,https://b.example"}"#, "response.timing_allow_origin", "empty item"),
            (r#"{"timing_allow_origin": "https://a.example\r\nx: y"}"#, "response.timing_allow_origin", "is not"),
        ];
        for &(input, path, problem) in cases {
            let err = config(input).unwrap_err();
            assert_eq!(err.path, path, "{input}");
            assert!(err.problem.contains(problem), "{input}: {}", err.problem);
            // The same error through the whole configuration.
            let whole = format!(r#"{{"response": {input}}}"#);
            assert_eq!(
                Config::from_json(whole.as_bytes()).unwrap_err(),
                err,
                "{input}"
            );
        }
    }

    #[test]
    fn timing_allow_origin_values() {
        // Resource Timing: `Timing-Allow-Origin = 1#( origin-or-null / wildcard )`.
        let cases: &[(&str, &str)] = &[
            ("*", "*"),
            ("null", "null"),
            ("https://app.example.com", "https://app.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            (
                "https://a.example,  https://b.example:444",
                "https://a.example, https://b.example:444",
            ),
        ];
        for &(input, want) in cases {
            let json = format!(r#"{{"timing_allow_origin": "{input}"}}"#);
            assert_eq!(
                config(&json).unwrap().timing_allow_origin.as_deref(),
                Some(want),
                "{input}"
            );
        }
    }

    #[test]
    fn whole_configuration() {
        let config = Config::from_json(
            br#"{"response": {"traceresponse": true, "when": "always", "timing_allow_origin": "*",
                 "link": {"header": "X-Trace-Link", "template": "https://grafana.example.com/explore?trace={trace_id}"}}}"#,
        )
        .unwrap();
        let response = config.response.as_ref().unwrap();
        assert_eq!(response.when, When::Always);
        assert_eq!(response.link.as_ref().unwrap().header, "x-trace-link");
        assert!(config.summary().ends_with(
            " response=[server_timing,traceresponse,link:x-trace-link,timing_allow_origin] when=always"
        ));
        assert_eq!(Config::default().response, None);
        assert!(!Config::default().summary().contains("response"));
    }
}
