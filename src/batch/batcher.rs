//! The batcher: pure logic that takes `now` and returns batches. It flushes on a record count, on
//! the encoded body's size, on the age of the oldest buffered message, and at shutdown. For upserts
//! it coalesces records with the same match key by a field-level merge, in the order of the
//! messages' `SequenceNumber` (FIFO) or `SentTimestamp` and ID (standard), whatever order they were
//! received in (`Row::merge`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Batch, BodyFrame, FlushReason, Row};
use crate::batch::Decoded;
use crate::config::Operation;
use crate::lease::Lease;
use crate::message::Received;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
    pub operation: Operation,
    pub match_key: String,
}

/// When the open batch leaves. Full batches close on their own, in `push`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    Now(FlushReason),
    /// Once the oldest message has waited `--batch-max-wait`.
    At(Instant),
    /// Nothing buffered.
    Hold,
}

/// The one rule for when a batch leaves, asked only with a slot (an in-flight place and a budget
/// token) in hand: the dispatcher polls the batcher once it holds one, and until then the batch
/// keeps filling, however old it is, so that a small batch does not queue behind the quota while
/// records it could carry arrive. With a slot: at once if the worker is shutting down or the
/// oldest message has waited `max_wait`, else when it will have.
pub fn departure(
    oldest: Option<Instant>,
    max_wait: Duration,
    closing: bool,
    now: Instant,
) -> Departure {
    let Some(oldest) = oldest else {
        return Departure::Hold;
    };
    if closing {
        return Departure::Now(FlushReason::Shutdown);
    }
    let due = oldest + max_wait;
    if now >= due {
        Departure::Now(FlushReason::Age)
    } else {
        Departure::At(due)
    }
}

/// Generic over the message type as `Batch` is: the worker batches leases, tests and benches
/// batch what was received.
pub struct Batcher<M = Lease> {
    limits: Limits,
    frame: Arc<BodyFrame>,
    rows: Vec<Row<M>>,
    by_key: HashMap<String, usize>,
    bytes: usize,
    messages: usize,
    oldest: Option<Instant>,
    /// The earliest receive of a message in the open batch (SQS's 12-hour clock runs from it).
    first_received: Option<Instant>,
    /// The FIFO message groups of the open batch: the dispatcher asks for a ticket only while
    /// none of them is in flight.
    groups: HashSet<String>,
}

impl<M: AsRef<Received>> Batcher<M> {
    pub fn new(limits: Limits) -> Self {
        let frame = BodyFrame::new(limits.operation, &limits.match_key);
        let bytes = frame.overhead();
        Self {
            limits,
            frame,
            rows: Vec::new(),
            by_key: HashMap::new(),
            bytes,
            messages: 0,
            oldest: None,
            first_received: None,
            groups: HashSet::new(),
        }
    }

    /// The largest encoded record that fits in an empty batch.
    pub fn max_record_bytes(&self) -> usize {
        self.limits.max_bytes.saturating_sub(self.frame.overhead())
    }

    pub fn buffered_messages(&self) -> usize {
        self.messages
    }

    /// The FIFO message groups the open batch holds (none on a standard queue).
    pub fn open_groups(&self) -> &HashSet<String> {
        &self.groups
    }

    /// When the open batch took its first message, if it holds any.
    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// The earliest receive of a message the open batch holds, merged ones included.
    pub fn first_received(&self) -> Option<Instant> {
        self.first_received
    }

    /// When the age trigger fires, if anything is buffered.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|oldest| oldest + self.limits.max_wait)
    }

    /// Adds a record. Returns the batches this closes: one flushed before it (bytes) and/or one
    /// flushed with it (size).
    pub fn push(&mut self, item: Decoded, message: M, now: Instant) -> Vec<Batch<M>> {
        let mut flushed = Vec::new();
        let existing = match (&item.key, self.limits.operation) {
            (Some(key), Operation::Upsert) => self.by_key.get(key).copied(),
            _ => None,
        };
        let message = if let Some(index) = existing {
            let row = &mut self.rows[index];
            let before = row.encoded.len();
            let room = self.limits.max_bytes.saturating_sub(self.bytes - before);
            let group = message.as_ref().group_id.clone();
            let received = message.as_ref().received_at;
            match row.merge(&item.encoded, message, room) {
                Ok(()) => {
                    self.bytes = self.bytes - before + row.encoded.len();
                    self.messages += 1;
                    self.groups.extend(group);
                    self.note_received(received);
                    return flushed;
                }
                Err(message) => {
                    // The merged row would not fit: close this batch, and the record starts the
                    // next one.
                    flushed.extend(self.flush(FlushReason::Bytes));
                    *message
                }
            }
        } else {
            let added = item.encoded.len() + usize::from(!self.rows.is_empty());
            if !self.rows.is_empty() && self.bytes + added > self.limits.max_bytes {
                flushed.extend(self.flush(FlushReason::Bytes));
            }
            message
        };
        self.insert(item, message, now);
        if self.rows.len() >= self.limits.max_records {
            flushed.extend(self.flush(FlushReason::Size));
        }
        flushed
    }

    fn insert(&mut self, item: Decoded, message: M, now: Instant) {
        self.bytes += item.encoded.len() + usize::from(!self.rows.is_empty());
        if let (Some(key), Operation::Upsert) = (&item.key, self.limits.operation) {
            self.by_key.insert(key.clone(), self.rows.len());
        }
        if let Some(group) = &message.as_ref().group_id
            && !self.groups.contains(group)
        {
            self.groups.insert(group.clone());
        }
        self.note_received(message.as_ref().received_at);
        self.rows.push(Row::new(item, message));
        self.messages += 1;
        self.oldest.get_or_insert(now);
    }

    fn note_received(&mut self, received: Instant) {
        self.first_received = Some(self.first_received.map_or(received, |r| r.min(received)));
    }

    /// Asked when a slot is in hand: the open batch, if it may leave now (`departure`).
    pub fn poll(&mut self, now: Instant, closing: bool) -> Option<Batch<M>> {
        match departure(self.oldest, self.limits.max_wait, closing, now) {
            Departure::Now(reason) => self.flush(reason),
            Departure::At(_) | Departure::Hold => None,
        }
    }

    /// Closes the current batch, if it holds anything.
    pub fn flush(&mut self, reason: FlushReason) -> Option<Batch<M>> {
        if self.rows.is_empty() {
            return None;
        }
        self.by_key.clear();
        self.bytes = self.frame.overhead();
        self.messages = 0;
        self.oldest = None;
        self.first_received = None;
        let rows = std::mem::take(&mut self.rows);
        self.groups.clear();
        Some(Batch::new(rows, reason, self.frame.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn limits(max_records: usize, max_bytes: usize) -> Limits {
        Limits {
            max_records,
            max_bytes,
            max_wait: Duration::from_secs(5),
            operation: Operation::Upsert,
            match_key: "email".into(),
        }
    }

    fn item(id: &str, record: Value) -> (Decoded, Received) {
        let Value::Object(record) = record else {
            panic!()
        };
        let record: Map<String, Value> = record;
        let key = record
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let encoded = serde_json::to_string(&record).unwrap();
        let message = Received::fake(id, &encoded);
        (Decoded { key, encoded }, message)
    }

    /// SQS's 12-hour clock runs from the receive, not from the push: a message that waited for
    /// memory before it reached the batcher is as old as its receive, merged ones included.
    #[test]
    fn the_open_batch_knows_its_earliest_receive() {
        let mut batcher: Batcher<Received> = Batcher::new(limits(10, 1 << 20));
        let pushed = Instant::now() + Duration::from_secs(3600);
        let (first, mut early) = item("m1", json!({"email": "a@x", "n": 1}));
        early.received_at = pushed - Duration::from_secs(1800);
        let (second, mut earlier) = item("m2", json!({"email": "a@x", "n": 2}));
        earlier.received_at = pushed - Duration::from_secs(2400);
        batcher.push(first, early.clone(), pushed);
        assert_eq!(batcher.oldest(), Some(pushed));
        assert_eq!(batcher.first_received(), Some(early.received_at));
        batcher.push(second, earlier.clone(), pushed);
        assert_eq!(
            batcher.first_received(),
            Some(earlier.received_at),
            "merged"
        );
        batcher.flush(FlushReason::Shutdown);
        assert_eq!(batcher.first_received(), None);
    }

    #[test]
    fn flushes_on_record_count() {
        let mut b = Batcher::new(limits(3, 1_000_000));
        let t0 = Instant::now();
        for i in 0..2 {
            let (d, m) = item(&format!("m{i}"), json!({"email": format!("u{i}@x")}));
            assert!(b.push(d, m, t0).is_empty());
        }
        let (d, m) = item("m2", json!({"email": "u2@x"}));
        let flushed = b.push(d, m, t0);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].reason, FlushReason::Size);
        assert_eq!(flushed[0].rows.len(), 3);
        assert_eq!(b.buffered_messages(), 0);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn departure_follows_the_table() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(2);
        let s = Duration::from_secs;
        // (oldest, closing, now, expected)
        let cases = [
            (None, false, t0, Departure::Hold),
            (None, true, t0, Departure::Hold),
            (Some(t0), false, t0 + s(1), Departure::At(t0 + s(2))),
            (Some(t0), false, t0 + s(2), Departure::Now(FlushReason::Age)),
            (
                Some(t0),
                false,
                t0 + s(90),
                Departure::Now(FlushReason::Age),
            ),
            (Some(t0), true, t0, Departure::Now(FlushReason::Shutdown)),
        ];
        for (oldest, closing, now, expected) in cases {
            assert_eq!(
                departure(oldest, wait, closing, now),
                expected,
                "oldest {:?} closing {closing} now +{:?}",
                oldest.map(|o| o - t0),
                now - t0
            );
        }
    }

    #[test]
    fn flushes_on_age_of_the_oldest_message() {
        let mut b = Batcher::new(limits(100, 1_000_000));
        let t0 = Instant::now();
        let (d, m) = item("m0", json!({"email": "a@x"}));
        b.push(d, m, t0);
        let (d, m) = item("m1", json!({"email": "b@x"}));
        b.push(d, m, t0 + Duration::from_secs(3));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(b.poll(t0 + Duration::from_millis(4999), false).is_none());
        let batch = b.poll(t0 + Duration::from_secs(5), false).unwrap();
        assert_eq!(batch.reason, FlushReason::Age);
        assert_eq!(batch.message_count(), 2);
        assert!(b.poll(t0 + Duration::from_secs(60), false).is_none());
    }

    #[test]
    fn flushes_before_the_body_passes_max_bytes() {
        // Each record is 20 bytes; the frame is 12 + 20 = 32 bytes.
        let record = |i: usize| json!({"email": format!("user{i:02}@xy.io")});
        let one = serde_json::to_string(&record(0)).unwrap().len();
        let frame = BodyFrame::new(Operation::Upsert, "email").overhead();
        let max = frame + 3 * one + 2; // exactly three records
        let mut b = Batcher::new(limits(100, max));
        let t0 = Instant::now();
        let mut flushed = Vec::new();
        for i in 0..4 {
            let (d, m) = item(&format!("m{i}"), record(i));
            flushed.extend(b.push(d, m, t0));
        }
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].reason, FlushReason::Bytes);
        assert_eq!(flushed[0].rows.len(), 3);
        assert_eq!(flushed[0].body().len(), max);
        assert_eq!(b.buffered_messages(), 1);
    }

    #[test]
    fn coalesces_same_key_by_field_merge_in_receive_order() {
        let mut b = Batcher::new(limits(100, 1_000_000));
        let t0 = Instant::now();
        for (id, record) in [
            (
                "m1",
                json!({"email": "a@x", "tier": "gold", "country": "NL"}),
            ),
            ("m2", json!({"email": "b@x"})),
            (
                "m3",
                json!({"email": "a@x", "tier": "silver", "country": null}),
            ),
            ("m4", json!({"email": "a@x", "plan": "pro"})),
        ] {
            let (d, m) = item(id, record);
            b.push(d, m, t0);
        }
        let batch = b.flush(FlushReason::Shutdown).unwrap();
        assert_eq!(batch.rows.len(), 2);
        assert_eq!(
            Value::Object(Decoded::fields(&batch.rows[0].encoded)),
            json!({"email": "a@x", "tier": "silver", "country": null, "plan": "pro"})
        );
        let ids: Vec<_> = batch.rows[0]
            .messages
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["m1", "m3", "m4"]);
        assert_eq!(batch.body().len(), batch.body_len());
        assert_eq!(batch.reason, FlushReason::Shutdown);
    }

    /// A merge that would pass max-bytes closes the batch with the row as it was, and the
    /// newcomer starts the next batch; a second merge of a row reuses its kept map.
    #[test]
    fn a_merge_that_does_not_fit_closes_the_batch_unmerged() {
        let frame = BodyFrame::new(Operation::Upsert, "email").overhead();
        let first = json!({"email": "a@x", "tier": "gold"});
        let first_len = serde_json::to_string(&first).unwrap().len();
        let mut b = Batcher::new(limits(100, frame + first_len + 12));
        let t0 = Instant::now();
        let (d, m) = item("m1", first);
        assert!(b.push(d, m, t0).is_empty());
        let (d, m) = item("m2", json!({"email": "a@x", "tier": "plat"}));
        assert!(b.push(d, m, t0).is_empty(), "the same length merges");
        let (d, m) = item("m3", json!({"email": "a@x", "plan": "enterprise"}));
        let closed = b.push(d, m, t0);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            closed[0].rows[0].encoded,
            r#"{"email":"a@x","tier":"plat"}"#
        );
        let ids: Vec<_> = closed[0].rows[0]
            .messages
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["m1", "m2"]);
        let next = b.flush(FlushReason::Shutdown).unwrap();
        assert_eq!(
            next.rows[0].encoded,
            r#"{"email":"a@x","plan":"enterprise"}"#
        );
    }

    #[test]
    fn appends_never_coalesce() {
        let mut l = limits(100, 1_000_000);
        l.operation = Operation::Append;
        let mut b = Batcher::new(l);
        let t0 = Instant::now();
        for id in ["m1", "m2"] {
            let (d, m) = item(id, json!({"email": "a@x"}));
            b.push(d, m, t0);
        }
        assert_eq!(b.flush(FlushReason::Shutdown).unwrap().rows.len(), 2);
    }

    #[test]
    fn shutdown_flush_of_empty_buffer_is_nothing() {
        let mut b: Batcher<Received> = Batcher::new(limits(10, 1_000_000));
        assert!(b.flush(FlushReason::Shutdown).is_none());
    }
}
