//! Baggage in its three spellings: W3C `baggage` (<https://www.w3.org/TR/baggage/>), Jaeger's
//! `uberctx-<key>` and OpenTracing's `ot-baggage-<key>`. Entries from all of them are merged
//! (W3C first, then Jaeger, then OpenTracing; the first spelling of a key wins) and written in
//! each configured spelling. Baggage is opt-in, so this path may allocate.

use crate::bytes::split_once;
use crate::config::json::{check_keys, error, list, object, positive_integer, string, ConfigError};
use crate::headers::{
    HeaderEdit, HeaderName, RequestHeaders, JAEGER_BAGGAGE_PREFIX, MAX_PREFIXED_BAGGAGE,
    OPENTRACING_BAGGAGE_PREFIX,
};
use crate::ids::trim_ows;
use serde_json::Value;

/// W3C limits: "a maximum of 180 list-members" and "a maximum of 8192 bytes".
pub const MAX_ENTRIES: usize = 180;
pub const MAX_BYTES: usize = 8192;
/// Incoming headers beyond twice the limit are hostile rather than just long.
const MAX_INPUT_BYTES: usize = 2 * MAX_BYTES;
/// `baggage.max_headers`: the most `uberctx-`/`ot-baggage-` headers a request leaves with.
/// Python's `http.server` answers 431 to a request of more than 100 header lines, and Envoy and
/// the trace formats add a dozen or two of their own.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// `baggage.max_header_bytes`: their total size (names and values). Node's default limit for a
/// whole request head is 16 KiB, and the W3C `baggage` header alone may take 8 KiB of it.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 4096;

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
    /// `baggage.max_headers`: the most headers of the key-in-the-name spellings written.
    pub max_headers: usize,
    /// `baggage.max_header_bytes`: their total size, names and values.
    pub max_header_bytes: usize,
}

impl Default for BaggageConfig {
    fn default() -> Self {
        BaggageConfig {
            extract: false,
            inject: false,
            spellings: Spelling::ALL.to_vec(),
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

impl BaggageConfig {
    /// Reads the `baggage` section (whether baggage is read and written comes from the format
    /// lists).
    pub fn parse_section(&mut self, value: &Value) -> Result<(), ConfigError> {
        let object = object(value, "baggage")?;
        check_keys(
            object,
            "baggage.",
            &["spellings", "max_headers", "max_header_bytes"],
        )?;
        if let Some(value) = object.get("max_headers") {
            self.max_headers = limit(value, "baggage.max_headers")?;
        }
        if let Some(value) = object.get("max_header_bytes") {
            self.max_header_bytes = limit(value, "baggage.max_header_bytes")?;
        }
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

/// A limit of the configuration: a whole number from 1 to what a request could ever need.
fn limit(value: &Value, path: &str) -> Result<usize, ConfigError> {
    // More than 2 x 180 headers or 64 KiB would disable the bound rather than set one.
    const CEILING: u64 = 65_536;
    let n = positive_integer(value, path)?;
    if n > CEILING {
        return Err(error(path, format!("must be at most {CEILING}, got {n}")));
    }
    usize::try_from(n).map_err(|_| error(path, format!("must be at most {CEILING}, got {n}")))
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
    /// Entries were left out of the `uberctx-`/`ot-baggage-` spellings to stay within
    /// `baggage.max_headers` and `baggage.max_header_bytes` (they still travel in `baggage`).
    pub headers_limited: bool,
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

/// Bytes [`percent_encode`] writes for `value`.
fn encoded_len(value: &str) -> usize {
    value.bytes().fold(0usize, |len, b| {
        let width = if is_baggage_octet(b) && b != b'%' && b != b'+' {
            1
        } else {
            3
        };
        len.saturating_add(width)
    })
}

/// The upper-case hex digit of `nibble` (0 to 15).
fn upper_hex_digit(nibble: u8) -> char {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    HEX.get(usize::from(nibble))
        .map_or('0', |&digit| char::from(digit))
}

/// A set of keys compared without case (the header spellings carry keys in header names, which
/// are case-insensitive, so `Tenant` and `tenant` would otherwise collide there): a hash table
/// of indexes into the caller's list, so that each look-up costs the same however many keys
/// there are. Open addressing; [`SLOTS`] is at least twice the most keys ever inserted
/// ([`MAX_PREFIXED_BAGGAGE`] header names, or [`MAX_ENTRIES`] entries), so probes stay short
/// and a free slot always exists.
struct KeyIndex {
    /// Index + 1 of the key in the caller's list; 0 is a free slot.
    slots: [u16; SLOTS],
}

const SLOTS: usize = 512;
const _: () = assert!(2 * MAX_PREFIXED_BAGGAGE <= SLOTS && 2 * MAX_ENTRIES <= SLOTS);

impl KeyIndex {
    fn new() -> Self {
        KeyIndex { slots: [0; SLOTS] }
    }

    /// FNV-1a of the lower-cased key, reduced to a slot.
    fn start(key: &[u8]) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            hash ^= u64::from(b.to_ascii_lowercase());
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The low bits of the hash: below SLOTS, a power of two.
        (hash as usize) & (SLOTS - 1)
    }

    /// The slot holding `key`, or the free slot where it would go. `key_of` gives the key at an
    /// index of the caller's list.
    fn probe<'k>(&self, key: &[u8], key_of: impl Fn(usize) -> &'k [u8]) -> (usize, Option<usize>) {
        let mut slot = Self::start(key);
        // At most SLOTS probes: the table is never full, so a free slot ends the loop first.
        for _ in 0..SLOTS {
            match self.slots.get(slot).copied() {
                None | Some(0) => return (slot, None),
                Some(stored) => {
                    let index = usize::from(stored).saturating_sub(1);
                    if key_of(index).eq_ignore_ascii_case(key) {
                        return (slot, Some(index));
                    }
                }
            }
            slot = slot.wrapping_add(1) & (SLOTS - 1);
        }
        (slot, None)
    }

    fn find<'k>(&self, key: &[u8], key_of: impl Fn(usize) -> &'k [u8]) -> Option<usize> {
        self.probe(key, key_of).1
    }

    /// Records `key` at `index` of the caller's list unless a key equal to it is there already;
    /// `false` if it was.
    fn insert<'k>(&mut self, key: &[u8], index: usize, key_of: impl Fn(usize) -> &'k [u8]) -> bool {
        let (slot, found) = self.probe(key, key_of);
        if found.is_some() {
            return false;
        }
        if let (Some(free), Ok(stored)) = (self.slots.get_mut(slot), u16::try_from(index)) {
            *free = stored.saturating_add(1);
        }
        true
    }
}

/// The entries of every spelling merged within W3C's limits, built in one pass: reading stops
/// at the limit instead of collecting everything and cutting afterwards.
struct Merged {
    entries: Vec<Entry>,
    keys: KeyIndex,
    /// Bytes of the W3C encoding of `entries`.
    encoded: usize,
    /// A limit was reached: no further key is taken.
    full: bool,
    /// Entries were left out because of a limit.
    truncated: bool,
}

impl Merged {
    fn new() -> Self {
        Merged {
            entries: Vec::new(),
            keys: KeyIndex::new(),
            encoded: 0,
            full: false,
            truncated: false,
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        let entries = &self.entries;
        self.keys
            .find(key, |i| entries.get(i).map_or(&[], |e| e.key.as_bytes()))
            .is_some()
    }

    /// Adds `entry` unless its key is known (the first spelling of a key wins) or a limit has
    /// been reached. An entry that would take the list over [`MAX_BYTES`] ends it, so what is
    /// kept is the longest leading part that fits, as dropping from the end would keep.
    fn push(&mut self, entry: Entry) {
        if self.contains(entry.key.as_bytes()) {
            return;
        }
        if self.full {
            self.truncated = true;
            return;
        }
        let separator = usize::from(!self.entries.is_empty());
        let size = entry
            .key
            .len()
            .saturating_add(1)
            .saturating_add(encoded_len(&entry.value))
            .saturating_add(entry.properties.len())
            .saturating_add(separator);
        let encoded = self.encoded.saturating_add(size);
        if encoded > MAX_BYTES {
            self.full = true;
            self.truncated = true;
            return;
        }
        let index = self.entries.len();
        let entries = &self.entries;
        self.keys.insert(entry.key.as_bytes(), index, |i| {
            entries.get(i).map_or(&[], |e| e.key.as_bytes())
        });
        self.entries.push(entry);
        self.encoded = encoded;
        self.full = self.entries.len() >= MAX_ENTRIES;
    }
}

/// Whether every `%` starts a `%XX` escape (what [`percent_decode`] accepts), without decoding.
fn percent_escapes_valid(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let Some((escape, after)) = rest.get(at..).and_then(|r| r.split_first_chunk::<3>()) else {
            return false;
        };
        if hex_value(escape[1]).is_none() || hex_value(escape[2]).is_none() {
            return false;
        }
        rest = after;
    }
    true
}

/// Parses the W3C list across its lines; `None` when any member breaks the grammar.
/// Reading stops at W3C's limits: members after the 180th entry (or after the entry that would
/// take the list over 8,192 bytes) are neither read nor checked.
pub fn parse_w3c(lines: &[&[u8]]) -> Option<Vec<Entry>> {
    let mut merged = Merged::new();
    parse_w3c_into(lines, &mut merged)?;
    Some(merged.entries)
}

fn parse_w3c_into(lines: &[&[u8]], merged: &mut Merged) -> Option<()> {
    let total: usize = lines.iter().map(|line| line.len()).sum();
    if total > MAX_INPUT_BYTES {
        return None;
    }
    for member in lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(trim_ows)
    {
        if member.is_empty() {
            continue;
        }
        if merged.full {
            merged.truncated = true;
            break;
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
        if !properties_ok || !percent_escapes_valid(value) {
            return None;
        }
        // A key repeated within the list: the first one wins, as across spellings (checked
        // before decoding, so repeats cost no allocation).
        if merged.contains(key) {
            continue;
        }
        merged.push(Entry {
            // Tokens are ASCII.
            key: String::from_utf8_lossy(key).into_owned(),
            value: percent_decode(value)?,
            properties: String::from_utf8_lossy(properties).into_owned(),
        });
    }
    Some(())
}

/// Reads and merges every spelling, stopping at W3C's limits.
pub fn extract(headers: &RequestHeaders, report: &mut BaggageReport) -> Vec<Entry> {
    let mut merged = Merged::new();
    if headers.contains(HeaderName::Baggage) {
        let parsed = headers
            .baggage_lines()
            .and_then(|lines| parse_w3c_into(lines, &mut merged));
        if parsed.is_none() {
            // A broken list contributes nothing, not even the entries before the break.
            merged = Merged::new();
            report.invalid = true;
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
            if merged.contains(key.as_bytes()) {
                continue;
            }
            if merged.full {
                merged.truncated = true;
                continue;
            }
            // Jaeger and OpenTracing clients URL-encode values; a stray `%` is taken literally.
            let value = percent_decode(value)
                .unwrap_or_else(|| String::from_utf8_lossy(value).into_owned());
            merged.push(Entry {
                key: key.to_string(),
                value,
                properties: String::new(),
            });
        }
    }
    report.truncated |= merged.truncated;
    report.entries = merged.entries.len();
    merged.entries
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

/// Writes `entries` in each configured spelling, replacing what differs and removing headers of
/// those spellings that are not in the merged set. The key-in-the-name spellings carry only the
/// leading entries that fit `max_headers` and `max_header_bytes` (all such spellings together),
/// so a request never leaves with hundreds more header lines than it came with; every entry
/// still travels in `baggage`. Returns whether entries were left out of them for that.
pub fn inject(
    entries: &[Entry],
    config: &BaggageConfig,
    headers: &RequestHeaders,
    edits: &mut Vec<HeaderEdit>,
) -> bool {
    // Not collected: a request without baggage allocates nothing here.
    let prefixes = || config.spellings.iter().filter_map(|s| s.prefix());
    if config.spellings.contains(&Spelling::W3c) {
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
    let (present, _) = headers.prefixed_baggage();
    if prefixes().next().is_none() || (entries.is_empty() && present.is_empty()) {
        return false;
    }
    let written = within_header_limits(entries, prefixes(), config);
    // The headers present and the entries written, indexed by name and key.
    let mut present_names = KeyIndex::new();
    for (i, (name, _)) in present.iter().enumerate() {
        present_names.insert(name.as_bytes(), i, |i| {
            present.get(i).map_or(&[], |(n, _)| n.as_bytes())
        });
    }
    let mut written_keys = KeyIndex::new();
    for (i, entry) in written.iter().enumerate() {
        written_keys.insert(entry.key.as_bytes(), i, |i| {
            written.get(i).map_or(&[], |e| e.key.as_bytes())
        });
    }
    for prefix in prefixes() {
        for (name, _) in present {
            let Some(key) = name.strip_prefix(prefix) else {
                continue;
            };
            let kept = written_keys
                .find(key.as_bytes(), |i| {
                    written.get(i).map_or(&[], |e| e.key.as_bytes())
                })
                .is_some();
            if !kept {
                edits.push(HeaderEdit::RemoveCustom(name.to_string()));
            }
        }
        for entry in written {
            let name = format!("{prefix}{}", entry.key.to_ascii_lowercase());
            let value = encoded_value(&entry.value);
            let current = present_names
                .find(name.as_bytes(), |i| {
                    present.get(i).map_or(&[], |(n, _)| n.as_bytes())
                })
                .and_then(|i| present.get(i))
                .map(|(_, v)| *v);
            if current != Some(value.as_bytes()) {
                edits.push(HeaderEdit::SetCustom(name, value));
            }
        }
    }
    written.len() < entries.len()
}

/// The leading entries whose headers in every one of `prefixes` stay within
/// `config.max_headers` lines and `config.max_header_bytes` bytes (names and values).
fn within_header_limits<'e, 'p>(
    entries: &'e [Entry],
    prefixes: impl Iterator<Item = &'p str>,
    config: &BaggageConfig,
) -> &'e [Entry] {
    // Each entry takes one line per prefix, of the prefix, its key and its encoded value.
    let (per_entry, prefix_bytes) = prefixes.fold((0usize, 0usize), |(n, bytes), prefix| {
        (n.saturating_add(1), bytes.saturating_add(prefix.len()))
    });
    let (mut lines, mut bytes) = (0usize, 0usize);
    let fitting = entries
        .iter()
        .take_while(|entry| {
            let own = entry.key.len().saturating_add(encoded_len(&entry.value));
            lines = lines.saturating_add(per_entry);
            bytes = bytes
                .saturating_add(prefix_bytes)
                .saturating_add(own.saturating_mul(per_entry));
            lines <= config.max_headers && bytes <= config.max_header_bytes
        })
        .count();
    entries.get(..fitting).unwrap_or_default()
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
            // A repeated key is still checked against the grammar, escapes included.
            (vec!["k=1,k=%zz"], None),
            (vec!["k=1,K=2"], Some(vec![entry("k", "1", "")])),
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
                headers_limited: false,
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

    /// W3C Baggage, "Limits": at most 180 list-members and 8192 bytes. Reading stops there:
    /// what follows the 180th entry is not read (so not checked either), and thousands of
    /// repeats of one key cost one entry.
    #[test]
    fn reading_stops_at_the_limits() {
        let full: String = (0..MAX_ENTRIES)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let past = format!("{full},k180=v,not a member");
        let pairs = [("baggage", past.as_str()), ("uberctx-late", "x")];
        let mut report = BaggageReport::default();
        let entries = extract(&headers(&pairs), &mut report);
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries.last().map(|e| e.key.as_str()), Some("k179"));
        assert!(report.truncated && !report.invalid);

        let exactly = [("baggage", full.as_str())];
        let mut report = BaggageReport::default();
        assert_eq!(extract(&headers(&exactly), &mut report).len(), MAX_ENTRIES);
        assert!(!report.truncated);

        let repeats = vec!["a=1"; 4000].join(",");
        assert_eq!(
            parse_w3c(&[repeats.as_bytes()]),
            Some(vec![entry("a", "1", "")])
        );

        // 8192 bytes exactly fit; one more byte does not (the entry is left out whole).
        let fits = format!("a={},b=1", "x".repeat(MAX_BYTES - 6));
        assert_eq!(
            encode_w3c(&parse_w3c(&[fits.as_bytes()]).unwrap()).len(),
            MAX_BYTES
        );
        let over = format!("a={},b=12", "x".repeat(MAX_BYTES - 6));
        assert_eq!(parse_w3c(&[over.as_bytes()]).unwrap().len(), 1);
    }

    /// README, Baggage: the `uberctx-`/`ot-baggage-` headers a request leaves with are at most
    /// `baggage.max_headers` lines of at most `baggage.max_header_bytes` bytes together, the
    /// leading entries of the merged list; `baggage` still carries every entry.
    #[test]
    fn key_in_name_spellings_stay_within_the_header_limits() {
        let many: String = (0..MAX_ENTRIES)
            .map(|i| format!("key{i:03}=value"))
            .collect::<Vec<_>>()
            .join(",");
        // Sent by the caller beyond what fits: removed, so the bound holds for what leaves.
        let pairs = [("baggage", many.as_str()), ("uberctx-key179", "value")];
        let view = headers(&pairs);
        let mut report = BaggageReport::default();
        let entries = extract(&view, &mut report);
        assert_eq!(entries.len(), MAX_ENTRIES);
        let leaving = |config: &BaggageConfig| {
            let mut edits = Vec::new();
            let limited = inject(&entries, config, &view, &mut edits);
            let set: Vec<(String, String)> = edits
                .iter()
                .filter_map(|edit| match edit {
                    HeaderEdit::SetCustom(name, value) => Some((name.clone(), value.clone())),
                    _ => None,
                })
                .collect();
            let removed = edits.contains(&HeaderEdit::RemoveCustom("uberctx-key179".into()));
            (limited, set, removed)
        };
        // Defaults: 64 lines, 4096 bytes. Each entry is two lines ("uberctx-key000: value",
        // 14 + 5 bytes, and "ot-baggage-key000: value", 17 + 5 bytes): 41 bytes an entry, so
        // the line limit binds first: 32 entries, 1312 bytes.
        let (limited, set, removed) = leaving(&BaggageConfig::default());
        assert!(limited && removed);
        assert_eq!(set.len(), DEFAULT_MAX_HEADERS);
        assert_eq!(set.first().map(|(n, _)| n.as_str()), Some("uberctx-key000"));
        assert_eq!(
            set.last().map(|(n, _)| n.as_str()),
            Some("ot-baggage-key031")
        );
        let bytes: usize = set.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert_eq!(bytes, 32 * 41);
        // A byte limit of 100 fits two entries (82 bytes), not three (123).
        let config = BaggageConfig {
            max_header_bytes: 100,
            ..BaggageConfig::default()
        };
        let (limited, set, _) = leaving(&config);
        assert!(limited);
        assert_eq!(set.len(), 4);
        // Room for everything: nothing is limited, the caller's header is kept as it came.
        let config = BaggageConfig {
            max_headers: 2 * MAX_ENTRIES,
            max_header_bytes: 65_536,
            ..BaggageConfig::default()
        };
        let (limited, set, removed) = leaving(&config);
        assert!(!limited && !removed);
        assert_eq!(set.len(), 2 * MAX_ENTRIES - 1);
        // `baggage` alone adds no such header (and leaves the caller's, a spelling not written).
        let config = BaggageConfig {
            spellings: vec![Spelling::W3c],
            max_headers: 1,
            ..BaggageConfig::default()
        };
        assert_eq!(leaving(&config), (false, vec![], false));
    }

    #[test]
    fn encodes_each_spelling() {
        let entries = vec![
            entry("Tenant", "acme corp+1", ";ttl=30"),
            entry("plan", "gold", ""),
        ];
        let pairs = [("uberctx-stale", "x"), ("uberctx-plan", "gold")];
        let mut edits = Vec::new();
        let limited = inject(
            &entries,
            &BaggageConfig::default(),
            &headers(&pairs),
            &mut edits,
        );
        assert!(!limited);
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
            (
                r#"{"baggage": {"max_headers": 0}}"#,
                "baggage.max_headers",
                "at least 1",
            ),
            (
                r#"{"baggage": {"max_header_bytes": 100000}}"#,
                "baggage.max_header_bytes",
                "at most 65536",
            ),
        ]);
    }
}
