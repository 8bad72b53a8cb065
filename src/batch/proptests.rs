//! Property: whatever the limits and whatever the input, batching (with coalescing) followed by any
//! number of recursive splits keeps every message exactly once, and every batch stays in its limits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::batcher::{Batcher, Limits};
use super::{Batch, FlushReason};
use crate::batch::Decoded;
use crate::config::Operation;
use crate::message::Received;

/// The i-th message sent: merges follow `SentTimestamp`, as on a standard queue.
fn sent(i: usize, body: &str) -> Received {
    let mut message = Received::fake(&format!("m-{i}"), body);
    message.sent_at_ms = Some(1_700_000_000_000 + i as u64);
    message
}

fn decoded(record: Value, match_key: Option<String>) -> Decoded {
    let Value::Object(record) = record else {
        unreachable!("the generator makes objects")
    };
    let record: Map<String, Value> = record;
    Decoded {
        encoded: serde_json::to_string(&record).expect("a map serializes"),
        key: match_key,
    }
}

/// Splits a batch recursively to `depth`, as a chain of 413s would.
fn split(batch: Batch<Received>, depth: u8, out: &mut Vec<Batch<Received>>) {
    if depth == 0 {
        out.push(batch);
        return;
    }
    match batch.halves() {
        Ok((front, back)) => {
            split(front, depth - 1, out);
            split(back, depth - 1, out);
        }
        Err(one) => out.push(one),
    }
}

proptest! {
    #[test]
    fn every_message_survives_batching_and_splitting_exactly_once(
        // (email index, tier) per message; few emails so that coalescing happens often.
        inputs in prop::collection::vec((0usize..12, "[a-z]{0,40}"), 1..300),
        max_records in 1usize..40,
        max_bytes in 200usize..3_000,
        depth in 0u8..6,
        upsert in any::<bool>(),
    ) {
        let operation = if upsert { Operation::Upsert } else { Operation::Append };
        let mut batcher = Batcher::new(Limits {
            max_records,
            max_bytes,
            max_wait: Duration::from_secs(5),
            operation,
            match_key: "email".into(),
        });
        let now = Instant::now();
        let mut batches = Vec::new();
        for (i, (email, tier)) in inputs.iter().enumerate() {
            let email = format!("user{email}@example.com");
            let record = json!({"email": email, "tier": tier});
            let message = sent(i, &record.to_string());
            batches.extend(batcher.push(decoded(record, Some(email)), message, now));
        }
        batches.extend(batcher.flush(FlushReason::Shutdown));

        let mut leaves = Vec::new();
        for batch in batches {
            prop_assert!(batch.rows.len() <= max_records);
            prop_assert!(batch.body_len() <= max_bytes);
            prop_assert_eq!(batch.body().len(), batch.body_len());
            split(batch, depth, &mut leaves);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for leaf in &leaves {
            prop_assert!(!leaf.rows.is_empty());
            prop_assert_eq!(leaf.body().len(), leaf.body_len());
            for message in leaf.messages() {
                *seen.entry(message.id.clone()).or_default() += 1;
            }
        }
        prop_assert_eq!(seen.len(), inputs.len());
        prop_assert!(seen.values().all(|&count| count == 1));
    }

    #[test]
    fn coalescing_keeps_the_last_value_of_each_field(
        tiers in prop::collection::vec("[a-z]{1,8}", 1..50),
    ) {
        let mut batcher = Batcher::new(Limits {
            max_records: 10_000,
            max_bytes: 1_000_000,
            max_wait: Duration::from_secs(5),
            operation: Operation::Upsert,
            match_key: "email".into(),
        });
        let now = Instant::now();
        for (i, tier) in tiers.iter().enumerate() {
            let record = json!({"email": "same@example.com", "tier": tier});
            let message = sent(i, &record.to_string());
            let flushed = batcher.push(decoded(record, Some("same@example.com".into())), message, now);
            prop_assert!(flushed.is_empty());
        }
        let batch = batcher.flush(FlushReason::Shutdown).expect("something is buffered");
        prop_assert_eq!(batch.rows.len(), 1);
        prop_assert_eq!(batch.message_count(), tiers.len());
        prop_assert_eq!(&Decoded::fields(&batch.rows[0].encoded)["tier"], &json!(tiers.last().expect("non-empty")));
    }
}
