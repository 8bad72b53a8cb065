//! Carrying out fates against SQS: delete in groups of 10 with every entry checked, release with
//! visibility 0, dead-letter then delete. A message leaves the source only after it was accepted or
//! its DLQ copy was sent.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::message::Received;
use crate::outcome::{Reason, Rejection, Settlement};
use crate::sqs::{Holdings, Queue, dlq};
use crate::telemetry::Telemetry;

/// SendMessageBatch takes at most 256 KiB in all; stay under it with room for attributes.
const SEND_BATCH_BYTES: usize = 200 * 1024;
const ENTRY_ATTEMPTS: u32 = 4;
/// An already-deleted message has nowhere else to go, so its DLQ copy is tried for longer.
const DELETED_DLQ_ATTEMPTS: u32 = 10;
/// DeleteMessageBatch calls in flight for one batch: a 1,000-message batch is 100 calls, and
/// issuing them one after another kept its capacity held for half a second.
const CONCURRENT_DELETES: usize = 8;

pub struct Acks {
    pub source: Queue,
    pub dlq: Queue,
    pub holdings: Arc<Holdings>,
    pub telemetry: Arc<Telemetry>,
}

async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(8)))).await;
}

impl Acks {
    /// Deletes messages, retrying refused entries; stale receipts are counted and logged.
    pub async fn delete(&self, messages: &[Arc<Received>]) {
        futures::stream::iter(messages.chunks(10))
            .for_each_concurrent(CONCURRENT_DELETES, |group| self.delete_group(group))
            .await;
    }

    async fn delete_group(&self, group: &[Arc<Received>]) {
        {
            let mut pending: Vec<&Arc<Received>> = group.iter().collect();
            for attempt in 0..ENTRY_ATTEMPTS {
                let receipts: Vec<&str> = pending.iter().map(|m| m.receipt.as_str()).collect();
                let failed = match self.source.delete_batch(&receipts).await {
                    Ok(failed) => failed,
                    Err(error) => {
                        tracing::warn!(%error, attempt, "DeleteMessageBatch failed");
                        pause(attempt).await;
                        continue;
                    }
                };
                let mut retry = Vec::new();
                for failure in &failed {
                    let Some(message) = pending.get(failure.index) else {
                        continue;
                    };
                    if failure.is_stale_receipt() {
                        self.telemetry.stale_receipt(&message.id, &failure.code);
                    } else {
                        self.telemetry.delete_failed(&message.id, &failure.code);
                        retry.push(*message);
                    }
                }
                let done: Vec<&Arc<Received>> = pending
                    .iter()
                    .filter(|m| !retry.iter().any(|r| r.id == m.id))
                    .copied()
                    .collect();
                let deleted = done.len() - failed.iter().filter(|f| f.is_stale_receipt()).count();
                self.telemetry.deleted(deleted);
                self.holdings.forget(done.iter().map(|m| m.id.as_str()));
                pending = retry;
                if pending.is_empty() {
                    break;
                }
                pause(attempt).await;
            }
            // Still refused after every attempt: let go of them, and SQS redelivers them when their
            // visibility runs out. Holding on would extend their visibility forever.
            self.holdings.forget(pending.iter().map(|m| m.id.as_str()));
        }
    }

    /// Makes messages visible again at once, so SQS redelivers them and counts the receive.
    pub async fn release(&self, messages: &[Arc<Received>], why: &str) {
        for group in messages.chunks(10) {
            let receipts: Vec<&str> = group.iter().map(|m| m.receipt.as_str()).collect();
            match self.source.change_visibility_batch(&receipts, 0).await {
                Ok(failed) => {
                    for failure in failed {
                        tracing::warn!(
                            code = failure.code,
                            "release refused; the message reappears when its visibility ends"
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "release failed; the messages reappear when their visibility ends")
                }
            }
            self.telemetry.released(group.len(), why);
            self.holdings.forget(group.iter().map(|m| m.id.as_str()));
        }
    }

    /// Sends DLQ copies; returns (sent, not sent).
    pub async fn dead_letter(
        &self,
        items: Vec<(Arc<Received>, Rejection)>,
        attempts: u32,
    ) -> (Vec<Arc<Received>>, Vec<Arc<Received>>) {
        let fifo = self.dlq.is_fifo();
        let mut sent = Vec::new();
        let mut unsent = Vec::new();
        for group in pack(items) {
            let mut pending = group;
            for attempt in 0..attempts {
                let entries = pending
                    .iter()
                    .enumerate()
                    .map(|(index, (message, rejection))| {
                        dlq::entry(index, message, rejection, self.source.url(), fifo)
                    })
                    .collect();
                let failed = match self.dlq.send_batch(entries).await {
                    Ok(failed) => failed,
                    Err(error) => {
                        tracing::warn!(%error, attempt, "SendMessageBatch to the DLQ failed");
                        pause(attempt).await;
                        continue;
                    }
                };
                let (mut retry, mut done) = (Vec::new(), Vec::new());
                for (index, item) in pending.into_iter().enumerate() {
                    match failed.iter().find(|f| f.index == index) {
                        Some(failure) => {
                            tracing::warn!(
                                message_id = item.0.id,
                                code = failure.code,
                                "DLQ entry refused"
                            );
                            retry.push(item);
                        }
                        None => done.push(item),
                    }
                }
                for (message, rejection) in done {
                    self.telemetry
                        .dead_lettered(&message.id, rejection.reason, &rejection.message);
                    sent.push(message);
                }
                pending = retry;
                if pending.is_empty() {
                    break;
                }
                pause(attempt).await;
            }
            unsent.extend(pending.into_iter().map(|(message, _)| message));
        }
        (sent, unsent)
    }

    /// Carries out a settlement. `deleted`: the messages already left the source (`--ack-on
    /// accepted` after a 202), so nothing can be released and rejects must reach the DLQ.
    pub async fn settle(&self, mut settlement: Settlement, deleted: bool) {
        if deleted && !settlement.retry.is_empty() {
            let rejection = Rejection::new(
                Reason::JobFailed,
                "the batch could not be delivered again after its job failed, and the message was \
                 already deleted (--ack-on accepted)",
            );
            let retry = std::mem::take(&mut settlement.retry);
            settlement
                .rejected
                .extend(retry.into_iter().map(|m| (m, rejection.clone())));
        }
        if !deleted {
            self.delete(&settlement.delivered).await;
        }
        let attempts = if deleted {
            DELETED_DLQ_ATTEMPTS
        } else {
            ENTRY_ATTEMPTS
        };
        let (sent, unsent) = self.dead_letter(settlement.rejected, attempts).await;
        if deleted {
            for message in &unsent {
                self.telemetry
                    .dlq_lost(&message.id, "the DLQ refused the message on every attempt");
            }
            return;
        }
        self.delete(&sent).await;
        for message in &unsent {
            self.telemetry
                .dlq_send_failed(&message.id, "the DLQ refused it on every attempt");
        }
        settlement.retry.extend(unsent);
        self.release(&settlement.retry, "could not be settled now")
            .await;
    }
}

/// Groups DLQ items into SendMessageBatch calls: at most 10 entries and about 200 KiB each.
fn pack(items: Vec<(Arc<Received>, Rejection)>) -> Vec<Vec<(Arc<Received>, Rejection)>> {
    let mut groups: Vec<Vec<(Arc<Received>, Rejection)>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.0.body.len() + dlq::MAX_ERROR_MESSAGE + 512;
        match groups.last_mut() {
            Some(group) if group.len() < 10 && bytes + size <= SEND_BATCH_BYTES => {
                bytes += size;
                group.push(item);
            }
            _ => {
                bytes = size;
                groups.push(vec![item]);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_respects_count_and_size() {
        let item = |size: usize| {
            (
                Arc::new(Received::fake("m", &"x".repeat(size))),
                Rejection::new(Reason::Oversize, ""),
            )
        };
        let groups = pack((0..25).map(|_| item(10)).collect());
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        let groups = pack((0..3).map(|_| item(150 * 1024)).collect());
        assert_eq!(groups.len(), 3);
    }
}
