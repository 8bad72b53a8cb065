//! The order of a FIFO group's messages inside the worker. The worker merges upserts, orders
//! rows and sends a released message's followers back by it. It numbers each FIFO message in the
//! order it was received: a FIFO queue delivers a group strictly in order, and its later messages
//! only after the earlier ones were deleted or came back, so this is the group's order, and the
//! same messages received again keep their relative order (so the same batch makes the same
//! bytes). AWS's `SequenceNumber` would give the same order, but not every SQS has a usable one:
//! moto's server assigns random numbers, which the worker notes in its log once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::message::Received;

#[derive(Default)]
pub struct Sequences {
    noted_random: AtomicBool,
    received: AtomicU64,
}

impl Sequences {
    /// Numbers one receive's FIFO messages in the order SQS returned them.
    pub fn number(&self, messages: &mut [(Received, String)]) {
        if !increasing_by_group(messages) && !self.noted_random.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "this SQS returned a FIFO group's messages with SequenceNumbers that do not \
                 increase (moto's server assigns random ones); the worker orders groups by the \
                 order it receives them in, as it always does"
            );
        }
        for (message, _) in messages.iter_mut() {
            if message.group_id.is_some() {
                let n = self.received.fetch_add(1, Ordering::Relaxed);
                message.sequence = Some(u128::from(n));
            }
        }
    }
}

/// True when, within each group, the messages' sequence numbers increase in the order given.
fn increasing_by_group(messages: &[(Received, String)]) -> bool {
    let mut last: HashMap<&str, u128> = HashMap::new();
    for (message, _) in messages {
        let (Some(group), Some(sequence)) = (message.group_id.as_deref(), message.sequence) else {
            continue;
        };
        if let Some(previous) = last.insert(group, sequence)
            && previous >= sequence
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(id: &str, group: &str, sequence: u128) -> (Received, String) {
        let mut message = Received::fake(id, "{}");
        message.group_id = Some(group.into());
        message.sequence = Some(sequence);
        (message, String::new())
    }

    #[test]
    fn fifo_messages_are_numbered_in_the_order_they_were_received() {
        let sequences = Sequences::default();
        let mut moto = vec![fifo("d", "g", 90), fifo("e", "g", 12), fifo("x", "h", 1)];
        sequences.number(&mut moto);
        assert!(
            moto[0].0.sequence < moto[1].0.sequence,
            "receive order, not 90 > 12"
        );
        let mut later = vec![fifo("f", "g", 5)];
        sequences.number(&mut later);
        assert!(
            later[0].0.sequence > moto[2].0.sequence,
            "and on across receives"
        );
        let mut standard = vec![(Received::fake("s", "{}"), String::new())];
        sequences.number(&mut standard);
        assert_eq!(standard[0].0.sequence, None, "standard messages have none");
    }
}
