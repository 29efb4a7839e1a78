//! Baggage in its three spellings: W3C `baggage` (<https://www.w3.org/TR/baggage/>), Jaeger's
//! `uberctx-<key>` and OpenTracing's `ot-baggage-<key>`. Entries from all of them are merged
//! (W3C first, then Jaeger, then OpenTracing; the first spelling of a key wins) and written in
//! each configured spelling. Baggage is opt-in, so this path may allocate.

use crate::bytes::split_once;
use crate::config::json::{check_keys, error, list, object, string, ConfigError};
use crate::headers::{
    HeaderEdit, HeaderName, RequestHeaders, JAEGER_BAGGAGE_PREFIX, OPENTRACING_BAGGAGE_PREFIX,
};
use crate::ids::trim_ows;
use serde_json::Value;

/// W3C limits: "a maximum of 180 list-members" and "a maximum of 8192 bytes".
pub const MAX_ENTRIES: usize = 180;
pub const MAX_BYTES: usize = 8192;
/// Incoming headers beyond twice the limit are hostile rather than just long.
const MAX_INPUT_BYTES: usize = 2 * MAX_BYTES;

listed_enum! {
    /// A spelling baggage is written in.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Spelling {
        /// `baggage: key=value;property,...`
        W3c,
        /// `uberctx-<key>: value`
        Jaeger,
        /// `ot-baggage-<key>: value`
        OpenTracing,
    }
}

impl Spelling {
    pub fn name(self) -> &'static str {
        match self {
            Spelling::W3c => "w3c",
            Spelling::Jaeger => "jaeger",
            Spelling::OpenTracing => "opentracing",
        }
    }

    pub fn from_name(name: &str) -> Option<Spelling> {
        Spelling::ALL.into_iter().find(|s| s.name() == name)
    }

    fn prefix(self) -> Option<&'static str> {
        match self {
            Spelling::W3c => None,
            Spelling::Jaeger => Some(JAEGER_BAGGAGE_PREFIX),
            Spelling::OpenTracing => Some(OPENTRACING_BAGGAGE_PREFIX),
        }
    }
}

/// Baggage is opt-in: `"baggage"` in `extract` reads it, in `inject` writes it; the `baggage`
/// section says how.
#[derive(Clone, Debug, PartialEq)]
pub struct BaggageConfig {
    pub extract: bool,
    pub inject: bool,
    /// `baggage.spellings`: the spellings written when injecting.
    pub spellings: Vec<Spelling>,
}

impl Default for BaggageConfig {
    fn default() -> Self {
        BaggageConfig {
            extract: false,
            inject: false,
            spellings: Spelling::ALL.to_vec(),
        }
    }
}

impl BaggageConfig {
    /// Reads the `baggage` section (whether baggage is read and written comes from the format
    /// lists).
    pub fn parse_section(&mut self, value: &Value) -> Result<(), ConfigError> {
        let object = object(value, "baggage")?;
        check_keys(object, "baggage.", &["spellings"])?;
        if let Some(value) = object.get("spellings") {
            let mut spellings = Vec::new();
            for (i, item) in list(value, "baggage.spellings")?.iter().enumerate() {
                let path = format!("baggage.spellings[{i}]");
                let name = string(item, &path)?;
                let Some(spelling) = Spelling::from_name(name) else {
                    let known: Vec<&str> = Spelling::ALL.iter().map(|s| s.name()).collect();
                    return Err(error(
                        path,
                        format!(
                            "unknown spelling \"{name}\"; expected one of: {}",
                            known.join(", ")
                        ),
                    ));
                };
                if spellings.contains(&spelling) {
                    return Err(error(path, format!("spelling \"{name}\" is listed twice")));
                }
                spellings.push(spelling);
            }
            self.spellings = spellings;
        }
        Ok(())
    }
}

/// One baggage entry, with its value decoded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// W3C properties (`;k=v;flag`) as they came; only the W3C spelling can carry them.
    pub properties: String,
}

/// What was read, for the metrics.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct BaggageReport {
    /// A W3C `baggage` header broke the grammar (its entries were ignored), or a
    /// `uberctx-`/`ot-baggage-` header was not text (that entry was ignored).
    pub invalid: bool,
    /// Entries were dropped to stay within the W3C limits.
    pub truncated: bool,
    pub entries: usize,
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `baggage-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn hex_value(b: u8) -> Option<u8> {
    crate::ids::parse_hex(&[b], crate::ids::HexCase::Any).map(|v| v as u8)
}

/// Percent-decodes; invalid UTF-8 becomes U+FFFD as W3C requires. `None` for a broken `%`.
fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut bytes = bytes.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let high = hex_value(*bytes.next()?)?;
            let low = hex_value(*bytes.next()?)?;
            out.push(high << 4 | low);
        } else {
            out.push(b);
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Percent-encodes everything but baggage octets; `+` too, since URL decoders (Jaeger's among
/// them) read it as a space. Upper-case hex, as RFC 3986 recommends.
fn percent_encode(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if is_baggage_octet(b) && b != b'%' && b != b'+' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(upper_hex_digit(b >> 4));
            out.push(upper_hex_digit(b & 0xf));
        }
    }
}

/// The upper-case hex digit of `nibble` (0 to 15).
fn upper_hex_digit(nibble: u8) -> char {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    HEX.get(usize::from(nibble))
        .map_or('0', |&digit| char::from(digit))
}

/// Keys are compared without case: the header spellings carry them in header names, which are
/// case-insensitive, so `Tenant` and `tenant` would otherwise collide there.
fn contains_key(entries: &[Entry], key: &[u8]) -> bool {
    entries
        .iter()
        .any(|e| e.key.as_bytes().eq_ignore_ascii_case(key))
}

/// Parses the W3C list across its lines; `None` when any member breaks the grammar.
pub fn parse_w3c(lines: &[&[u8]]) -> Option<Vec<Entry>> {
    let total: usize = lines.iter().map(|line| line.len()).sum();
    if total > MAX_INPUT_BYTES {
        return None;
    }
    let mut entries = Vec::new();
    for member in lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(trim_ows)
    {
        if member.is_empty() {
            continue;
        }
        // The properties keep their leading `;`.
        let (pair, properties) = match member.iter().position(|&b| b == b';') {
            Some(semi) => member.split_at_checked(semi)?,
            None => (member, &b""[..]),
        };
        let (key, value) = split_once(pair, b'=')?;
        let (key, value) = (trim_ows(key), trim_ows(value));
        if !is_token(key) || !value.iter().all(|&b| is_baggage_octet(b)) {
            return None;
        }
        let properties_ok = properties
            .split(|&b| b == b';')
            .skip(1)
            .all(|p| p.iter().all(|&b| (0x20..=0x7e).contains(&b)) && !trim_ows(p).is_empty());
        if !properties_ok {
            return None;
        }
        let value = percent_decode(value)?;
        // A key repeated within the list: the first one wins, as across spellings.
        if !contains_key(&entries, key) {
            entries.push(Entry {
                // Tokens are ASCII.
                key: String::from_utf8_lossy(key).into_owned(),
                value,
                properties: String::from_utf8_lossy(properties).into_owned(),
            });
        }
    }
    Some(entries)
}

/// Reads and merges every spelling.
pub fn extract(headers: &RequestHeaders, report: &mut BaggageReport) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    if headers.contains(HeaderName::Baggage) {
        match headers.baggage_lines().and_then(parse_w3c) {
            Some(w3c) => entries = w3c,
            None => report.invalid = true,
        }
    }
    let (prefixed, dropped) = headers.prefixed_baggage();
    report.truncated |= dropped > 0;
    for spelling in [Spelling::Jaeger, Spelling::OpenTracing] {
        let prefix = spelling.prefix().unwrap_or_default();
        for (name, value) in prefixed {
            let Some(key) = name.strip_prefix(prefix) else {
                continue;
            };
            let usable =
                is_token(key.as_bytes()) && value.iter().all(|&b| (0x20..=0x7e).contains(&b));
            if !usable {
                report.invalid = true;
                continue;
            }
            if contains_key(&entries, key.as_bytes()) {
                continue;
            }
            // Jaeger and OpenTracing clients URL-encode values; a stray `%` is taken literally.
            let value = percent_decode(value)
                .unwrap_or_else(|| String::from_utf8_lossy(value).into_owned());
            entries.push(Entry {
                key: key.to_string(),
                value,
                properties: String::new(),
            });
        }
    }
    report.truncated |= enforce_limits(&mut entries);
    report.entries = entries.len();
    entries
}

/// Drops entries from the end until the W3C encoding fits the limits; `true` if any went.
fn enforce_limits(entries: &mut Vec<Entry>) -> bool {
    let before = entries.len();
    entries.truncate(MAX_ENTRIES);
    while entries.len() > 1 && encode_w3c(entries).len() > MAX_BYTES {
        entries.pop();
    }
    if encode_w3c(entries).len() > MAX_BYTES {
        entries.clear();
    }
    entries.len() != before
}

pub fn encode_w3c(entries: &[Entry]) -> String {
    let mut out = String::new();
    for entry in entries {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&entry.key);
        out.push('=');
        percent_encode(&entry.value, &mut out);
        out.push_str(&entry.properties);
    }
    out
}

fn encoded_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    percent_encode(value, &mut out);
    out
}

/// Writes `entries` in each of `spellings`, replacing what differs and removing entries of
/// those spellings that are not in the merged set.
pub fn inject(
    entries: &[Entry],
    spellings: &[Spelling],
    headers: &RequestHeaders,
    edits: &mut Vec<HeaderEdit>,
) {
    for &spelling in spellings {
        match spelling.prefix() {
            None => {
                let value = encode_w3c(entries);
                let unchanged = headers.count(HeaderName::Baggage) == 1
                    && headers.get(HeaderName::Baggage) == Some(value.as_bytes());
                if value.is_empty() {
                    if headers.contains(HeaderName::Baggage) {
                        edits.push(HeaderEdit::Remove(HeaderName::Baggage));
                    }
                } else if !unchanged {
                    edits.push(HeaderEdit::Set(HeaderName::Baggage, value));
                }
            }
            Some(prefix) => {
                let (present, _) = headers.prefixed_baggage();
                for (name, _) in present.iter().filter(|(name, _)| name.starts_with(prefix)) {
                    let key = &name[prefix.len()..];
                    if !entries.iter().any(|e| e.key.eq_ignore_ascii_case(key)) {
                        edits.push(HeaderEdit::RemoveCustom(name.to_string()));
                    }
                }
                for entry in entries {
                    let name = format!("{prefix}{}", entry.key.to_ascii_lowercase());
                    let value = encoded_value(&entry.value);
                    let current = present.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                    if current != Some(value.as_bytes()) {
                        edits.push(HeaderEdit::SetCustom(name, value));
                    }
                }
            }
        }
    }
}

/// Every baggage header of every spelling, for callers whose baggage must not travel.
pub fn remove_all(headers: &RequestHeaders, edits: &mut Vec<HeaderEdit>) {
    if headers.contains(HeaderName::Baggage) {
        edits.push(HeaderEdit::Remove(HeaderName::Baggage));
    }
    let (present, _) = headers.prefixed_baggage();
    for (name, _) in present {
        edits.push(HeaderEdit::RemoveCustom(name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, properties: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            properties: properties.into(),
        }
    }

    #[test]
    fn w3c_parse_table() {
        // Examples from the W3C Baggage specification.
        let cases: Vec<(Vec<&str>, Option<Vec<Entry>>)> = vec![
            (vec!["key1=value1,key2=value2"], Some(vec![entry("key1", "value1", ""), entry("key2", "value2", "")])),
            (vec!["key1 = value1, key2 = value2"], Some(vec![entry("key1", "value1", ""), entry("key2", "value2", "")])),
            (vec!["key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"], Some(vec![
                entry("key1", "value1", ";property1;property2"),
                entry("key2", "value2", ""),
                entry("key3", "value3", "; propertyKey=propertyValue"),
            ])),
            (vec!["userId=alice", "serverNode=DF%2028"], Some(vec![entry("userId", "alice", ""), entry("serverNode", "DF 28", "")])),
            (vec!["isProduction=false,,"], Some(vec![entry("isProduction", "false", "")])),
            (vec!["k=%E2%9C%93"], Some(vec![entry("k", "\u{2713}", "")])),
            (vec!["k=%FF"], Some(vec![entry("k", "\u{fffd}", "")])),
            (vec!["k="], Some(vec![entry("k", "", "")])),
            (vec!["k"], None),
            (vec!["k=a b"], None),
            (vec!["k=a\"b"], None),
            (vec!["k=%zz"], None),
            (vec!["k=%4"], None),
            (vec!["k y=v"], None),
            (vec!["=v"], None),
            (vec!["k=v;"], None),
            (vec!["k=\u{e9}"], None),
        ];
        for (lines, want) in cases {
            let bytes: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            assert_eq!(parse_w3c(&bytes), want, "{lines:?}");
        }
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> RequestHeaders<'a> {
        RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    #[test]
    fn spellings_merge_with_w3c_first() {
        let pairs = [
            ("uberctx-tenant", "jaeger-tenant"),
            ("baggage", "tenant=acme,region=eu%2Dwest"),
            ("ot-baggage-user", "bob%40example.com"),
            ("uberctx-plan", "gold"),
            ("ot-baggage-plan", "silver"),
        ];
        let mut report = BaggageReport::default();
        let entries = extract(&headers(&pairs), &mut report);
        assert_eq!(
            entries,
            vec![
                entry("tenant", "acme", ""),
                entry("region", "eu-west", ""),
                entry("plan", "gold", ""),
                entry("user", "bob@example.com", ""),
            ]
        );
        assert_eq!(
            report,
            BaggageReport {
                invalid: false,
                truncated: false,
                entries: 4
            }
        );
    }

    #[test]
    fn invalid_w3c_header_is_counted_and_other_spellings_still_count() {
        let pairs = [("baggage", "not a list"), ("uberctx-k", "v")];
        let mut report = BaggageReport::default();
        assert_eq!(
            extract(&headers(&pairs), &mut report),
            vec![entry("k", "v", "")]
        );
        assert!(report.invalid);
    }

    #[test]
    fn limits_drop_entries_from_the_end() {
        let many: String = (0..200)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let pairs = [("baggage", many.as_str())];
        let mut report = BaggageReport::default();
        let entries = extract(&headers(&pairs), &mut report);
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries.last().map(|e| e.key.as_str()), Some("k179"));
        assert!(report.truncated);

        let big = format!("a={},b={}", "x".repeat(5000), "y".repeat(5000));
        let pairs = [("baggage", big.as_str())];
        let mut report = BaggageReport::default();
        let entries = extract(&headers(&pairs), &mut report);
        assert_eq!(
            entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert!(report.truncated);
    }

    #[test]
    fn encodes_each_spelling() {
        let entries = vec![
            entry("Tenant", "acme corp+1", ";ttl=30"),
            entry("plan", "gold", ""),
        ];
        let pairs = [("uberctx-stale", "x"), ("uberctx-plan", "gold")];
        let mut edits = Vec::new();
        inject(&entries, &Spelling::ALL, &headers(&pairs), &mut edits);
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Set(
                    HeaderName::Baggage,
                    "Tenant=acme%20corp%2B1;ttl=30,plan=gold".into()
                ),
                HeaderEdit::RemoveCustom("uberctx-stale".into()),
                HeaderEdit::SetCustom("uberctx-tenant".into(), "acme%20corp%2B1".into()),
                HeaderEdit::SetCustom("ot-baggage-tenant".into(), "acme%20corp%2B1".into()),
                HeaderEdit::SetCustom("ot-baggage-plan".into(), "gold".into()),
            ]
        );
    }

    /// Problems in the `baggage` section, named by their field path.
    #[test]
    fn configuration_errors_name_the_field() {
        crate::config::tests::assert_errors(&[
            (
                r#"{"baggage": {"spellings": ["zipkin"]}}"#,
                "baggage.spellings[0]",
                "unknown spelling",
            ),
            (
                r#"{"baggage": {"spellings": ["w3c", "w3c"]}}"#,
                "baggage.spellings[1]",
                "listed twice",
            ),
            (
                r#"{"baggage": {"limit": 3}}"#,
                "baggage.limit",
                "unknown key",
            ),
            (r#"{"baggage": []}"#, "baggage", "must be an object"),
        ]);
    }
}
