//! FIFO order across batches: a batch holding message group G is not submitted while an earlier
//! batch with G is undecided. Batches take their groups in flush order. (When a message of G goes
//! back to the queue, the later ones the worker holds follow it: `lease::stamps`.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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
}
