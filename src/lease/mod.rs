//! Who holds a message. A `Lease` is a received message together with its `Claim`: the right to
//! delete or release it in the source queue, its ledger entry (which the heartbeat extends) and
//! its share of the backpressure budget. Rows own their leases by move, and settling consumes
//! claims:
//!
//! - deleting spends the claim and leaves a lease without one, which nothing can release;
//! - releasing spends it too, and a delete that never went through is released explicitly;
//! - a claim dropped unspent (a task that panicked) is handed to the ledger's orphan list. The
//!   heartbeat releases orphans and counts them (a bug), so a message whose fate is undecided
//!   becomes visible again and is never deleted. Claims dropped by the drain's aborts are not
//!   orphans: the drain closes the ledger first, and its final release takes them back.
//!
//! The folder is the one home of that idea: `claim` (the right to act), `ledger` (every holding,
//! its newest receipt and its orphans) and `stamps` (which FIFO messages must follow a released
//! one back). Imports run one way: `mod` → `claim` → `ledger` → `stamps`.

mod claim;
pub mod ledger;
pub mod stamps;

use std::ops::Deref;

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Received;

pub use claim::Claim;
pub use ledger::Ledger;

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

impl AsRef<Received> for Lease {
    fn as_ref(&self) -> &Received {
        &self.message
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

    fn held(ledger: &std::sync::Arc<Ledger>, id: &str) -> Lease {
        let message = Received::fake(id, "{}");
        let claim =
            Claim::hold(ledger, &message, format!("r-{id}"), Vec::new()).expect("a new message");
        Lease::new(message, claim, None)
    }

    #[test]
    fn a_dropped_lease_is_an_orphan_and_a_spent_one_is_not() {
        let ledger = Ledger::new(Duration::from_secs(30));
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
