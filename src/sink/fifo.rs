//! FIFO order across batches: a batch holding message group G is not submitted while an earlier
//! batch with G is undecided. Batches take their groups in flush order. (When a message of G goes
//! back to the queue, the later ones the worker holds follow it: `lease::stamps`.)
//!
//! The gate never makes anyone wait: the dispatcher asks `is_free`, takes a batch's groups with
//! `try_acquire` when they are, and otherwise keeps the batch in its queue and launches another
//! whose groups are free (no head-of-line blocking). `freed` tells it when a hold ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub struct GroupGate {
    busy: Mutex<HashSet<String>>,
    /// Counts the holds that ended; the dispatcher watches it to look at its queue again.
    freed: watch::Sender<u64>,
}

impl Default for GroupGate {
    fn default() -> Self {
        Self {
            busy: Mutex::default(),
            freed: watch::Sender::new(0),
        }
    }
}

/// Holds a batch's groups until dropped, when the batch is decided.
pub struct GroupHold {
    gate: Arc<GroupGate>,
    groups: Vec<String>,
}

impl GroupGate {
    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no batch in flight holds any of `groups`.
    pub fn is_free<'a>(&self, groups: impl IntoIterator<Item = &'a String>) -> bool {
        let busy = self.busy();
        groups.into_iter().all(|group| !busy.contains(group))
    }

    /// The groups at once, or `None` if an earlier batch still holds one of them.
    pub fn try_acquire(self: &Arc<Self>, groups: &[String]) -> Option<GroupHold> {
        let mut busy = self.busy();
        if groups.iter().any(|group| busy.contains(group)) {
            return None;
        }
        busy.extend(groups.iter().cloned());
        Some(GroupHold {
            gate: self.clone(),
            groups: groups.to_vec(),
        })
    }

    /// Changes each time a hold ends.
    pub fn freed(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }
}

impl Drop for GroupHold {
    fn drop(&mut self) {
        let mut busy = self.gate.busy();
        for group in &self.groups {
            busy.remove(group);
        }
        drop(busy);
        self.gate.freed.send_modify(|ended| *ended += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_taken_only_once_its_earlier_batch_is_decided() {
        let gate = Arc::new(GroupGate::default());
        let mut freed = gate.freed();
        let first = gate.try_acquire(&["g1".into()]).unwrap();
        let _other = gate.try_acquire(&["g2".into()]).unwrap();
        let later: Vec<String> = vec!["g1".into(), "g3".into()];
        assert!(!gate.is_free(&later));
        assert!(gate.try_acquire(&later).is_none());
        assert!(gate.is_free(&["g3".to_owned()]), "a refusal takes nothing");
        assert!(!freed.has_changed().unwrap());
        drop(first);
        assert!(freed.has_changed().unwrap(), "the dispatcher is told");
        freed.mark_unchanged();
        assert!(gate.try_acquire(&later).is_some());
    }
}
