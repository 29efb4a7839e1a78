//! A worker's export queue: finished spans wait in a bounded queue (the oldest is dropped when
//! it is full) and leave in batches, one export request at a time. A failed or timed-out export
//! is counted and dropped, never retried: a collector that is down sees one request per flush
//! interval per worker, and requests never wait for it.

use super::otlp;
use std::collections::VecDeque;
use std::time::Duration;

/// Counter names (`wasmcustom.tracebridge.spans.*` in Envoy's stats).
pub const EXPORTED: &str = "tracebridge.spans.exported";
pub const DROPPED: &str = "tracebridge.spans.dropped";
pub const EXPORT_FAILED: &str = "tracebridge.spans.export_failed";

/// How long past its timeout an export may stay unanswered before it is written off. Envoy
/// answers every call (with a failure at the timeout), so this only guards against a lost one.
const LOST_CALL_GRACE: Duration = Duration::from_secs(5);

/// Span counts not yet added to the host's counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counts {
    /// Accepted by the receiver.
    pub exported: u64,
    /// Pushed out of a full queue (the oldest first).
    pub dropped: u64,
    /// In an export that failed: refused, unanswered, timed out, or rejected by the receiver.
    pub export_failed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    pub max_queue: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
}

/// How an export ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// An HTTP answer: its status and the spans its `partial_success` rejected.
    Answered { status: u16, rejected: u64 },
    /// No answer: connection failure, reset or timeout.
    NoAnswer,
}

/// An export request ready to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub body: Vec<u8>,
    pub spans: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    token: u32,
    spans: usize,
    give_up_at: u64,
}

pub struct Exporter {
    limits: Limits,
    /// Encoded `Resource` and `InstrumentationScope` bodies, the same for every batch.
    resource: Vec<u8>,
    scope: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
    in_flight: Option<InFlight>,
    next_flush_at: u64,
    /// An early tick was asked for because a full batch is waiting.
    early_tick_requested: bool,
    counts: Counts,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Exporter {
    pub fn new(limits: Limits, resource: Vec<u8>, scope: Vec<u8>, now: u64) -> Exporter {
        Exporter {
            limits,
            resource,
            scope,
            queue: VecDeque::new(),
            in_flight: None,
            next_flush_at: now.saturating_add(nanos(limits.flush_interval)),
            early_tick_requested: false,
            counts: Counts::default(),
        }
    }

    /// A new configuration keeps the queue (the oldest spans beyond a smaller `max_queue` are
    /// dropped) and an export in flight.
    pub fn reconfigure(&mut self, limits: Limits, resource: Vec<u8>, scope: Vec<u8>, now: u64) {
        self.limits = limits;
        self.resource = resource;
        self.scope = scope;
        while self.queue.len() > limits.max_queue {
            self.queue.pop_front();
            self.counts.dropped = self.counts.dropped.saturating_add(1);
        }
        self.next_flush_at = self
            .next_flush_at
            .min(now.saturating_add(nanos(limits.flush_interval)));
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Queues a finished span. Returns true when the caller should ask for an early tick: a full
    /// batch is waiting, nothing is in flight, and no early tick was asked for yet.
    pub fn push(&mut self, span: Vec<u8>) -> bool {
        if self.queue.len() >= self.limits.max_queue {
            self.queue.pop_front();
            self.counts.dropped = self.counts.dropped.saturating_add(1);
        }
        self.queue.push_back(span);
        let want = self.queue.len() >= self.limits.max_batch
            && self.in_flight.is_none()
            && !self.early_tick_requested;
        self.early_tick_requested |= want;
        want
    }

    /// Whether an early tick was asked for and not yet served (the caller then restores its
    /// normal tick period).
    pub fn take_early_tick(&mut self) -> bool {
        std::mem::take(&mut self.early_tick_requested)
    }

    /// The next export request, if one is due: nothing in flight, and a full batch waiting or
    /// the flush interval over with spans queued. An export unanswered long past its timeout is
    /// written off first.
    pub fn take_batch(&mut self, now: u64) -> Option<Batch> {
        if let Some(flight) = self.in_flight {
            if now < flight.give_up_at {
                return None;
            }
            self.in_flight = None;
            self.counts.export_failed = self
                .counts
                .export_failed
                .saturating_add(flight.spans as u64);
        }
        let interval_over = now >= self.next_flush_at;
        if interval_over {
            self.next_flush_at = now.saturating_add(nanos(self.limits.flush_interval));
        }
        let full = self.queue.len() >= self.limits.max_batch;
        if self.queue.is_empty() || !(full || interval_over) {
            return None;
        }
        let n = self.queue.len().min(self.limits.max_batch);
        let body = otlp::export_request(
            &self.resource,
            &self.scope,
            self.queue.range(..n).map(Vec::as_slice),
        );
        self.queue.drain(..n);
        Some(Batch { body, spans: n })
    }

    /// The batch went out as call `token`.
    pub fn sent(&mut self, token: u32, spans: usize, now: u64) {
        let give_up_at = now
            .saturating_add(nanos(self.limits.timeout))
            .saturating_add(nanos(LOST_CALL_GRACE));
        self.in_flight = Some(InFlight {
            token,
            spans,
            give_up_at,
        });
    }

    /// The host refused to send the batch.
    pub fn not_sent(&mut self, spans: usize) {
        self.counts.export_failed = self.counts.export_failed.saturating_add(spans as u64);
    }

    /// Call `token` ended. Returns false for a call this exporter does not wait for (written
    /// off, or from before a reconfiguration).
    pub fn completed(&mut self, token: u32, outcome: Outcome) -> bool {
        let Some(flight) = self.in_flight.filter(|f| f.token == token) else {
            return false;
        };
        self.in_flight = None;
        let spans = flight.spans as u64;
        match outcome {
            Outcome::Answered { status, rejected } if (200..300).contains(&status) => {
                let rejected = rejected.min(spans);
                self.counts.exported = self
                    .counts
                    .exported
                    .saturating_add(spans.saturating_sub(rejected));
                self.counts.export_failed = self.counts.export_failed.saturating_add(rejected);
            }
            _ => self.counts.export_failed = self.counts.export_failed.saturating_add(spans),
        }
        true
    }

    /// The counts since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits(max_queue: usize, max_batch: usize) -> Limits {
        Limits {
            max_queue,
            max_batch,
            flush_interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(500),
        }
    }

    fn exporter(max_queue: usize, max_batch: usize) -> Exporter {
        Exporter::new(limits(max_queue, max_batch), vec![], vec![], 0)
    }

    /// A span body that names itself: field 5 (name) = `name`.
    fn span(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        otlp::string_field(&mut out, 5, name);
        out
    }

    fn batch_of(names: &[&str]) -> Vec<u8> {
        let spans: Vec<Vec<u8>> = names.iter().map(|n| span(n)).collect();
        otlp::export_request(&[], &[], spans.iter().map(Vec::as_slice))
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut e = exporter(3, 10);
        for name in ["a", "b", "c", "d", "e"] {
            e.push(span(name));
        }
        assert_eq!(e.queued(), 3);
        assert_eq!(e.take_counts().dropped, 2);
        let batch = e.take_batch(1000 * MS).expect("the interval is over");
        assert_eq!(batch.body, batch_of(&["c", "d", "e"]));
        assert_eq!(batch.spans, 3);
    }

    #[test]
    fn flushes_on_the_interval_or_a_full_batch() {
        let mut e = exporter(100, 3);
        e.push(span("a"));
        assert_eq!(e.take_batch(999 * MS), None, "neither full nor due");
        assert_eq!(e.take_batch(1000 * MS).map(|b| b.spans), Some(1));
        e.sent(1, 1, 1000 * MS);
        assert!(e.completed(
            1,
            Outcome::Answered {
                status: 200,
                rejected: 0
            }
        ));
        // The next interval ends at 2000 ms; a full batch goes before.
        assert!(!e.push(span("b")));
        assert!(!e.push(span("c")));
        assert!(e.push(span("d")), "a full batch asks for an early tick");
        assert!(!e.push(span("e")), "asked once");
        assert!(e.take_early_tick());
        assert!(!e.take_early_tick());
        let batch = e.take_batch(1001 * MS).expect("full");
        assert_eq!(batch.body, batch_of(&["b", "c", "d"]));
        assert_eq!(e.queued(), 1);
        assert_eq!(e.take_counts().exported, 1);
    }

    #[test]
    fn one_export_at_a_time() {
        let mut e = exporter(100, 2);
        for name in ["a", "b", "c", "d"] {
            e.push(span(name));
        }
        let first = e.take_batch(0).expect("full");
        e.sent(7, first.spans, 0);
        assert!(e.in_flight());
        assert!(
            !e.push(span("f")),
            "no early tick while an export is in flight"
        );
        assert_eq!(e.take_batch(2000 * MS), None, "in flight");
        assert!(!e.completed(8, Outcome::NoAnswer), "not the call in flight");
        assert!(e.completed(
            7,
            Outcome::Answered {
                status: 200,
                rejected: 0
            }
        ));
        assert_eq!(e.take_batch(2000 * MS).map(|b| b.spans), Some(2));
    }

    #[test]
    fn failures_are_counted_and_not_retried() {
        let mut e = exporter(100, 10);
        let outcomes = [
            (
                Outcome::NoAnswer,
                Counts {
                    export_failed: 2,
                    ..Counts::default()
                },
            ),
            (
                Outcome::Answered {
                    status: 503,
                    rejected: 0,
                },
                Counts {
                    export_failed: 2,
                    ..Counts::default()
                },
            ),
            (
                Outcome::Answered {
                    status: 400,
                    rejected: 0,
                },
                Counts {
                    export_failed: 2,
                    ..Counts::default()
                },
            ),
            // OTLP partial success: 200 with rejected_spans.
            (
                Outcome::Answered {
                    status: 200,
                    rejected: 1,
                },
                Counts {
                    exported: 1,
                    export_failed: 1,
                    ..Counts::default()
                },
            ),
            // A receiver that rejects more than it got rejects what it got.
            (
                Outcome::Answered {
                    status: 200,
                    rejected: 9,
                },
                Counts {
                    export_failed: 2,
                    ..Counts::default()
                },
            ),
        ];
        let mut now = 0;
        for (outcome, want) in outcomes {
            e.push(span("a"));
            e.push(span("b"));
            now += 1000 * MS;
            let batch = e.take_batch(now).expect("due");
            e.sent(1, batch.spans, now);
            assert!(e.completed(1, outcome));
            assert_eq!(e.take_counts(), want, "{outcome:?}");
            assert_eq!(
                e.queued(),
                0,
                "{outcome:?}: nothing comes back to be retried"
            );
        }
        e.push(span("a"));
        let batch = e.take_batch(now + 1000 * MS).expect("due");
        e.not_sent(batch.spans);
        assert_eq!(e.take_counts().export_failed, 1);
    }

    #[test]
    fn an_unanswered_export_is_written_off() {
        let mut e = exporter(100, 10);
        e.push(span("a"));
        let batch = e.take_batch(1000 * MS).expect("due");
        e.sent(3, batch.spans, 1000 * MS);
        e.push(span("b"));
        // Timeout 500 ms plus the grace: still waiting at 6499 ms.
        assert_eq!(e.take_batch(6499 * MS), None);
        let next = e
            .take_batch(6500 * MS)
            .expect("written off; the interval is over");
        assert_eq!(next.body, batch_of(&["b"]));
        assert_eq!(e.take_counts().export_failed, 1);
        assert!(!e.completed(
            3,
            Outcome::Answered {
                status: 200,
                rejected: 0
            }
        ));
    }

    #[test]
    fn reconfiguring_keeps_the_queue_within_the_new_bound() {
        let mut e = exporter(10, 10);
        for name in ["a", "b", "c", "d"] {
            e.push(span(name));
        }
        e.reconfigure(limits(2, 2), vec![], vec![], 0);
        assert_eq!(e.take_counts().dropped, 2);
        assert_eq!(e.take_batch(0).map(|b| b.body), Some(batch_of(&["c", "d"])));
    }
}
