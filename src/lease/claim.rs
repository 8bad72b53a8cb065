//! A claim: the right to delete or release one holding of a message in the source queue. It is
//! spent by a delete or a release; dropped unspent, it hands the message to the ledger's orphan
//! list, which the heartbeat releases.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::ledger::Ledger;
use crate::message::Received;

/// The right to act on one message in the source queue. Spent by a delete or a release.
pub struct Claim {
    id: String,
    generation: u64,
    ledger: Arc<Ledger>,
    spent: bool,
}

impl Claim {
    /// Enters a received message in the ledger. None when the ID is already held: SQS handed
    /// out a second copy, and the ledger keeps the newest receipt for the first holding's claim.
    pub(crate) fn hold(
        ledger: &Arc<Ledger>,
        message: &Received,
        receipt: String,
        capacity: Vec<OwnedSemaphorePermit>,
    ) -> Option<Self> {
        let generation = ledger.hold(message, receipt, capacity)?;
        Some(Self {
            id: message.id.clone(),
            generation,
            ledger: ledger.clone(),
            spent: false,
        })
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
