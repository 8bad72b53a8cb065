//! Batches: rows (a record and the messages that made it), the exact request body, and the ways a
//! batch is cut apart when the API refuses it (halves, or without some rows).

pub mod batcher;
pub mod key;
#[cfg(test)]
mod proptests;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::Operation;
use crate::lease::Lease;
use crate::message::Received;

/// A record ready for the batcher: its match-key value and its canonical JSON encoding (compact,
/// fields in first-seen order, a repeated field's last value, serde_json's escapes). The decoder
/// (`source::decode`) makes it.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub key: Option<String>,
    pub encoded: String,
}

impl Decoded {
    /// The record as a map, for the rare merge of two upserts to one key.
    pub fn fields(encoded: &str) -> Map<String, Value> {
        serde_json::from_str(encoded).unwrap_or_default()
    }
}

/// The JSON around the records: `{"records":[` ... `],"matchKey":"email"}` or `]}`.
#[derive(Debug)]
pub struct BodyFrame {
    prefix: &'static str,
    suffix: String,
}

impl BodyFrame {
    pub fn new(operation: Operation, match_key: &str) -> Arc<Self> {
        let suffix = match operation {
            Operation::Upsert => {
                format!("],\"matchKey\":{}}}", Value::String(match_key.to_owned()))
            }
            Operation::Append => "]}".to_owned(),
        };
        Arc::new(Self {
            prefix: "{\"records\":[",
            suffix,
        })
    }

    /// Bytes of a body with no records.
    pub fn overhead(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// Bytes of a body holding records of these encoded lengths.
    pub fn body_len(&self, record_lengths: impl IntoIterator<Item = usize>) -> usize {
        let (count, sum) = record_lengths
            .into_iter()
            .fold((0usize, 0usize), |(count, sum), len| (count + 1, sum + len));
        self.overhead() + sum + count.saturating_sub(1)
    }
}

/// Where a message's record goes in a merge: its group's `SequenceNumber` on a FIFO queue, else
/// its `SentTimestamp` and then its ID. A function of the message alone, so that the same messages
/// merge into the same bytes whatever order they were received in.
type MergeOrder = (Option<u128>, Option<u64>, String);

/// The most parts a row merges again for one message received out of merge order.
const MAX_REMERGED_PARTS: usize = 64;

fn merge_order(message: &Received) -> MergeOrder {
    (message.sequence, message.sent_at_ms, message.id.clone())
}

/// One record of a batch and every message that contributed to it, in receive order. The
/// worker's messages are leases; the batch logic needs only what was received (`M: AsRef<Received>`).
#[derive(Debug)]
pub struct Row<M = Lease> {
    /// The record's canonical JSON (see `Decoded`); what the body carries, byte for byte.
    pub encoded: String,
    /// The record as a map, kept once a merge needed it, so that later merges of the same key
    /// parse only the newcomer.
    fields: Option<Map<String, Value>>,
    /// Once merged: each message's own record, in merge order, so that a message received out of
    /// that order can be put in its place and the row merged again.
    parts: Vec<(MergeOrder, String)>,
    pub key: Option<String>,
    pub messages: Vec<M>,
}

impl<M: AsRef<Received>> Row<M> {
    /// Where the row goes in a body: a function of its messages alone, never of the order they
    /// were received in, so the same messages always make the same bytes under the same key.
    /// FIFO rows follow their group's sequence; standard-queue rows their smallest message ID.
    fn canonical_position(&self) -> Option<(Option<&str>, Option<u128>, &str)> {
        self.messages
            .iter()
            .map(|m| {
                let m = m.as_ref();
                (m.group_id.as_deref(), m.sequence, m.id.as_str())
            })
            .min()
    }

    pub fn new(decoded: Decoded, message: M) -> Self {
        Self {
            encoded: decoded.encoded,
            fields: None,
            parts: Vec::new(),
            key: decoded.key,
            messages: vec![message],
        }
    }

    /// Field-level merge with another record of the same key, in merge order (`merge_order`):
    /// a later record's fields win, a field keeps its first position, and `null` is kept so that
    /// the API clears the field. Only if the merged encoding is at most `max_len` bytes; otherwise
    /// the row is left as it was and the message is handed back.
    pub fn merge(&mut self, other: &str, message: M, max_len: usize) -> Result<(), Box<M>> {
        if self.parts.is_empty() {
            let first = merge_order(self.messages[0].as_ref());
            self.parts.push((first, self.encoded.clone()));
        }
        let order = merge_order(message.as_ref());
        let place = self.parts.partition_point(|(o, _)| *o < order);
        if place < self.parts.len() && self.parts.len() >= MAX_REMERGED_PARTS {
            // Merging out of order costs a parse of every part: past this many, the newcomer
            // starts the next batch instead (the batcher closes this one).
            return Err(Box::new(message));
        }
        let merged = if place == self.parts.len() {
            // The usual case: the newcomer is the latest, so it merges onto what is there.
            let mut fields = self
                .fields
                .take()
                .unwrap_or_else(|| Decoded::fields(&self.encoded));
            fields.extend(Decoded::fields(other));
            fields
        } else {
            // Received out of order: merge every part again, the newcomer in its place.
            let mut fields = Map::new();
            for (index, (_, part)) in self.parts.iter().enumerate() {
                if index == place {
                    fields.extend(Decoded::fields(other));
                }
                fields.extend(Decoded::fields(part));
            }
            fields
        };
        let encoded = serde_json::to_string(&merged).unwrap_or_default();
        if encoded.len() > max_len {
            // The row keeps its encoding and parses it again if it is ever merged (it is not: it
            // leaves with the batch this closes).
            return Err(Box::new(message));
        }
        self.parts.insert(place, (order, other.to_owned()));
        self.encoded = encoded;
        self.fields = Some(merged);
        self.messages.push(message);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushReason {
    Size,
    Bytes,
    Age,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Size => "size",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug)]
pub struct Batch<M = Lease> {
    pub rows: Vec<Row<M>>,
    pub reason: FlushReason,
    frame: Arc<BodyFrame>,
}

impl<M: AsRef<Received>> Batch<M> {
    /// A batch of these rows, put in their canonical order.
    pub fn new(mut rows: Vec<Row<M>>, reason: FlushReason, frame: Arc<BodyFrame>) -> Self {
        rows.sort_by(|a, b| a.canonical_position().cmp(&b.canonical_position()));
        Self {
            rows,
            reason,
            frame,
        }
    }

    /// The request body, byte for byte what the batcher accounted for.
    pub fn body(&self) -> Bytes {
        let mut body = String::with_capacity(self.body_len());
        body.push_str(self.frame.prefix);
        for (index, row) in self.rows.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str(&row.encoded);
        }
        body.push_str(&self.frame.suffix);
        Bytes::from(body)
    }

    pub fn body_len(&self) -> usize {
        self.frame
            .body_len(self.rows.iter().map(|row| row.encoded.len()))
    }

    pub fn messages(&self) -> impl Iterator<Item = &M> {
        self.rows.iter().flat_map(|row| row.messages.iter())
    }

    /// Takes out the rows that `pick` chooses; the rest stays, in order.
    pub fn extract(&mut self, pick: impl Fn(&Row<M>) -> bool) -> Vec<Row<M>> {
        let (picked, kept) = std::mem::take(&mut self.rows).into_iter().partition(pick);
        self.rows = kept;
        picked
    }

    pub fn message_count(&self) -> usize {
        self.rows.iter().map(|row| row.messages.len()).sum()
    }

    pub fn key(&self) -> String {
        key::batch_key(self.messages().map(|message| message.as_ref().id.as_str()))
    }

    /// The FIFO message groups this batch holds.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .messages()
            .filter_map(|m| m.as_ref().group_id.clone())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Splits into two halves by rows; `None` for a batch of one row.
    pub fn halves(mut self) -> Result<(Self, Self), Self> {
        if self.rows.len() < 2 {
            return Err(self);
        }
        let back = self.rows.split_off(self.rows.len() / 2);
        let back = Batch {
            rows: back,
            reason: self.reason,
            frame: self.frame.clone(),
        };
        Ok((self, back))
    }

    /// Takes out one row; the rest stays a batch (empty when it was the only row).
    pub fn take_row(&mut self, index: usize) -> Option<Row<M>> {
        (index < self.rows.len()).then(|| self.rows.remove(index))
    }
}

impl<M> Batch<M> {
    /// The same rows in the same order, each message turned into another form of itself (a
    /// held lease into a delivery's `Leased`, one deleted after its 202 into a `DeletedLease`).
    /// `f` must not change which message it is: the key and the body depend on the IDs.
    pub fn map_messages<N>(self, mut f: impl FnMut(M) -> N) -> Batch<N> {
        Batch {
            rows: self
                .rows
                .into_iter()
                .map(|row| Row {
                    encoded: row.encoded,
                    fields: row.fields,
                    parts: row.parts,
                    key: row.key,
                    messages: row.messages.into_iter().map(&mut f).collect(),
                })
                .collect(),
            reason: self.reason,
            frame: self.frame,
        }
    }

    pub fn messages_mut(&mut self) -> impl Iterator<Item = &mut M> {
        self.rows.iter_mut().flat_map(|row| row.messages.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::batcher::{Batcher, Limits};
    use crate::message::Received;
    use std::time::{Duration, Instant};

    pub fn decoded(json: &str, key: Option<&str>) -> Decoded {
        let record: Map<String, Value> = serde_json::from_str(json).unwrap();
        Decoded {
            encoded: serde_json::to_string(&record).unwrap(),
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn body_bytes_match_the_accounting() {
        for operation in [Operation::Upsert, Operation::Append] {
            let mut batcher = Batcher::new(Limits {
                max_records: 100,
                max_bytes: 10_000,
                max_wait: Duration::from_secs(5),
                operation,
                match_key: "email".into(),
            });
            let now = Instant::now();
            for i in 0..7 {
                let json = format!(r#"{{"email":"u{i}@x.io","tier":"t{i}"}}"#);
                let key = format!("u{i}@x.io");
                let m = Received::fake(&format!("m{i}"), &json);
                assert!(batcher.push(decoded(&json, Some(&key)), m, now).is_empty());
            }
            let batch = batcher.flush(FlushReason::Shutdown).unwrap();
            let body = batch.body();
            assert_eq!(body.len(), batch.body_len());
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed["records"].as_array().unwrap().len(), 7);
            if operation == Operation::Upsert {
                assert_eq!(parsed["matchKey"], "email");
            }
        }
    }

    /// The key is the sorted message IDs, so the body must not depend on the
    /// order the messages were received in, or a redelivery gets 422 KEY_REUSED.
    #[test]
    fn the_body_is_the_same_whatever_the_receive_order() {
        let body = |order: &[usize]| {
            let mut batcher = Batcher::new(Limits {
                max_records: 100,
                max_bytes: 10_000,
                max_wait: Duration::from_secs(5),
                operation: Operation::Append,
                match_key: "email".into(),
            });
            let now = Instant::now();
            for i in order {
                let json = format!(r#"{{"email":"u{i}@x.io"}}"#);
                let m = Received::fake(&format!("m{i}"), &json);
                batcher.push(decoded(&json, None), m, now);
            }
            batcher.flush(FlushReason::Shutdown).unwrap().body()
        };
        assert_eq!(body(&[0, 1, 2, 3]), body(&[2, 0, 3, 1]));
    }

    /// Upserts to one key merged in receive order made other bytes for the same
    /// messages, so a redelivery in another order got 422 KEY_REUSED (and was then deleted). The
    /// merge follows `SequenceNumber` (FIFO) or `SentTimestamp` and ID (standard).
    #[test]
    fn upserts_to_one_key_merge_the_same_whatever_the_receive_order() {
        let body = |order: &[usize], fifo: bool| {
            let mut batcher = Batcher::new(Limits {
                max_records: 100,
                max_bytes: 10_000,
                max_wait: Duration::from_secs(5),
                operation: Operation::Upsert,
                match_key: "email".into(),
            });
            let now = Instant::now();
            for &i in order {
                let json = format!(r#"{{"email":"a@x.io","tier":"t{i}","n{}":{i}}}"#, i % 2);
                let mut received = Received::fake(&format!("m{}", 9 - i), &json);
                if fifo {
                    received.group_id = Some("g".into());
                    received.sequence = Some(1000 + i as u128);
                } else {
                    received.sent_at_ms = Some(1_700_000_000_000 + i as u64);
                }
                batcher.push(decoded(&json, Some("a@x.io")), received, now);
            }
            let batch = batcher.flush(FlushReason::Shutdown).unwrap();
            assert_eq!(batch.rows.len(), 1);
            String::from_utf8(batch.body().to_vec()).unwrap()
        };
        for fifo in [true, false] {
            let in_order = body(&[0, 1, 2, 3], fifo);
            assert!(
                in_order.contains(r#""tier":"t3","n0":2,"n1":3"#),
                "{in_order}"
            );
            for order in [[3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
                assert_eq!(body(&order, fifo), in_order, "fifo {fifo}, order {order:?}");
            }
        }
    }
}
