//! Who holds a message. A `Lease` is a received message together with its `Claim`: the right to
//! delete or release it in the source queue, its ledger entry (which the heartbeat extends) and
//! its share of the backpressure budget. Rows own their leases by move, and settling consumes
//! claims:
//!
//! - deleting spends the claim and leaves a lease without one, which nothing can release;
//! - releasing spends it too;
//! - a claim dropped unspent (a task that panicked or was aborted, a delete that never went
//!   through) is handed to the ledger's orphan list. The heartbeat releases orphans and counts
//!   them, so a message whose fate is undecided becomes visible again and is never deleted.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Received;
use crate::sqs::Holdings;

/// The right to act on one message in the source queue. Spent by a delete or a release.
pub struct Claim {
    id: String,
    generation: u64,
    ledger: Arc<Holdings>,
    spent: bool,
}

impl Claim {
    pub(crate) fn new(id: String, generation: u64, ledger: Arc<Holdings>) -> Self {
        Self {
            id,
            generation,
            ledger,
            spent: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which holding of the message this claim is for (the ledger's generation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The receipt handle of the newest copy SQS handed out, if this holding is still held.
    pub fn receipt(&self) -> Option<String> {
        self.ledger.receipt(&self.id, self.generation)
    }

    /// The message left the source queue, or went back to it: forget this holding.
    pub(crate) fn spend(mut self) {
        self.spent = true;
        self.ledger.forget([(self.id.as_str(), self.generation)]);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.spent {
            self.ledger.orphan(&self.id, self.generation);
        }
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).finish()
    }
}

/// A received message and, until it is deleted or released, the claim on it. It also holds the
/// message's bytes of the memory budget (`--max-held-bytes`) for as long as the worker keeps the
/// body, which in `accepted` mode is after the delete, until the job ends.
#[derive(Debug)]
pub struct Lease {
    message: Received,
    claim: Option<Claim>,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Lease {
    pub fn new(message: Received, claim: Claim, bytes: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            message,
            claim: Some(claim),
            _bytes: bytes,
        }
    }

    /// Gives the lease its share of the memory budget, once the budget had room.
    pub fn hold_bytes(&mut self, bytes: Option<OwnedSemaphorePermit>) {
        self._bytes = bytes;
    }

    /// A lease with nothing to settle, for unit tests and benchmarks.
    pub fn detached(message: Received) -> Self {
        Self {
            message,
            claim: None,
            _bytes: None,
        }
    }

    /// True once the message left the source queue (deleted after a 202 in `accepted` mode).
    pub fn is_deleted(&self) -> bool {
        self.claim.is_none()
    }

    pub fn take_claim(&mut self) -> Option<Claim> {
        self.claim.take()
    }

    /// Gives back a claim whose delete did not go through: the message is still in the queue.
    pub fn restore_claim(&mut self, claim: Claim) {
        self.claim = Some(claim);
    }

    pub fn into_parts(self) -> (Received, Option<Claim>) {
        (self.message, self.claim)
    }
}

impl Deref for Lease {
    type Target = Received;

    fn deref(&self) -> &Received {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn held(ledger: &Arc<Holdings>, id: &str) -> Lease {
        let message = Received::fake(id, "{}");
        let claim = ledger
            .hold(&message, format!("r-{id}"), Vec::new())
            .expect("a new message");
        Lease::new(message, claim, None)
    }

    #[test]
    fn a_dropped_lease_is_an_orphan_and_a_spent_one_is_not() {
        let ledger = Holdings::new(Duration::from_secs(30));
        let dropped = held(&ledger, "m1");
        let mut deleted = held(&ledger, "m2");
        drop(dropped);
        deleted.take_claim().unwrap().spend();
        assert!(deleted.is_deleted());
        drop(deleted);
        let orphans: Vec<String> = ledger.take_orphans().into_iter().map(|o| o.id).collect();
        assert_eq!(orphans, ["m1"]);
        assert_eq!(ledger.len(), 1, "an orphan stays held until it is released");
    }
}
