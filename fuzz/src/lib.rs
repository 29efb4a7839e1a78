//! What the fuzz targets share: the text form of a header set, applying the translator's edits
//! the way Envoy does, reading every format back, and the cost guard.
//!
//! A fuzz target panics (and libFuzzer reports a crash) when the library panics, when a header
//! the filter wrote does not read back as the context it chose, or when an input costs more than
//! the cost guard's bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use tracebridge::context::{Decision, Extraction, TraceContext, TracestateOut};
use tracebridge::formats::{Extractions, Format};
use tracebridge::headers::{HeaderEdit, RequestHeaders};

// ---------------------------------------------------------------------------------------------
// Cost guard
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting calls and bytes: a deterministic measure of work (the same
/// input always allocates the same), unlike time. A parser that re-encodes or copies its input
/// once per element allocates quadratically in the input's size and trips the bound.
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds GlobalAlloc's contract;
// the counters are atomics and never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's layout is passed on as it came.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as in `dealloc`; the caller guarantees `new_size` is valid for `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The work an input may cost: allocator calls and bytes allocated, each at most
/// `per_byte * input length + base`. Linear code stays far below (a request's fixed cost is the
/// base; each input byte is copied into a few owned strings at most); code that redoes work
/// per element (re-encoding a list after each drop, copying the rest of the input per entry)
/// grows with the square of the input and does not.
#[derive(Clone, Copy, Debug)]
pub struct CostBound {
    pub allocations_per_byte: u64,
    pub allocations_base: u64,
    pub bytes_per_byte: u64,
    pub bytes_base: u64,
}

impl CostBound {
    /// For parsers and the whole translation: measured on the seeds and a long fuzz run, the
    /// worst linear inputs stay below a quarter of this.
    pub const DEFAULT: CostBound = CostBound {
        allocations_per_byte: 4,
        allocations_base: 2_000,
        bytes_per_byte: 64,
        bytes_base: 256 * 1024,
    };

    /// For reading baggage alone (no output written): the entries of one request, each copied
    /// once into its key, value and properties. Tighter than [`CostBound::DEFAULT`] because
    /// W3C's limits (180 entries, 8,192 bytes) bound what a reader needs to keep.
    pub const BAGGAGE: CostBound = CostBound {
        allocations_per_byte: 2,
        allocations_base: 1_000,
        bytes_per_byte: 24,
        bytes_base: 64 * 1024,
    };
}

/// `TRACEBRIDGE_FUZZ_COST=1` prints every input's cost (to see how far below the bound the
/// seeds and a corpus are: `cargo fuzz run <target> <dir> -- -runs=0`).
static REPORT_COST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Runs `work` and panics when it allocated more than `bound` allows for `input_len` bytes.
pub fn cost_guard<R>(input_len: usize, bound: CostBound, work: impl FnOnce() -> R) -> R {
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let result = work();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes;
    let len = input_len as u64;
    if *REPORT_COST.get_or_init(|| std::env::var_os("TRACEBRIDGE_FUZZ_COST").is_some()) {
        eprintln!("cost: {len} bytes, {allocations} allocations, {bytes} bytes allocated");
    }
    let max_allocations = bound.allocations_per_byte * len + bound.allocations_base;
    let max_bytes = bound.bytes_per_byte * len + bound.bytes_base;
    assert!(
        allocations <= max_allocations && bytes <= max_bytes,
        "cost guard: an input of {len} bytes made {allocations} allocations of {bytes} bytes \
         (bound: {max_allocations} allocations, {max_bytes} bytes)"
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Header sets
// ---------------------------------------------------------------------------------------------

/// An owned header list, in order, as a request carries it.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// A header set in its text form, one `name: value` per line (the form of the seeds under
/// `fuzz/seeds/`): the name ends at the first `:` after its first byte (so `:path: /a` works),
/// one space after it is dropped. Lines whose name is not UTF-8 or that have no `:` are skipped.
pub fn header_lines(data: &[u8]) -> Pairs {
    let mut pairs = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().skip(1).position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon + 1);
        let value = value.get(1..).unwrap_or_default();
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        pairs.push((name.to_string(), value.to_vec()));
    }
    pairs
}

/// A view of `pairs` with everything recorded (trace headers, baggage).
pub fn view(pairs: &Pairs) -> RequestHeaders<'_> {
    RequestHeaders::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
}

/// `pairs` after `edits`, applied as Envoy applies them: a set replaces every line of the name.
pub fn apply(pairs: &Pairs, edits: &[HeaderEdit]) -> Pairs {
    let mut out = pairs.clone();
    for edit in edits {
        let name = match edit {
            HeaderEdit::Set(name, _) | HeaderEdit::Remove(name) => name.as_str().to_string(),
            HeaderEdit::RemoveCustom(name) | HeaderEdit::SetCustom(name, _) => name.clone(),
        };
        out.retain(|(n, _)| *n != name);
        if let HeaderEdit::Set(_, value) | HeaderEdit::SetCustom(_, value) = edit {
            out.push((name, value.clone().into_bytes()));
        }
    }
    out
}

/// Panics unless `format` reads `headers` as `want`: same trace id, span id and sampled flag.
pub fn assert_reads_back(format: Format, headers: &Pairs, want: &TraceContext, what: &str) {
    let reread = view(headers);
    let Extraction::Context(got) = format.extract(&reread) else {
        panic!(
            "{what}: the {format:?} headers the filter wrote do not read back: {:?}",
            lossy(headers)
        );
    };
    assert_eq!(got.trace_id, want.trace_id, "{what}: {format:?} trace id");
    assert_eq!(
        got.span_id,
        Some(want.span_id),
        "{what}: {format:?} span id"
    );
    assert_eq!(
        got.decision.map(Decision::is_sampled),
        Some(want.decision.is_sampled()),
        "{what}: {format:?} sampled flag"
    );
}

/// What makes `value` a `tracestate` list W3C Trace Context does not allow (`None`: it is
/// allowed): more than 32 members, or a member that is not `key=value` with a key of at most 256
/// bytes and a value of 1 to 256 bytes.
pub fn tracestate_problem(value: &str) -> Option<String> {
    let members: Vec<&str> = value
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > 32 {
        return Some(format!("{} members", members.len()));
    }
    for member in members {
        let Some((key, value)) = member.split_once('=') else {
            return Some(format!("member {member:?} has no '='"));
        };
        if key.is_empty() || key.len() > 256 {
            return Some(format!("a key of {} bytes", key.len()));
        }
        if value.is_empty() || value.len() > 256 {
            return Some(format!(
                "member {key:?} has a value of {} bytes (W3C allows 256): {member:?}",
                value.len()
            ));
        }
    }
    None
}

/// Panics when `value` is not a `tracestate` list W3C allows ([`tracestate_problem`]).
pub fn assert_tracestate_valid(value: &str, what: &str) {
    if let Some(problem) = tracestate_problem(value) {
        panic!("{what}: invalid tracestate: {problem}");
    }
}

/// Header values for printing in a failure.
pub fn lossy(pairs: &Pairs) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One format's extract
// ---------------------------------------------------------------------------------------------

/// The extract target of one format: the input's lines (split at `\n`) are the values of the
/// format's headers in turn (its first header, its second, ..., then the first again, so
/// repeated lines occur too). Whatever the format reads as a context, it must write back so that
/// it reads the same again: once with that context (usually left as it came), once with another
/// span id (so the header is rewritten, carrying over what the format keeps from the request).
pub fn fuzz_extract(format: Format, data: &[u8]) {
    let names = format.headers();
    let pairs: Pairs = data
        .split(|&b| b == b'\n')
        .zip(names.iter().cycle())
        .map(|(value, name)| (name.as_str().to_string(), value.to_vec()))
        .collect();
    let headers = view(&pairs);
    let extraction = cost_guard(data.len(), CostBound::DEFAULT, || format.extract(&headers));
    let Extraction::Context(incoming) = extraction else {
        return;
    };
    // A context read without a span id (X-Ray's `Root=` alone) or a decision is continued with
    // ones of the filter's own.
    let span_id = incoming
        .span_id
        .or(tracebridge::ids::SpanId::new(0x1122334455667788));
    let Some(span_id) = span_id else { return };
    let context = TraceContext {
        trace_id: incoming.trace_id,
        span_id,
        decision: incoming.decision.unwrap_or(Decision::Sampled),
        random_trace_id: incoming.random_trace_id,
    };
    let other_span = tracebridge::ids::SpanId::new(span_id.value() ^ 0x00ff_0000_0000_0001)
        .or(tracebridge::ids::SpanId::new(1));
    let read = Extractions::read(&[format], &headers);
    for context in [
        Some(context),
        other_span.map(|span_id| TraceContext { span_id, ..context }),
    ]
    .into_iter()
    .flatten()
    {
        let mut edits = Vec::new();
        read.inject(format, &context, &TracestateOut::Keep, &headers, &mut edits);
        let out = apply(&pairs, &edits);
        assert_reads_back(format, &out, &context, "extract then inject");
    }
}

// ---------------------------------------------------------------------------------------------
// The translator's surroundings
// ---------------------------------------------------------------------------------------------

/// A deterministic random source (xorshift), so that a crash reproduces.
pub struct Xorshift(pub u64);

impl tracebridge::translate::RandomSource for Xorshift {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for byte in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *byte = self.0 as u8;
        }
        true
    }
}

/// The caller: a loopback address with an optional principal.
pub struct Caller(pub Option<&'static str>);

impl tracebridge::trust::Peer for Caller {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
    fn principal(&mut self) -> Option<String> {
        self.0.map(String::from)
    }
}

/// Unix time of the fuzz runs (2026-11-24), fixed so that force tokens' expiries reproduce.
pub const NOW: u64 = 0x6b06_3027;

/// Translates `pairs` under `config` and checks the translator's invariant: every injected
/// format reads back as the context it chose (trace id, span id, sampled), and a `tracestate` it
/// writes is a list W3C allows. Returns the headers as the upstream gets them.
pub fn translate_and_check(
    config: &tracebridge::config::Config,
    pairs: &Pairs,
    seed: u64,
    principal: Option<&'static str>,
) -> Pairs {
    use tracebridge::translate::{translate, Host};
    let headers = RequestHeaders::scan(
        pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        config.scan(),
    );
    let mut budget = tracebridge::budget::Unlimited;
    let mut host = Host {
        random: &mut Xorshift(seed | 1),
        peer: &mut Caller(principal),
        budget: &mut budget,
        clock: &mut tracebridge::translate::FixedClock(NOW),
    };
    let Ok(translation) = translate(config, &headers, &mut host) else {
        panic!("translate failed with randomness available");
    };
    let out = apply(pairs, &translation.edits);
    for edit in &translation.edits {
        if let HeaderEdit::Set(tracebridge::headers::HeaderName::Tracestate, value) = edit {
            assert_tracestate_valid(value, "translate");
        }
    }
    for &format in &config.inject {
        assert_reads_back(format, &out, &translation.context, "translate");
    }
    out
}
