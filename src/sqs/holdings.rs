//! The ledger of messages the worker holds: received and not yet deleted or released. It decides
//! which need their visibility extended, releases backpressure capacity when a message leaves, and
//! at shutdown names every message whose fate is still open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Received;

struct Held {
    receipt: String,
    renewed_at: Instant,
    _capacity: Option<OwnedSemaphorePermit>,
}

pub struct Holdings {
    visibility: Duration,
    held: Mutex<HashMap<String, Held>>,
}

impl Holdings {
    pub fn new(visibility: Duration) -> Arc<Self> {
        Arc::new(Self {
            visibility,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    pub fn hold(&self, message: &Received, capacity: Option<OwnedSemaphorePermit>) {
        self.lock().insert(
            message.id.clone(),
            Held {
                receipt: message.receipt.clone(),
                renewed_at: message.received_at,
                _capacity: capacity,
            },
        );
    }

    /// The message is deleted or released: it is no longer ours.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.lock();
        for id in ids {
            held.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages held for at least half their visibility since the last renewal. They stay due
    /// until `renewed` says SQS took the extension, so a failed call is retried on the next tick.
    pub fn due_for_extension(&self, now: Instant) -> Vec<(String, String)> {
        let half = self.visibility / 2;
        self.lock()
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.renewed_at) >= half)
            .map(|(id, h)| (id.clone(), h.receipt.clone()))
            .collect()
    }

    /// SQS extended these messages' visibility with a call sent at `sent_at`.
    pub fn renewed<'a>(&self, ids: impl IntoIterator<Item = &'a str>, sent_at: Instant) {
        let mut held = self.lock();
        for id in ids {
            if let Some(h) = held.get_mut(id) {
                h.renewed_at = sent_at;
            }
        }
    }

    /// Every message still held, as (id, receipt handle).
    pub fn all(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(id, h)| (id.clone(), h.receipt.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_is_due_at_half_the_visibility() {
        let holdings = Holdings::new(Duration::from_secs(10));
        let message = Received::fake("m1", "{}");
        let t0 = message.received_at;
        holdings.hold(&message, None);
        assert!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(4))
                .is_empty()
        );
        assert_eq!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(5))
                .len(),
            1
        );
        // Not renewed yet (the call failed): still due.
        assert_eq!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(5))
                .len(),
            1
        );
        holdings.renewed(["m1"], t0 + Duration::from_secs(5));
        assert!(
            holdings
                .due_for_extension(t0 + Duration::from_secs(6))
                .is_empty()
        );
        holdings.forget(["m1"]);
        assert!(holdings.is_empty());
    }
}
