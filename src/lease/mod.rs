//! Who holds a message, in the types. A `Lease` is a message held in the source queue; a
//! `DeletedLease` is one deleted there after its 202 (`--ack-on accepted`) whose row's fate is
//! still open; a delivery carries either as a `Leased`. Each owns the one guard, its claim
//! (`claim.rs`), and only these types can change the claim's state, by move:
//!
//! - `Lease::spend`: the message left the queue with nothing more owed, or went back to it;
//! - `Lease::deleted`: deleted, fate still open. Nothing can release a `DeletedLease`;
//! - `DeletedLease::settled` or `lost`: its fate is done, or it is counted as lost.
//!
//! A lease dropped before that reports itself by its type: a held message becomes an orphan the
//! heartbeat releases (a bug, unless the drain closed the ledger first), and a deleted one is
//! counted as unsettled (its job still ran) or lost (its job had failed). Leases also count
//! themselves under the job that carries them (`follow`), so the drain names the jobs it abandons.
//!
//! The folder is the one home of that idea: `claim` (the guard), `ledger` (every holding, its
//! newest receipt, its orphans and the open jobs) and `stamps` (which FIFO messages must follow a
//! released one back). Imports run one way: `mod` → `claim` → `ledger` → `stamps`.

mod claim;
pub mod ledger;
pub mod stamps;

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Received;
use crate::telemetry::Telemetry;
use claim::Claim;

pub use ledger::Ledger;

/// A received message held in the source queue. It also holds the message's bytes of the memory
/// budget (`--max-held-bytes`) for as long as the worker keeps the body, which in `accepted`
/// mode is after the delete too, until the job ends.
#[derive(Debug)]
pub struct Lease {
    message: Received,
    claim: Claim,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// A message deleted from the source queue after its 202 whose row's fate is still open: its
/// job may yet fail. It can only be settled, dead-lettered, or reported lost, never released.
#[derive(Debug)]
pub struct DeletedLease {
    message: Received,
    claim: Claim,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What a delivery carries: held until its 202, and then, in `accepted` mode, deleted.
#[derive(Debug)]
pub enum Leased {
    Held(Lease),
    Deleted(DeletedLease),
}

impl Lease {
    /// Holds a received message. Err with the message when its ID is already held: SQS handed
    /// out a second copy, and the first holding keeps the newest receipt.
    pub fn hold(
        ledger: &Arc<Ledger>,
        message: Received,
        receipt: String,
        capacity: Vec<OwnedSemaphorePermit>,
    ) -> Result<Self, Box<Received>> {
        match Claim::hold(ledger, &message, receipt, capacity) {
            Some(claim) => Ok(Self {
                message,
                claim,
                _bytes: None,
            }),
            None => Err(Box::new(message)),
        }
    }

    /// Gives the lease its share of the memory budget, once the budget had room.
    pub fn hold_bytes(&mut self, bytes: Option<OwnedSemaphorePermit>) {
        self._bytes = bytes;
    }

    /// Which holding of the message this is (the ledger's generation).
    pub fn generation(&self) -> u64 {
        self.claim.generation()
    }

    /// The receipt of the newest copy SQS handed out, while the message is still held.
    pub fn receipt(&self) -> Option<String> {
        self.claim.receipt()
    }

    /// The message left the source queue with nothing more owed (deleted with its fate done, or
    /// no longer ours), or went back to it (released).
    pub fn spend(mut self) {
        self.claim.spend();
    }

    /// The message was deleted after its 202 while its row's fate is still open.
    pub fn deleted(self, telemetry: &Arc<Telemetry>) -> DeletedLease {
        let Lease {
            message,
            mut claim,
            _bytes,
        } = self;
        claim.deleted(telemetry.clone());
        DeletedLease {
            message,
            claim,
            _bytes,
        }
    }
}

impl DeletedLease {
    /// Its fate is done: the job committed its row, or its DLQ copy was sent.
    pub fn settled(mut self) {
        self.claim.settled();
    }

    /// Nothing took it: counted and logged as lost, with the problem.
    pub fn lost(mut self, problem: &str) {
        self.claim.lost(problem);
    }
}

impl Leased {
    pub fn held(&self) -> Option<&Lease> {
        match self {
            Leased::Held(lease) => Some(lease),
            Leased::Deleted(_) => None,
        }
    }

    pub fn is_deleted(&self) -> bool {
        matches!(self, Leased::Deleted(_))
    }

    /// Counts the message under the accepted job that carries its row.
    pub fn follow(&mut self, job: &Arc<str>) {
        self.claim_mut().follow(Some(job));
    }

    /// Its job failed: it is no longer counted under it (and, deleted, it is now at risk).
    pub fn unfollow(&mut self) {
        self.claim_mut().follow(None);
    }

    fn claim_mut(&mut self) -> &mut Claim {
        match self {
            Leased::Held(lease) => &mut lease.claim,
            Leased::Deleted(lease) => &mut lease.claim,
        }
    }
}

impl From<Lease> for Leased {
    fn from(lease: Lease) -> Self {
        Leased::Held(lease)
    }
}

impl From<DeletedLease> for Leased {
    fn from(lease: DeletedLease) -> Self {
        Leased::Deleted(lease)
    }
}

macro_rules! reads_as_received {
    ($($ty:ty => |$it:ident| $message:expr),* $(,)?) => {$(
        impl AsRef<Received> for $ty {
            fn as_ref(&self) -> &Received {
                let $it = self;
                $message
            }
        }

        impl Deref for $ty {
            type Target = Received;

            fn deref(&self) -> &Received {
                self.as_ref()
            }
        }
    )*};
}

reads_as_received! {
    Lease => |lease| &lease.message,
    DeletedLease => |lease| &lease.message,
    Leased => |leased| match leased {
        Leased::Held(lease) => &lease.message,
        Leased::Deleted(lease) => &lease.message,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn held(ledger: &Arc<Ledger>, id: &str) -> Lease {
        Lease::hold(
            ledger,
            Received::fake(id, "{}"),
            format!("r-{id}"),
            Vec::new(),
        )
        .expect("a new message")
    }

    #[test]
    fn a_dropped_lease_is_an_orphan_and_a_spent_one_is_not() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let dropped = held(&ledger, "m1");
        let spent = held(&ledger, "m2");
        drop(dropped);
        spent.spend();
        let orphans: Vec<String> = ledger.take_orphans().into_iter().map(|o| o.id).collect();
        assert_eq!(orphans, ["m1"]);
        assert_eq!(ledger.len(), 1, "an orphan stays held until it is released");
    }

    /// The one guard: deleted leases count under their job while it runs; dropped unsettled,
    /// one whose job still ran is counted as unsettled, one whose job failed as lost, and
    /// neither is an orphan. Settled ones report nothing.
    #[test]
    fn a_deleted_lease_dropped_unsettled_reports_itself() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let telemetry = Arc::new(Telemetry::new());
        let job: Arc<str> = "rjob_1".into();
        let mut leased: Vec<Leased> = ["m1", "m2", "m3"]
            .map(|id| Leased::Deleted(held(&ledger, id).deleted(&telemetry)))
            .into_iter()
            .collect();
        leased.iter_mut().for_each(|lease| lease.follow(&job));
        assert_eq!(ledger.open_jobs(), [("rjob_1".to_owned(), 3)]);
        assert!(ledger.is_empty(), "a deleted message is no longer held");
        let settled = leased.pop().expect("three");
        let Leased::Deleted(settled) = settled else {
            unreachable!("deleted above")
        };
        settled.settled();
        leased[1].unfollow();
        assert_eq!(ledger.open_jobs(), [("rjob_1".to_owned(), 1)]);
        drop(leased);
        assert!(ledger.open_jobs().is_empty());
        let metrics = telemetry.render();
        assert!(
            metrics.contains("sbw_deleted_unsettled_total 1"),
            "{metrics}"
        );
        assert!(metrics.contains("sbw_messages_lost_total 1"), "{metrics}");
        assert!(ledger.take_orphans().is_empty());
    }
}
