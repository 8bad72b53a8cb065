//! The one guard over a message whose fate is undecided. A claim is the right to act on one
//! holding of a message, and it knows which state the message is in: held in the source queue,
//! deleted there with its row's fate still open (`--ack-on accepted`), or done. It also counts
//! the message under the job that carries it, so the drain can name the jobs it abandons.
//!
//! Dropped before it is done, it reports itself by its state: a held message becomes an orphan
//! that the heartbeat releases (a bug, unless the drain closed the ledger, whose final release
//! takes it back); a deleted one is counted, as unsettled while its job still runs, or as lost
//! once its job failed. Only the lease types of `mod.rs` change its state.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::ledger::Ledger;
use crate::message::Received;
use crate::telemetry::Telemetry;

enum State {
    /// In the source queue: the ledger has its receipt, and the heartbeat extends it.
    Held,
    /// Deleted after its 202; what reports it if it is dropped unsettled.
    Deleted(Arc<Telemetry>),
    /// Deleted with its fate done, released, or reported.
    Done,
}

pub(super) struct Claim {
    id: String,
    generation: u64,
    ledger: Arc<Ledger>,
    /// The accepted job whose rows carry the message while it runs.
    job: Option<Arc<str>>,
    state: State,
}

impl Claim {
    /// Enters a received message in the ledger. None when the ID is already held: SQS handed
    /// out a second copy, and the ledger keeps the newest receipt for the first holding's claim.
    pub(super) fn hold(
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
            job: None,
            state: State::Held,
        })
    }

    /// Which holding of the message this claim is for (the ledger's generation).
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The receipt handle of the newest copy SQS handed out, if this holding is still held.
    pub(super) fn receipt(&self) -> Option<String> {
        self.ledger.receipt(&self.id, self.generation)
    }

    /// The message left the source queue with nothing more owed, or went back to it.
    pub(super) fn spend(&mut self) {
        self.ledger.forget([(self.id.as_str(), self.generation)]);
        self.state = State::Done;
    }

    /// The message was deleted while its row's fate is still open.
    pub(super) fn deleted(&mut self, telemetry: Arc<Telemetry>) {
        self.ledger.forget([(self.id.as_str(), self.generation)]);
        self.state = State::Deleted(telemetry);
    }

    /// A deleted message's fate is done: committed, or its DLQ copy sent.
    pub(super) fn settled(&mut self) {
        self.state = State::Done;
    }

    /// A deleted message that nothing took: counted and logged as lost.
    pub(super) fn lost(&mut self, problem: &str) {
        if let State::Deleted(telemetry) = &self.state {
            telemetry.dlq_lost(&self.id, problem);
        }
        self.state = State::Done;
    }

    /// Counts the message under `job` (or under none, once its job failed).
    pub(super) fn follow(&mut self, job: Option<&Arc<str>>) {
        if let Some(old) = self.job.take() {
            self.ledger.unfollow(&old);
        }
        if let Some(job) = job {
            self.ledger.follow(job);
            self.job = Some(job.clone());
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let job = self.job.take();
        if let Some(job) = &job {
            self.ledger.unfollow(job);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Held => self.ledger.orphan(&self.id, self.generation),
            State::Deleted(telemetry) => match job {
                Some(job) => telemetry.deleted_unsettled(&self.id, &job),
                None => telemetry.dlq_lost(
                    &self.id,
                    "deleted after its first 202 (--ack-on accepted); its job failed and the \
                     worker stopped before the resubmission was settled",
                ),
            },
            State::Done => {}
        }
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).finish()
    }
}
