//! Carrying out fates against SQS. Settling consumes leases: a delivered message is deleted, a
//! rejected one is dead-lettered and then deleted, one to retry is released with a visibility that
//! grows with its receive count. A message leaves the source only after it was accepted or its DLQ
//! copy was sent, and a message that already left (deleted after a 202) can never be released.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::lease::ledger::Releasable;
use crate::lease::{DeletedLease, Lease, Leased, Ledger};
use crate::message::Received;
use crate::outcome::Settle;
use crate::outcome::release_visibility;
use crate::outcome::{Rejection, Settlement};
use crate::source::dlq;
use crate::source::envelope::Envelope;
use crate::sqs::Sqs;
use crate::sqs::entries::per_entry;
use crate::telemetry::Telemetry;

const ENTRY_ATTEMPTS: usize = 4;
/// An already-deleted message has nowhere else to go, so its DLQ copy is tried for longer.
const DELETED_DLQ_ATTEMPTS: usize = 10;
/// Batch calls in flight for one settlement: a 1,000-message batch is 100 calls, and issuing
/// them one after another kept its capacity held for half a second.
const CONCURRENT_CALLS: usize = 8;
/// The settler: carries out fates against the source queue and the DLQ.
pub struct Settler {
    pub source: Arc<dyn Sqs>,
    pub dlq: Arc<dyn Sqs>,
    pub ledger: Arc<Ledger>,
    pub telemetry: Arc<Telemetry>,
    /// The first release's visibility (`--release-backoff`) and the most it grows to.
    pub release_base: Duration,
    pub release_cap: Duration,
    /// The DLQ's `MaximumMessageSize`, in bytes.
    pub dlq_max_bytes: usize,
    /// `--envelope`: whose ID a DLQ copy carries.
    pub envelope: Envelope,
}

/// One message to make visible again: its receipt's owner, after how long, and its FIFO group.
struct Release {
    id: String,
    generation: u64,
    visibility: Duration,
    group_id: Option<String>,
    sequence: Option<u128>,
    /// Spent once SQS answered for it; none for an orphan's or the shutdown's release.
    lease: Option<Lease>,
}

impl Settler {
    /// Deletes the held messages, retrying refused entries (with the newest receipt, when SQS
    /// handed out another copy meanwhile). Returns the generations that left the queue: deleted,
    /// or no longer ours (a stale receipt). The others are still in the queue.
    pub fn delete(&self, leases: Vec<&Lease>) -> impl Future<Output = HashSet<u64>> + Send + '_ {
        // Owned (ID, generation) pairs: the receipts are read from the ledger at each attempt.
        let holdings: Vec<(String, u64)> = leases
            .into_iter()
            .map(|lease| (lease.id.clone(), lease.generation()))
            .collect();
        async move {
            futures::stream::iter(calls_of_ten(holdings))
                .map(|group| self.delete_group(group))
                .buffer_unordered(CONCURRENT_CALLS)
                .concat()
                .await
                .into_iter()
                .collect()
        }
    }

    async fn delete_group(&self, group: Vec<(String, u64)>) -> Vec<u64> {
        let sent: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());
        let receipt = |(id, generation): &(String, u64)| self.ledger.receipt(id, *generation);
        let outcome = per_entry(
            group,
            ENTRY_ATTEMPTS,
            |holdings: &[(String, u64)]| {
                let receipts: Vec<Option<String>> = holdings.iter().map(receipt).collect();
                *sent.lock().unwrap_or_else(|p| p.into_inner()) = receipts.clone();
                let call = Receipts::of(receipts);
                Box::pin(async move {
                    let failures = if call.receipts.is_empty() {
                        Vec::new()
                    } else {
                        let receipts: Vec<&str> =
                            call.receipts.iter().map(String::as_str).collect();
                        self.source.delete_batch(&receipts).await?
                    };
                    Ok(call.entry_failures(failures))
                })
            },
            |holding, failure| {
                !failure.is_stale_receipt()
                    || sent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(failure.index)
                        .is_some_and(|used| *used != receipt(holding))
            },
        )
        .await;
        self.telemetry.deleted(outcome.done.len());
        let mut gone = outcome.done;
        for ((id, generation), code) in outcome.refused {
            if crate::sqs::EntryFailure::is_stale_receipt_code(&code) {
                // The message is gone, or SQS gave it to another consumer: it is not ours.
                self.telemetry.stale_receipt(&id, &code);
                gone.push((id, generation));
            } else {
                self.telemetry.delete_failed(&id, &code);
            }
        }
        // Forgotten at once, so the heartbeat stops extending what left the queue.
        self.ledger.forget(
            gone.iter()
                .map(|(id, generation)| (id.as_str(), *generation)),
        );
        gone.into_iter().map(|(_, generation)| generation).collect()
    }

    /// Deletes held messages whose fate is done; returns those whose delete never went through
    /// (still in the queue).
    async fn delete_for_good(&self, leases: Vec<Lease>) -> Vec<Lease> {
        if leases.is_empty() {
            return leases;
        }
        let gone = self.delete(leases.iter().collect()).await;
        let (gone, undeleted): (Vec<Lease>, Vec<Lease>) = leases
            .into_iter()
            .partition(|lease| gone.contains(&lease.generation()));
        gone.into_iter().for_each(Lease::spend);
        undeleted
    }

    /// Makes held messages visible again, each after its backoff, and marks their FIFO groups
    /// so that later messages of the group follow them back. Only a held `Lease` can be
    /// released: a deleted message has no way back but the DLQ.
    async fn release(&self, leases: Vec<Lease>, why: &str) {
        let releases = leases
            .into_iter()
            .map(|lease| Release {
                visibility: self.backoff(&lease),
                generation: lease.generation(),
                id: lease.id.clone(),
                group_id: lease.group_id.clone(),
                sequence: lease.sequence,
                lease: Some(lease),
            })
            .collect();
        self.release_all(releases, why).await;
    }

    /// Releases the orphans of leases dropped unsettled; returns how many.
    pub async fn release_orphans(&self) -> usize {
        let orphans = self.ledger.take_orphans();
        let count = orphans.len();
        if count > 0 {
            self.telemetry.orphans_released(count);
            let releases = orphans
                .into_iter()
                .map(|orphan| self.release_of(orphan))
                .collect();
            self.release_all(releases, "its task ended without settling it")
                .await;
        }
        count
    }

    /// Releases every held message at once, for the shutdown: another worker may take them now.
    pub async fn release_everything(&self) -> usize {
        let held = self.ledger.all();
        let count = held.len();
        let releases = held
            .into_iter()
            .map(|held| Release {
                id: held.id,
                generation: held.generation,
                visibility: Duration::ZERO,
                group_id: None,
                sequence: None,
                lease: None,
            })
            .collect();
        self.release_all(releases, "shutdown").await;
        count
    }

    fn release_of(&self, held: Releasable) -> Release {
        Release {
            visibility: release_visibility(self.release_base, held.receive_count, self.release_cap),
            generation: held.generation,
            id: held.id,
            group_id: held.group_id,
            sequence: held.sequence,
            lease: None,
        }
    }

    fn backoff(&self, message: &Received) -> Duration {
        release_visibility(self.release_base, message.receive_count, self.release_cap)
    }

    async fn release_all(&self, releases: Vec<Release>, why: &str) {
        let now = Instant::now();
        for release in &releases {
            if let Some(group) = &release.group_id {
                self.ledger.released_groups().released(
                    (&release.id, group, release.sequence),
                    now,
                    release.visibility,
                );
            }
        }
        futures::stream::iter(calls_of_ten(releases))
            .for_each_concurrent(CONCURRENT_CALLS, |group| self.release_group(group, why))
            .await;
    }

    /// Releases up to 10 messages. Their ledger entries go first, so the heartbeat does not
    /// extend what is being released; a release SQS refuses for good leaves the message to
    /// reappear when its visibility ends.
    async fn release_group(&self, group: Vec<Release>, why: &str) {
        let items: Vec<(String, i32, Release)> = group
            .into_iter()
            .filter_map(|release| {
                let receipt = self.ledger.receipt(&release.id, release.generation)?;
                let seconds = release.visibility.as_millis().div_ceil(1000) as i32;
                Some((receipt, seconds, release))
            })
            .collect();
        self.ledger.forget(
            items
                .iter()
                .map(|(_, _, release)| (release.id.as_str(), release.generation)),
        );
        let longest = items
            .iter()
            .map(|(_, _, r)| r.visibility)
            .max()
            .unwrap_or_default();
        let outcome = per_entry(
            items,
            ENTRY_ATTEMPTS,
            |items: &[(String, i32, Release)]| {
                let entries: Vec<(String, i32)> =
                    items.iter().map(|(r, s, _)| (r.clone(), *s)).collect();
                Box::pin(async move {
                    let entries: Vec<(&str, i32)> =
                        entries.iter().map(|(r, s)| (r.as_str(), *s)).collect();
                    self.source.change_visibility_batch(&entries).await
                })
            },
            |_, failure| !failure.is_stale_receipt(),
        )
        .await;
        self.telemetry.released(outcome.done.len(), why, longest);
        for (_, _, release) in outcome.done {
            release.lease.into_iter().for_each(Lease::spend);
        }
        for ((_, _, release), code) in outcome.refused {
            tracing::warn!(
                message_id = release.id,
                code,
                "release refused; the message reappears when its visibility ends"
            );
            release.lease.into_iter().for_each(Lease::spend);
        }
    }

    /// Sends DLQ copies; returns (sent, not sent).
    pub async fn dead_letter(&self, items: Vec<(Leased, Rejection)>) -> (Vec<Leased>, Vec<Leased>) {
        let fifo = self.dlq.is_fifo();
        let packed = pack(items, self.dlq_max_bytes, self.envelope);
        let outcomes: Vec<_> = futures::stream::iter(packed)
            .map(|group| {
                let attempts = if group.iter().any(|(lease, _)| lease.is_deleted()) {
                    DELETED_DLQ_ATTEMPTS
                } else {
                    ENTRY_ATTEMPTS
                };
                per_entry(
                    group,
                    attempts,
                    move |items: &[(Leased, Rejection)]| {
                        let entries = items
                            .iter()
                            .enumerate()
                            .map(|(index, (message, rejection))| {
                                dlq::entry(
                                    index,
                                    message,
                                    rejection,
                                    dlq::CopyTo {
                                        source_queue: self.source.url(),
                                        fifo_dlq: fifo,
                                        max_message_bytes: self.dlq_max_bytes,
                                        envelope: self.envelope,
                                    },
                                )
                            })
                            .collect();
                        Box::pin(self.dlq.send_batch(entries))
                    },
                    |_, _| true,
                )
            })
            .buffered(CONCURRENT_CALLS)
            .collect()
            .await;
        let mut sent = Vec::new();
        let mut unsent = Vec::new();
        for outcome in outcomes {
            for (message, rejection) in outcome.done {
                self.telemetry.dead_lettered(
                    &message.id,
                    message.message_group(),
                    rejection.reason.as_str(),
                    &rejection.message,
                );
                sent.push(message);
            }
            for ((message, _), code) in outcome.refused {
                tracing::warn!(message_id = message.id, code, "DLQ entry refused");
                unsent.push(message);
            }
        }
        (sent, unsent)
    }

    /// Carries out a settlement, consuming its leases. A message leaves the source only after
    /// it was accepted or its DLQ copy was sent; a delete that never went through leaves it in
    /// the queue, so it is released and delivered again (a replay under the same key, or
    /// idempotent for upserts).
    pub async fn settle(&self, settlement: Settlement) {
        let Settlement {
            delete,
            release,
            dead_letter,
            done,
        } = settlement;
        done.into_iter().for_each(DeletedLease::settled);
        let undeleted = self.delete_for_good(delete).await;
        self.release(undeleted, "its delete failed").await;
        let (sent, unsent) = self.dead_letter(dead_letter).await;
        let mut sent_held = Vec::new();
        for message in sent {
            match message {
                Leased::Held(lease) => sent_held.push(lease),
                Leased::Deleted(lease) => lease.settled(),
            }
        }
        // As above: the DLQ copy is sent, and a second one may follow the redelivery.
        let undeleted = self.delete_for_good(sent_held).await;
        self.release(undeleted, "its delete failed").await;
        let mut retry = release;
        for message in unsent {
            match message {
                Leased::Deleted(lease) => {
                    lease.lost("the DLQ refused the message on every attempt")
                }
                Leased::Held(lease) => {
                    self.telemetry
                        .dlq_send_failed(&lease.id, "the DLQ refused it on every attempt");
                    retry.push(lease);
                }
            }
        }
        self.release(retry, "could not be settled now").await;
    }
}

impl Settle for Settler {
    fn settle(&self, settlement: Settlement) -> BoxFuture<'_, ()> {
        Box::pin(Settler::settle(self, settlement))
    }

    fn delete<'a>(&'a self, leases: Vec<&'a Lease>) -> BoxFuture<'a, HashSet<u64>> {
        Box::pin(Settler::delete(self, leases))
    }
}

/// Owned groups of at most 10 entries, one SQS batch call each.
fn calls_of_ten<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut groups = Vec::with_capacity(items.len().div_ceil(10));
    let mut items = items.into_iter();
    loop {
        let group: Vec<T> = items.by_ref().take(10).collect();
        if group.is_empty() {
            return groups;
        }
        groups.push(group);
    }
}

/// Groups DLQ items into SendMessageBatch calls: at most 10 entries and about 200 KiB each, or
/// one entry alone when it is bigger.
fn pack<M: AsRef<Received>>(
    items: Vec<(M, Rejection)>,
    max_message_bytes: usize,
    envelope: Envelope,
) -> Vec<Vec<(M, Rejection)>> {
    let batch_bytes = dlq::SEND_BATCH_BYTES.min(max_message_bytes.max(1));
    let mut groups: Vec<Vec<(M, Rejection)>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = dlq::entry_bytes(item.0.as_ref(), &item.1, envelope);
        match groups.last_mut() {
            Some(group) if group.len() < 10 && bytes + size <= batch_bytes => {
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

/// The receipts one call sends. An entry whose holding was forgotten meanwhile has no receipt:
/// it is not sent (an empty handle would make SQS refuse the whole call, and with it the other
/// nine deletes) and is answered at once as [`NO_RECEIPT`], which reads as a stale receipt.
struct Receipts {
    /// `places[i]` is the entry that the i-th sent receipt belongs to.
    places: Vec<usize>,
    receipts: Vec<String>,
    missing: Vec<usize>,
}

/// The code an entry without a receipt is refused with; it names a receipt handle, so
/// `is_stale_receipt` holds for it.
const NO_RECEIPT: &str = "NoReceiptHandleHeld";

impl Receipts {
    fn of(entries: Vec<Option<String>>) -> Self {
        let mut call = Self {
            places: Vec::new(),
            receipts: Vec::new(),
            missing: Vec::new(),
        };
        for (index, receipt) in entries.into_iter().enumerate() {
            match receipt {
                Some(receipt) => {
                    call.places.push(index);
                    call.receipts.push(receipt);
                }
                None => call.missing.push(index),
            }
        }
        call
    }

    /// SQS's failures, which index the receipts sent, as failures of the entries; and one for
    /// each entry that was not sent.
    fn entry_failures(
        &self,
        failures: Vec<crate::sqs::EntryFailure>,
    ) -> Vec<crate::sqs::EntryFailure> {
        failures
            .into_iter()
            .filter_map(|failure| {
                let index = *self.places.get(failure.index)?;
                Some(crate::sqs::EntryFailure { index, ..failure })
            })
            .chain(self.missing.iter().map(|&index| crate::sqs::EntryFailure {
                index,
                code: NO_RECEIPT.to_owned(),
                sender_fault: true,
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;

    /// A delete that SQS refuses on every attempt is an outcome, not a drop: the message is
    /// released at once with its backoff (10 s doubled twice for a third receive), its claim is
    /// spent, and nothing is left for the orphan path.
    #[tokio::test(start_paused = true)]
    async fn a_delete_refused_on_every_attempt_releases_the_message_with_its_backoff() {
        use crate::fakes::{self, FakeQueue};
        use crate::outcome::Fate;
        let queue = Arc::new(FakeQueue {
            url: "https://sqs.example/q".into(),
            refuse_deletes: Some("InternalError"),
            ..Default::default()
        });
        let ledger = Ledger::new(Duration::from_secs(30));
        let telemetry = Arc::new(Telemetry::new());
        let settler = Settler {
            source: queue.clone(),
            dlq: Arc::new(FakeQueue::default()),
            ledger: ledger.clone(),
            telemetry: telemetry.clone(),
            release_base: Duration::from_secs(10),
            release_cap: Duration::from_secs(900),
            dlq_max_bytes: 256 * 1024,
            envelope: Envelope::None,
        };
        let mut message = Received::fake("m1", "{}");
        message.receive_count = 3;
        let mut settlement = Settlement::default();
        settlement.add(fakes::held(&ledger, message), Fate::Delivered);
        settler.settle(settlement).await;
        let deletes = queue.deletes.lock().unwrap().clone();
        assert_eq!(deletes.len(), ENTRY_ATTEMPTS);
        assert!(deletes.iter().all(|call| call == &["r-m1"]));
        assert_eq!(
            *queue.visibility.lock().unwrap(),
            [vec![("r-m1".to_owned(), 40)]],
            "10 s x 2^(3-1)"
        );
        assert!(ledger.is_empty() && ledger.take_orphans().is_empty());
        let counts = telemetry.counts();
        assert_eq!((counts.deleted, counts.released), (0, 1));
    }

    /// A rejected message is dead-lettered first and deleted after, never the other way round.
    #[tokio::test(start_paused = true)]
    async fn a_rejected_message_is_dead_lettered_then_deleted() {
        use crate::fakes::{self, FakeQueue};
        use crate::outcome::Fate;
        let queue = Arc::new(FakeQueue::default());
        let dlq = Arc::new(FakeQueue::default());
        let ledger = Ledger::new(Duration::from_secs(30));
        let settler = Settler {
            source: queue.clone(),
            dlq: dlq.clone(),
            ledger: ledger.clone(),
            telemetry: Arc::new(Telemetry::new()),
            release_base: Duration::from_secs(10),
            release_cap: Duration::from_secs(900),
            dlq_max_bytes: 256 * 1024,
            envelope: Envelope::None,
        };
        let mut settlement = Settlement::default();
        let rejection = Rejection::new(Reason::InvalidRow, "bad");
        let lease = fakes::held(&ledger, Received::fake("m1", "{}"));
        settlement.add(lease, Fate::Rejected(rejection));
        settler.settle(settlement).await;
        assert_eq!(*dlq.sent.lock().unwrap(), 1);
        assert_eq!(*queue.deletes.lock().unwrap(), [vec!["r-m1".to_owned()]]);
        assert!(queue.visibility.lock().unwrap().is_empty());
        assert!(ledger.is_empty() && ledger.take_orphans().is_empty());
    }

    /// Each call's entries own only their ten places: splitting off the rest used to leave every
    /// group with the capacity of everything after it, 240 MB for one 10,000-message batch.
    #[test]
    fn calls_of_ten_keep_ten_places_each() {
        let groups = calls_of_ten((0..1_000).collect::<Vec<u32>>());
        assert_eq!(groups.len(), 100);
        assert!(groups.iter().all(|g| g.len() == 10 && g.capacity() <= 10));
        let flat: Vec<u32> = groups.into_iter().flatten().collect();
        assert_eq!(flat, (0..1_000).collect::<Vec<u32>>());
        assert_eq!(
            calls_of_ten((0..25).collect::<Vec<u32>>())
                .last()
                .map(Vec::len),
            Some(5)
        );
        assert!(calls_of_ten(Vec::<u32>::new()).is_empty());
    }

    #[test]
    fn packing_respects_count_and_size() {
        let item = |size: usize| {
            (
                Received::fake("m", &"x".repeat(size)),
                Rejection::new(Reason::Oversize, ""),
            )
        };
        let groups = pack(
            (0..25).map(|_| item(10)).collect(),
            256 * 1024,
            Envelope::None,
        );
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        let groups = pack(
            (0..3).map(|_| item(150 * 1024)).collect(),
            256 * 1024,
            Envelope::None,
        );
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn release_visibility_doubles_per_receive_up_to_the_cap() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(900);
        let table = [
            (0, 10),
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 80),
            (5, 160),
            (7, 640),
            (8, 900),
            (u32::MAX, 900),
        ];
        for (receive_count, seconds) in table {
            assert_eq!(
                release_visibility(base, receive_count, cap),
                Duration::from_secs(seconds),
                "receive {receive_count}"
            );
        }
        assert_eq!(
            release_visibility(Duration::from_secs(u64::MAX / 2), 30, Duration::MAX),
            crate::outcome::MAX_VISIBILITY
        );
    }

    #[test]
    fn an_entry_without_a_receipt_is_not_sent_and_reads_as_stale() {
        let call = Receipts::of(vec![
            Some("r0".to_owned()),
            None,
            Some("r2".to_owned()),
            None,
        ]);
        assert_eq!(call.receipts, ["r0", "r2"], "no empty handle is sent");
        let sqs_failure = crate::sqs::EntryFailure {
            index: 1,
            code: "InternalError".to_owned(),
            sender_fault: false,
        };
        let failures = call.entry_failures(vec![sqs_failure]);
        let by_entry: Vec<(usize, &str)> = failures
            .iter()
            .map(|f| (f.index, f.code.as_str()))
            .collect();
        assert_eq!(
            by_entry,
            [(2, "InternalError"), (1, NO_RECEIPT), (3, NO_RECEIPT)],
            "SQS's index 1 is entry 2; entries 1 and 3 were never sent"
        );
        assert!(failures[1].is_stale_receipt());
        assert!(
            Receipts::of(vec![None, None]).receipts.is_empty(),
            "no call at all"
        );
    }
}
