//! The ledger of messages the worker holds: received and not yet deleted or released. One entry
//! per message ID, with the receipt of the newest copy SQS handed out. It decides which messages
//! need their visibility extended (oldest first), keeps each message's share of the backpressure
//! budget until it leaves, collects the orphans of dropped claims, and at shutdown names every
//! message whose fate is still open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::lease::Claim;
use crate::message::Received;
use crate::pipeline::fifo::ReleasedGroups;

struct Held {
    receipt: String,
    renewed_at: Instant,
    receive_count: u32,
    group_id: Option<String>,
    _capacity: Vec<OwnedSemaphorePermit>,
}

/// A held message whose claim was dropped unspent: it must be released.
#[derive(Debug)]
pub struct Orphan {
    pub id: String,
    pub receipt: String,
    pub receive_count: u32,
    pub group_id: Option<String>,
}

/// A held message, as the heartbeat and the shutdown see it.
#[derive(Clone, Debug)]
pub struct HeldReceipt {
    pub id: String,
    pub receipt: String,
}

pub struct Holdings {
    visibility: Duration,
    held: Mutex<HashMap<String, Held>>,
    orphans: Mutex<Vec<String>>,
    released_groups: Arc<ReleasedGroups>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Holdings {
    pub fn new(visibility: Duration) -> Arc<Self> {
        Arc::new(Self {
            visibility,
            held: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            released_groups: Arc::new(ReleasedGroups::default()),
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

    /// Records a received message. Returns its claim, or None when the ID is already held: SQS
    /// handed out a second copy (its visibility lapsed, or a receive was retried). The ledger then
    /// keeps the newest receipt, which is the one SQS honours, and the copy's capacity goes back.
    pub fn hold(
        self: &Arc<Self>,
        message: &Received,
        receipt: String,
        capacity: Vec<OwnedSemaphorePermit>,
    ) -> Option<Claim> {
        let mut held = lock(&self.held);
        if let Some(existing) = held.get_mut(&message.id) {
            existing.receipt = receipt;
            existing.renewed_at = message.received_at;
            existing.receive_count = existing.receive_count.max(message.receive_count);
            return None;
        }
        held.insert(
            message.id.clone(),
            Held {
                receipt,
                renewed_at: message.received_at,
                receive_count: message.receive_count,
                group_id: message.group_id.clone(),
                _capacity: capacity,
            },
        );
        Some(Claim::new(message.id.clone(), self.clone()))
    }

    pub fn receipt(&self, id: &str) -> Option<String> {
        lock(&self.held).get(id).map(|h| h.receipt.clone())
    }

    /// The message is deleted or released: it is no longer ours, and its capacity is free.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = lock(&self.held);
        for id in ids {
            held.remove(id);
        }
    }

    /// A claim was dropped unspent. Its FIFO group is marked at once, before the heartbeat
    /// releases the message, so no later message of the group commits ahead of it meanwhile.
    pub(crate) fn orphan(&self, id: &str) {
        let group = lock(&self.held).get(id).and_then(|h| h.group_id.clone());
        if let Some(group) = group {
            self.released_groups.released(&group, Instant::now());
        }
        lock(&self.orphans).push(id.to_owned());
    }

    /// The orphans still held, to be released; the list starts empty again.
    pub fn take_orphans(&self) -> Vec<Orphan> {
        let ids = std::mem::take(&mut *lock(&self.orphans));
        let held = lock(&self.held);
        ids.into_iter()
            .filter_map(|id| {
                let h = held.get(&id)?;
                Some(Orphan {
                    receipt: h.receipt.clone(),
                    receive_count: h.receive_count,
                    group_id: h.group_id.clone(),
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
        let holdings = Holdings::new(Duration::from_secs(10));
        let first = Received::fake("m1", "{}");
        let t0 = first.received_at;
        let mut second = Received::fake("m2", "{}");
        second.received_at = t0 + Duration::from_secs(1);
        let _c2 = holdings.hold(&second, "r2".into(), Vec::new());
        let _c1 = holdings.hold(&first, "r1".into(), Vec::new());
        assert!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(4))
                .is_empty()
        );
        let due = holdings.due_for_extension(t0 + Duration::from_secs(6));
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"], "the longest unrenewed first");
        // Not renewed yet (the call failed): still due.
        assert_eq!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(6))
                .len(),
            2
        );
        holdings.renewed(["m1", "m2"], t0 + Duration::from_secs(6));
        assert!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(7))
                .is_empty()
        );
        holdings.forget(["m1", "m2"]);
        assert!(holdings.is_empty());
    }

    /// Issue 10, defect 7: a second copy of a held message must not replace the entry of the
    /// first and then vanish with the first one's delete: one entry, the newest receipt.
    #[test]
    fn a_second_copy_keeps_one_entry_with_the_newest_receipt() {
        let holdings = Holdings::new(Duration::from_secs(10));
        let message = Received::fake("m1", "{}");
        let claim = holdings.hold(&message, "old".into(), Vec::new());
        assert!(claim.is_some());
        assert!(holdings.hold(&message, "new".into(), Vec::new()).is_none());
        assert_eq!(holdings.len(), 1);
        assert_eq!(holdings.receipt("m1").as_deref(), Some("new"));
        claim.unwrap().spend();
        assert!(holdings.is_empty());
        assert!(holdings.take_orphans().is_empty());
    }
}
