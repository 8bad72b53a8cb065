//! The ledger of messages the worker holds: received and not yet deleted or released. One entry
//! per message ID, with the receipt of the newest copy SQS handed out. It decides which messages
//! need their visibility extended (oldest first), keeps each message's share of the backpressure
//! budget until it leaves, collects the orphans of dropped claims, and at shutdown names every
//! message whose fate is still open.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::stamps::ReleasedGroups;
use crate::message::Received;

struct Held {
    /// Which holding of this ID the entry is: a claim acts only on its own generation, so a
    /// claim from before a redelivery cannot forget or release the entry of the new copy.
    generation: u64,
    receipt: String,
    renewed_at: Instant,
    receive_count: u32,
    group_id: Option<String>,
    sequence: Option<u128>,
    _capacity: Vec<OwnedSemaphorePermit>,
}

/// A held message to release: the orphan of a lease dropped unsettled. What its release needs: the newest receipt, the receive count for the backoff, and
/// its FIFO place.
#[derive(Debug)]
pub struct Releasable {
    pub id: String,
    pub generation: u64,
    pub receipt: String,
    pub receive_count: u32,
    pub group_id: Option<String>,
    pub sequence: Option<u128>,
}

/// A held message, as the heartbeat and the shutdown see it.
#[derive(Clone, Debug)]
pub struct HeldReceipt {
    pub id: String,
    pub generation: u64,
    pub receipt: String,
}

pub struct Ledger {
    visibility: Duration,
    held: Mutex<HashMap<String, Held>>,
    orphans: Mutex<Vec<(String, u64)>>,
    /// The accepted jobs whose messages are not settled yet, and how many each carries.
    jobs: Mutex<BTreeMap<Arc<str>, usize>>,
    released_groups: Arc<ReleasedGroups>,
    generations: AtomicU64,
    /// Set by the drain before it stops tasks that hold claims: their messages are released
    /// by the final release, so they are not orphans (which count as bugs).
    closing: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    pub fn new(visibility: Duration) -> Arc<Self> {
        Arc::new(Self {
            visibility,
            held: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            jobs: Mutex::new(BTreeMap::new()),
            released_groups: Arc::new(ReleasedGroups::default()),
            generations: AtomicU64::new(1),
            closing: AtomicBool::new(false),
        })
    }

    /// When each FIFO group last had a message go back to the queue (or become an orphan, which
    /// will): later messages of the group must follow it.
    pub fn released_groups(&self) -> &ReleasedGroups {
        &self.released_groups
    }

    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// Records a received message. Returns the holding's generation (its claim's), or None when
    /// the ID is already held: SQS
    /// handed out a second copy (its visibility lapsed, or a receive was retried). The ledger then
    /// keeps the newest receipt, which is the one SQS honours, and the copy's capacity goes back.
    pub(super) fn hold(
        &self,
        message: &Received,
        receipt: String,
        capacity: Vec<OwnedSemaphorePermit>,
    ) -> Option<u64> {
        self.released_groups.held(message);
        let mut held = lock(&self.held);
        if let Some(existing) = held.get_mut(&message.id) {
            existing.receipt = receipt;
            existing.renewed_at = message.received_at;
            existing.receive_count = existing.receive_count.max(message.receive_count);
            return None;
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        held.insert(
            message.id.clone(),
            Held {
                generation,
                receipt,
                renewed_at: message.received_at,
                receive_count: message.receive_count,
                group_id: message.group_id.clone(),
                sequence: message.sequence,
                _capacity: capacity,
            },
        );
        Some(generation)
    }

    /// The newest receipt of this holding of the message, if it is still held.
    pub fn receipt(&self, id: &str, generation: u64) -> Option<String> {
        lock(&self.held)
            .get(id)
            .filter(|h| h.generation == generation)
            .map(|h| h.receipt.clone())
    }

    /// These holdings are deleted or released: no longer ours, and their capacity is free.
    pub fn forget<'a>(&self, holdings: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut held = lock(&self.held);
        for (id, generation) in holdings {
            if held.get(id).is_some_and(|h| h.generation == generation) {
                held.remove(id);
            }
        }
    }

    /// The drain is about to stop tasks that hold claims. Their claims still mark FIFO groups
    /// when dropped, but they are not orphans: the final release takes every held message back.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// A claim was dropped unspent. Its FIFO group is marked at once, before the heartbeat
    /// releases the message, so no later message of the group commits ahead of it meanwhile.
    pub(super) fn orphan(&self, id: &str, generation: u64) {
        let group = lock(&self.held)
            .get(id)
            .filter(|h| h.generation == generation)
            .and_then(|h| Some((h.group_id.clone()?, h.sequence)));
        if let Some((group, sequence)) = group {
            // The heartbeat releases it within a round, with a backoff of at most 15 minutes.
            self.released_groups.released(
                (id, &group, sequence),
                Instant::now(),
                std::time::Duration::from_secs(15 * 60),
            );
        }
        if !self.closing.load(Ordering::Relaxed) {
            lock(&self.orphans).push((id.to_owned(), generation));
        }
    }

    /// A message's row is carried by `job`.
    pub(super) fn follow(&self, job: &Arc<str>) {
        *lock(&self.jobs).entry(job.clone()).or_default() += 1;
    }

    /// A message carried by `job` was settled, dropped, or sent again under another job.
    pub(super) fn unfollow(&self, job: &Arc<str>) {
        let mut jobs = lock(&self.jobs);
        if let Some(count) = jobs.get_mut(job) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                jobs.remove(job);
            }
        }
    }

    /// The accepted jobs whose messages are not settled yet, with how many each carries (job
    /// id, messages): what a drain that runs out of time stops following.
    pub fn open_jobs(&self) -> Vec<(String, usize)> {
        lock(&self.jobs)
            .iter()
            .map(|(job, count)| (job.to_string(), *count))
            .collect()
    }

    /// The orphans still held, to be released; the list starts empty again.
    pub fn take_orphans(&self) -> Vec<Releasable> {
        let ids = std::mem::take(&mut *lock(&self.orphans));
        let held = lock(&self.held);
        ids.into_iter()
            .filter_map(|(id, generation)| {
                let h = held.get(&id).filter(|h| h.generation == generation)?;
                Some(Releasable {
                    generation,
                    receipt: h.receipt.clone(),
                    receive_count: h.receive_count,
                    group_id: h.group_id.clone(),
                    sequence: h.sequence,
                    id,
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.held).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages held for at least half their visibility since the last renewal, the longest
    /// unrenewed first. They stay due until `renewed` says SQS took the extension, so a failed
    /// call is retried on the next tick.
    pub fn due_for_extension(&self, now: Instant) -> Vec<HeldReceipt> {
        let half = self.visibility / 2;
        let mut due: Vec<(Instant, HeldReceipt)> = lock(&self.held)
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.renewed_at) >= half)
            .map(|(id, h)| {
                (
                    h.renewed_at,
                    HeldReceipt {
                        id: id.clone(),
                        generation: h.generation,
                        receipt: h.receipt.clone(),
                    },
                )
            })
            .collect();
        due.sort_by_key(|(renewed_at, _)| *renewed_at);
        due.into_iter().map(|(_, held)| held).collect()
    }

    /// SQS extended these messages' visibility with a call sent at `sent_at`.
    pub fn renewed<'a>(&self, ids: impl IntoIterator<Item = &'a str>, sent_at: Instant) {
        let mut held = lock(&self.held);
        for id in ids {
            if let Some(h) = held.get_mut(id) {
                h.renewed_at = h.renewed_at.max(sent_at);
            }
        }
    }

    /// Every message still held.
    pub fn all(&self) -> Vec<HeldReceipt> {
        lock(&self.held)
            .iter()
            .map(|(id, h)| HeldReceipt {
                id: id.clone(),
                generation: h.generation,
                receipt: h.receipt.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_is_due_at_half_the_visibility_oldest_first() {
        let ledger = Ledger::new(Duration::from_secs(10));
        let first = Received::fake("m1", "{}");
        let t0 = first.received_at;
        let mut second = Received::fake("m2", "{}");
        second.received_at = t0 + Duration::from_secs(1);
        let g2 = ledger.hold(&second, "r2".into(), Vec::new()).unwrap();
        let g1 = ledger.hold(&first, "r1".into(), Vec::new()).unwrap();
        assert!(
            ledger
                .due_for_extension(t0 + Duration::from_secs(4))
                .is_empty()
        );
        let due = ledger.due_for_extension(t0 + Duration::from_secs(6));
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"], "the longest unrenewed first");
        // Not renewed yet (the call failed): still due.
        assert_eq!(
            ledger.due_for_extension(t0 + Duration::from_secs(6)).len(),
            2
        );
        ledger.renewed(["m1", "m2"], t0 + Duration::from_secs(6));
        assert!(
            ledger
                .due_for_extension(t0 + Duration::from_secs(7))
                .is_empty()
        );
        ledger.forget([("m1", g1), ("m2", g2)]);
        assert!(ledger.is_empty());
    }

    /// A second copy of a held message must not replace the entry of the first and then vanish
    /// with the first one's delete: one entry, the newest receipt.
    #[test]
    fn a_second_copy_keeps_one_entry_with_the_newest_receipt() {
        let ledger = Ledger::new(Duration::from_secs(10));
        let message = Received::fake("m1", "{}");
        let generation = ledger.hold(&message, "old".into(), Vec::new()).unwrap();
        assert!(ledger.hold(&message, "new".into(), Vec::new()).is_none());
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger.receipt("m1", generation).as_deref(), Some("new"));
        ledger.forget([("m1", generation)]);
        assert!(ledger.is_empty());
        assert!(ledger.take_orphans().is_empty());
    }

    /// A holding from before the message left and came back acts only on its own generation.
    #[test]
    fn an_old_holding_cannot_touch_a_new_holding_of_the_same_message() {
        let ledger = Ledger::new(Duration::from_secs(10));
        let message = Received::fake("m1", "{}");
        let old = ledger.hold(&message, "r1".into(), Vec::new()).unwrap();
        ledger.forget([("m1", old)]);
        let new = ledger.hold(&message, "r2".into(), Vec::new()).unwrap();
        assert_eq!(ledger.receipt("m1", old), None);
        ledger.forget([("m1", old)]);
        ledger.orphan("m1", old);
        assert!(
            ledger.take_orphans().is_empty(),
            "the old holding orphans nothing"
        );
        assert_eq!(ledger.receipt("m1", new).as_deref(), Some("r2"));
        ledger.orphan("m1", new);
        assert_eq!(ledger.take_orphans().len(), 1);
    }

    /// The drain closes the ledger before it stops tasks that hold claims: their drops still
    /// mark the FIFO group, but they are not orphans (the final release takes them back).
    #[test]
    fn a_closed_ledger_has_no_orphans_and_still_marks_the_group() {
        let ledger = Ledger::new(Duration::from_secs(10));
        let mut message = Received::fake("m1", "{}");
        message.group_id = Some("g".into());
        message.sequence = Some(7);
        let generation = ledger.hold(&message, "r1".into(), Vec::new()).unwrap();
        ledger.close();
        ledger.orphan("m1", generation);
        assert!(ledger.take_orphans().is_empty());
        assert_eq!(ledger.all().len(), 1, "still held, for the final release");
        let mut later = Received::fake("m2", "{}");
        later.group_id = Some("g".into());
        later.sequence = Some(8);
        ledger.released_groups().held(&later);
        assert!(
            ledger.released_groups().must_follow(&later),
            "the group is marked"
        );
    }
}
