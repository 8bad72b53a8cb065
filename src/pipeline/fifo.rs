//! FIFO order across batches: a batch holding message group G is not submitted while an earlier
//! batch with G is undecided. Batches take their groups in flush order. And when a message of G
//! goes back to the queue, every message of G the worker already held then is later in the group,
//! so it goes back too instead of committing ahead of it (`ReleasedGroups`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::message::Received;

use tokio::sync::Notify;

#[derive(Default)]
pub struct GroupGate {
    busy: Mutex<HashSet<String>>,
    freed: Notify,
}

/// Holds a batch's groups until dropped, when the batch is decided.
pub struct GroupHold {
    gate: Arc<GroupGate>,
    groups: Vec<String>,
}

impl GroupGate {
    /// The groups at once, or `None` if an earlier batch still holds one of them.
    pub fn try_acquire(self: &Arc<Self>, groups: &[String]) -> Option<GroupHold> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if groups.iter().any(|group| busy.contains(group)) {
            return None;
        }
        busy.extend(groups.iter().cloned());
        Some(GroupHold {
            gate: self.clone(),
            groups: groups.to_vec(),
        })
    }

    pub async fn acquire(self: &Arc<Self>, groups: Vec<String>) -> GroupHold {
        loop {
            // Registered before the check, so a release in between is not missed.
            let freed = self.freed.notified();
            {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                if groups.iter().all(|group| !busy.contains(group)) {
                    busy.extend(groups.iter().cloned());
                    return GroupHold {
                        gate: self.clone(),
                        groups,
                    };
                }
            }
            freed.await;
        }
    }
}

impl Drop for GroupHold {
    fn drop(&mut self) {
        let mut busy = self.gate.busy.lock().unwrap_or_else(|p| p.into_inner());
        for group in &self.groups {
            busy.remove(group);
        }
        drop(busy);
        self.gate.freed.notify_waiters();
    }
}

/// When each FIFO group last had a message released.
#[derive(Default)]
pub struct ReleasedGroups {
    stamps: Mutex<HashMap<String, Instant>>,
}

/// Stamps older than this cannot matter: no message is held that long.
const STAMP_TTL: Duration = Duration::from_secs(24 * 3600);

impl ReleasedGroups {
    pub fn released(&self, group: &str, at: Instant) {
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if stamps.len() > 10_000 {
            stamps.retain(|_, stamp| at.saturating_duration_since(*stamp) < STAMP_TTL);
        }
        let stamp = stamps.entry(group.to_owned()).or_insert(at);
        *stamp = (*stamp).max(at);
    }

    /// True when an earlier message of this message's group went back to the queue after this
    /// one was received: this one must follow it back.
    pub fn must_follow(&self, message: &Received) -> bool {
        let Some(group) = &message.group_id else {
            return false;
        };
        let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        stamps
            .get(group)
            .is_some_and(|released_at| *released_at >= message.received_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_group_waits_for_the_earlier_batch() {
        let gate = Arc::new(GroupGate::default());
        let first = gate.acquire(vec!["g1".into()]).await;
        let _other = gate.acquire(vec!["g2".into()]).await;
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(vec!["g1".into(), "g3".into()]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_message_received_before_its_group_was_released_follows_it() {
        let groups = ReleasedGroups::default();
        let mut held = Received::fake("m2", "{}");
        held.group_id = Some("g".into());
        let t0 = held.received_at;
        assert!(!groups.must_follow(&held));
        groups.released("g", t0 + Duration::from_millis(5));
        assert!(groups.must_follow(&held));
        let mut later = Received::fake("m3", "{}");
        later.group_id = Some("g".into());
        later.received_at = t0 + Duration::from_secs(1);
        assert!(!groups.must_follow(&later), "redelivered after the release");
        let mut other = Received::fake("m4", "{}");
        other.group_id = Some("h".into());
        assert!(!groups.must_follow(&other));
    }
}
