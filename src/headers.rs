//! A borrowed, allocation-free view of the request headers the filter cares about, and the
//! edits it asks the host to make.

use crate::ids::trim_ows;

/// Every header name the filter knows, generated with [`crate::formats::Format`] from the format
/// registry (each format's headers, then the request headers the filter reads itself).
pub use crate::formats::HeaderName;

/// `tracestate` and `baggage` may arrive on several lines that form one list; more lines than
/// this make the header invalid (a valid `tracestate` has at most 32 members).
pub const MAX_TRACESTATE_LINES: usize = 32;
/// W3C allows 180 baggage entries; one per line is the most lines a valid list needs.
pub const MAX_BAGGAGE_LINES: usize = 180;

/// Which optional parts of the request a view records (each costs time on every request).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scan<'c> {
    /// Header names the configuration asks about (rule conditions, the force header).
    pub custom: &'c [String],
    /// Baggage lines and `uberctx-*`/`ot-baggage-*` headers (kept on the heap: opt-in).
    pub baggage: bool,
}

/// Baggage headers with the key in the name (`uberctx-<key>`, `ot-baggage-<key>`) a request view
/// keeps: room for W3C's 180 entries in either spelling with duplicates; beyond that they are
/// not seen (and counted as truncated by the baggage code).
pub const MAX_PREFIXED_BAGGAGE: usize = 256;
pub const JAEGER_BAGGAGE_PREFIX: &str = "uberctx-";
pub const OPENTRACING_BAGGAGE_PREFIX: &str = "ot-baggage-";

/// How many configured header names (rule conditions, the force header) a request view tracks.
pub const MAX_CUSTOM_HEADERS: usize = 16;

/// The trace headers of one request, borrowed from the host's header map, plus the first value
/// of each header name the configuration asks about.
#[derive(Debug)]
pub struct RequestHeaders<'a> {
    first: [Option<&'a [u8]>; HeaderName::COUNT],
    count: [u16; HeaderName::COUNT],
    tracestate_lines: [&'a [u8]; MAX_TRACESTATE_LINES],
    // Baggage is opt-in and unbounded in shape, so it lives on the heap rather than in fixed
    // arrays that every request would pay to zero and move.
    baggage_lines: Vec<&'a [u8]>,
    prefixed_baggage: Vec<(&'a str, &'a [u8])>,
    prefixed_baggage_dropped: usize,
    custom: [Option<&'a [u8]>; MAX_CUSTOM_HEADERS],
}

impl<'a> RequestHeaders<'a> {
    /// Records the trace headers and baggage (for tests and tools; the filter says what it needs
    /// with [`RequestHeaders::scan`]).
    pub fn from_pairs<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        Self::scan(
            pairs,
            Scan {
                custom: &[],
                baggage: true,
            },
        )
    }

    /// Records the trace headers and the first value of each of `custom_names`.
    pub fn with_custom<I>(pairs: I, custom_names: &[String]) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        Self::scan(
            pairs,
            Scan {
                custom: custom_names,
                baggage: false,
            },
        )
    }

    /// Records the trace headers plus what `options` asks for. The first value of each custom
    /// name is retrievable by index with [`RequestHeaders::custom`]; names beyond
    /// [`MAX_CUSTOM_HEADERS`] are ignored.
    pub fn scan<I>(pairs: I, options: Scan) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let custom_names = options.custom;
        let mut headers = RequestHeaders {
            first: [None; HeaderName::COUNT],
            count: [0; HeaderName::COUNT],
            tracestate_lines: [&[]; MAX_TRACESTATE_LINES],
            baggage_lines: Vec::new(),
            prefixed_baggage: Vec::new(),
            prefixed_baggage_dropped: 0,
            custom: [None; MAX_CUSTOM_HEADERS],
        };
        for (name, value) in pairs {
            if !custom_names.is_empty() {
                if let Some(i) = custom_names.iter().position(|custom| custom == name) {
                    if let Some(slot) = headers.custom.get_mut(i) {
                        slot.get_or_insert(trim_ows(value));
                    }
                }
            }
            let Some(known) = HeaderName::from_lowercase(name) else {
                let prefixed = name.starts_with(JAEGER_BAGGAGE_PREFIX)
                    || name.starts_with(OPENTRACING_BAGGAGE_PREFIX);
                if options.baggage && prefixed {
                    if headers.prefixed_baggage.len() < MAX_PREFIXED_BAGGAGE {
                        headers.prefixed_baggage.push((name, trim_ows(value)));
                    } else {
                        headers.prefixed_baggage_dropped =
                            headers.prefixed_baggage_dropped.saturating_add(1);
                    }
                }
                continue;
            };
            // `index()` is below `HeaderName::COUNT`, the arrays' length: `get` never fails here
            // (and the compiler removes the check).
            let i = known.index();
            let count = headers.count.get(i).copied().unwrap_or(u16::MAX);
            match known {
                HeaderName::Tracestate => {
                    if let Some(slot) = headers.tracestate_lines.get_mut(usize::from(count)) {
                        *slot = value;
                    }
                }
                // One past the limit is enough to know the list is too long.
                HeaderName::Baggage
                    if options.baggage && headers.baggage_lines.len() <= MAX_BAGGAGE_LINES =>
                {
                    headers.baggage_lines.push(value);
                }
                _ => {}
            }
            if let Some(first @ None) = headers.first.get_mut(i) {
                *first = Some(trim_ows(value));
            }
            if let Some(count) = headers.count.get_mut(i) {
                *count = count.saturating_add(1);
            }
        }
        headers
    }

    /// The first line of `name`, trimmed of surrounding white space.
    pub fn get(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.first.get(name.index()).copied().flatten()
    }

    pub fn contains(&self, name: HeaderName) -> bool {
        self.count(name) > 0
    }

    /// How many lines of `name` the request has.
    pub fn count(&self, name: HeaderName) -> usize {
        self.count.get(name.index()).copied().map_or(0, usize::from)
    }

    /// The first value of the `index`-th custom header name.
    pub fn custom(&self, index: usize) -> Option<&'a [u8]> {
        self.custom.get(index).copied().flatten()
    }

    /// Every `tracestate` line in order, or `None` when there are too many to be valid.
    pub fn tracestate_lines(&self) -> Option<&[&'a [u8]]> {
        let n = self.count(HeaderName::Tracestate);
        self.tracestate_lines.get(..n)
    }

    /// Every `baggage` line in order, or `None` when there are too many (or the view was not
    /// asked to record baggage).
    pub fn baggage_lines(&self) -> Option<&[&'a [u8]]> {
        let lines = &self.baggage_lines[..];
        let complete = lines.len() == self.count(HeaderName::Baggage);
        (complete && lines.len() <= MAX_BAGGAGE_LINES).then_some(lines)
    }

    /// `uberctx-*` and `ot-baggage-*` headers (name, trimmed value) in order, and how many more
    /// there were than a view keeps.
    pub fn prefixed_baggage(&self) -> (&[(&'a str, &'a [u8])], usize) {
        (&self.prefixed_baggage, self.prefixed_baggage_dropped)
    }
}

/// A change to the request headers. Setting a header replaces every line of that name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HeaderEdit {
    Set(HeaderName, String),
    Remove(HeaderName),
    /// Removes a header whose name is not one of [`HeaderName`] (the force header, baggage).
    RemoveCustom(String),
    /// Sets a header whose name is not one of [`HeaderName`] (`uberctx-<key>`, ...).
    SetCustom(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(pairs: &'a [(&'a str, &'a [u8])]) -> RequestHeaders<'a> {
        RequestHeaders::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn keeps_first_line_and_counts_repeats() {
        let pairs: &[(&str, &[u8])] = &[
            ("x-b3-traceid", b" aaa "),
            ("x-other", b"1"),
            ("x-b3-traceid", b"bbb"),
        ];
        let headers = view(pairs);
        assert_eq!(headers.get(HeaderName::B3TraceId), Some(&b"aaa"[..]));
        assert_eq!(headers.count(HeaderName::B3TraceId), 2);
        assert!(!headers.contains(HeaderName::B3));
    }

    #[test]
    fn collects_every_tracestate_line() {
        let pairs: &[(&str, &[u8])] = &[("tracestate", b"a=1"), ("tracestate", b"b=2")];
        let headers = view(pairs);
        assert_eq!(
            headers.tracestate_lines(),
            Some(&[&b"a=1"[..], &b"b=2"[..]][..])
        );
    }

    #[test]
    fn too_many_tracestate_lines_is_none() {
        let pairs: Vec<(&str, &[u8])> = (0..=MAX_TRACESTATE_LINES)
            .map(|_| ("tracestate", &b"a=1"[..]))
            .collect();
        let headers = view(&pairs);
        assert_eq!(headers.tracestate_lines(), None);
    }

    #[test]
    fn records_custom_headers() {
        let pairs: &[(&str, &[u8])] =
            &[("x-debug", b" on "), ("x-debug", b"off"), (":path", b"/a")];
        let names = vec!["x-missing".to_string(), "x-debug".to_string()];
        let headers = RequestHeaders::with_custom(pairs.iter().copied(), &names);
        assert_eq!(headers.custom(0), None);
        assert_eq!(headers.custom(1), Some(&b"on"[..]));
        assert_eq!(headers.get(HeaderName::Path), Some(&b"/a"[..]));
    }
}
