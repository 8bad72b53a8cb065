//! The dispatcher: feeds the pure batcher, and sends a batch when it holds a slot, that is an
//! in-flight place under the (adaptive) concurrency limit and a token of the budget. A slot is
//! sought once a batch could leave: it is full, or its oldest message has waited
//! `--batch-max-wait`. While it waits for the slot, the open batch keeps filling, up to
//! `--batch-max-records` and `--batch-max-bytes`; a full batch closes and queues for the next slot
//! (`batcher::departure` states the rule). FIFO groups leave in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::concurrency::{Slot, Slots};
use super::deliver::Delivery;
use super::fifo::GroupGate;
use crate::batch::Batch;
use crate::batch::Decoded;
use crate::batch::batcher::Batcher;
use crate::lease::Lease;
use crate::sink::budget::{Budget, Ticket};
use crate::telemetry::Telemetry;

/// A delivery task that panicked dropped its leases, which released its messages as orphans;
/// say so loudly, since it is a bug.
fn report(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(
            %error,
            "a batch delivery panicked; its messages are released as orphans and redelivered"
        );
    }
}

/// What the dispatcher holds between turns.
struct Turn {
    ready: VecDeque<(Batch, Instant)>,
    slot: Option<Slot>,
    ticket: Option<Ticket>,
    getting_slot: Option<BoxFuture<'static, Slot>>,
    getting_ticket: Option<BoxFuture<'static, Ticket>>,
}

impl Turn {
    fn waiting_messages(&self, batcher: &Batcher) -> usize {
        batcher.buffered_messages()
            + self
                .ready
                .iter()
                .map(|(batch, _)| batch.message_count())
                .sum::<usize>()
    }

    fn has_work(&self, batcher: &Batcher) -> bool {
        !self.ready.is_empty() || batcher.buffered_messages() > 0
    }
}

/// Most records taken from the channel in one turn of the loop.
const DRAIN: usize = 64;

/// The dispatch stage's handles: the delivery it launches batches into, and the slots and the
/// budget a batch waits for.
pub struct Dispatch {
    pub delivery: Arc<Delivery>,
    pub budget: Arc<Budget>,
    pub slots: Slots,
    pub telemetry: Arc<Telemetry>,
    /// The source is a FIFO queue: a batch waits while a group of it is in flight.
    pub fifo: bool,
}

impl Dispatch {
    /// Feeds the batcher from `records` and launches batches until the channel closes and the
    /// last delivery ends; `waiting` tells the pollers how many messages wait for a slot.
    pub async fn run(
        self,
        batcher: Batcher,
        records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
        waiting: watch::Sender<usize>,
    ) {
        dispatch(self, batcher, records, waiting).await
    }
}

async fn dispatch(
    stage: Dispatch,
    batcher: Batcher,
    mut records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
    waiting: watch::Sender<usize>,
) {
    let mut dispatcher = Dispatcher {
        fifo: stage.fifo,
        stage,
        batcher,
        gate: Arc::new(GroupGate::default()),
        tasks: JoinSet::new(),
        turn: Turn {
            ready: VecDeque::new(),
            slot: None,
            ticket: None,
            getting_slot: None,
            getting_ticket: None,
        },
        closing: false,
    };
    let telemetry = dispatcher.stage.telemetry.clone();
    loop {
        let now = tokio::time::Instant::now().into_std();
        if dispatcher.launch(now).await {
            continue;
        }
        let waiting_now = dispatcher.turn.waiting_messages(&dispatcher.batcher);
        telemetry.set_buffered(waiting_now);
        waiting.send_replace(waiting_now);
        if dispatcher.closing && !dispatcher.turn.has_work(&dispatcher.batcher) {
            break;
        }
        let wake_at = dispatcher.seek_slot(now);
        let Dispatcher {
            batcher,
            tasks,
            turn,
            closing,
            ..
        } = &mut dispatcher;
        tokio::select! {
            item = records.recv(), if !*closing => match item {
                Some(first) => {
                    // What is already queued joins in the same turn: a turn per message costs
                    // more than the batcher does.
                    let closed_at = tokio::time::Instant::now().into_std();
                    let queued = std::iter::from_fn(|| records.try_recv().ok()).take(DRAIN - 1);
                    for (decoded, lease) in std::iter::once(first).chain(queued) {
                        for batch in batcher.push(decoded, lease, closed_at) {
                            turn.ready.push_back((batch, closed_at));
                        }
                    }
                }
                None => *closing = true,
            },
            slot = async { turn.getting_slot.as_mut().expect("guarded").await }, if turn.getting_slot.is_some() => {
                turn.slot = Some(slot);
                turn.getting_slot = None;
            }
            ticket = async { turn.getting_ticket.as_mut().expect("guarded").await }, if turn.getting_ticket.is_some() => {
                turn.ticket = Some(ticket);
                turn.getting_ticket = None;
            }
            _ = tokio::time::sleep_until(wake_at.unwrap_or(now).into()), if wake_at.is_some() => {}
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => report(ended),
        }
    }
    telemetry.set_buffered(0);
    waiting.send_replace(0);
    while let Some(ended) = dispatcher.tasks.join_next().await {
        report(ended);
    }
}

/// The dispatcher's state: the batcher, the turn, the running deliveries and the FIFO gate.
struct Dispatcher {
    stage: Dispatch,
    batcher: Batcher,
    fifo: bool,
    gate: Arc<GroupGate>,
    tasks: JoinSet<()>,
    turn: Turn,
    closing: bool,
}

impl Dispatcher {
    /// With a slot and a ticket in hand, sends the next batch that may leave; true when one left.
    async fn launch(&mut self, now: Instant) -> bool {
        if self.turn.slot.is_none() || self.turn.ticket.is_none() {
            return false;
        }
        let leaving = self.turn.ready.pop_front().or_else(|| {
            let eligible = self.batcher.deadline();
            self.batcher
                .poll(now, self.closing)
                .map(|batch| (batch, eligible.unwrap_or(now)))
        });
        let Some((batch, eligible)) = leaving else {
            return false;
        };
        let telemetry = &self.stage.telemetry;
        telemetry.slot_wait(now.saturating_duration_since(eligible));
        telemetry.batch_flushed(
            batch.reason.as_str(),
            batch.rows.len(),
            batch.message_count(),
        );
        let (slot, mut ticket) = (self.turn.slot.take(), self.turn.ticket.take());
        let hold = if self.fifo {
            let groups = batch.groups();
            match self.gate.try_acquire(&groups) {
                Some(hold) => Some(hold),
                None => {
                    // An earlier batch of a group still runs. The ticket would be spent
                    // late, so close on the next call: give it up and pay afresh.
                    let hold = self.gate.acquire(groups).await;
                    ticket = Some(self.stage.budget.acquire().await);
                    Some(hold)
                }
            }
        } else {
            None
        };
        let delivery = self.stage.delivery.clone();
        self.tasks.spawn(async move {
            if let Some(ticket) = ticket {
                delivery.deliver(batch, ticket).await;
            }
            drop(hold);
            drop(slot);
        });
        true
    }

    /// Starts seeking a slot and a ticket once a batch could leave; when none could yet, the
    /// time the oldest open batch comes due.
    fn seek_slot(&mut self, now: Instant) -> Option<Instant> {
        // A slot is sought only once a batch could leave: a token taken early would be spent
        // later than the bucket assumed, and two calls could reach the API closer than it allows.
        let turn = &mut self.turn;
        let deadline = self.batcher.deadline();
        let due = !turn.ready.is_empty()
            || (turn.has_work(&self.batcher) && self.closing)
            || deadline.is_some_and(|deadline| deadline <= now);
        if due && turn.slot.is_none() && turn.getting_slot.is_none() {
            let slots = self.stage.slots.clone();
            turn.getting_slot = Some(Box::pin(async move { slots.acquire().await }));
        }
        if due && turn.slot.is_some() && turn.ticket.is_none() && turn.getting_ticket.is_none() {
            let budget = self.stage.budget.clone();
            turn.getting_ticket = Some(Box::pin(async move { budget.acquire().await }));
        }
        if due { None } else { deadline }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::batch::batcher::Limits;
    use crate::batch::key::batch_key;
    use crate::config::Operation;
    use crate::fakes::{self, FakeSettle};
    use crate::lease::Ledger;
    use crate::message::Received;

    fn stage(delivery: Arc<Delivery>) -> Dispatch {
        Dispatch {
            budget: delivery.budget.clone(),
            slots: delivery.slots.clone(),
            telemetry: delivery.telemetry.clone(),
            fifo: delivery.policy.fifo,
            delivery,
        }
    }

    fn batcher(max_records: usize, max_wait: Duration) -> Batcher {
        Batcher::new(Limits {
            max_records,
            max_bytes: 1 << 20,
            max_wait,
            operation: Operation::Append,
            match_key: "n".into(),
        })
    }

    /// A batch that is not full leaves once its oldest message waited `--batch-max-wait`, with
    /// the channel still open, and not a moment before; the pollers see it waiting until then.
    #[tokio::test(start_paused = true)]
    async fn an_open_batch_leaves_by_age_after_batch_max_wait_and_not_before() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let (records, receiver) = mpsc::unbounded_channel();
        let (waiting_tx, waiting) = watch::channel(0);
        let task = tokio::spawn(stage(delivery).run(
            batcher(100, Duration::from_secs(1)),
            receiver,
            waiting_tx,
        ));
        let start = tokio::time::Instant::now();
        let lease = fakes::held(&ledger, Received::fake("m1", "{}"));
        records.send((fakes::record(), lease)).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(999), calls.recv()).await;
        assert!(early.is_err(), "nothing leaves before --batch-max-wait");
        assert_eq!(*waiting.borrow(), 1, "the message waits in the open batch");
        let call = calls.recv().await.expect("the batch leaves by age");
        assert_eq!(call.at - start, Duration::from_secs(1));
        assert_eq!((call.records, call.key), (1, batch_key(["m1"])));
        drop(records);
        task.await.unwrap();
        assert_eq!(settle.fates(), [("m1".to_owned(), "delivered".to_owned())]);
        assert_eq!(*waiting.borrow(), 0);
    }

    /// A full batch leaves at once, without waiting for its age; the rest stays open.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_at_once_and_the_rest_waits_for_its_age() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let (records, receiver) = mpsc::unbounded_channel();
        let (waiting_tx, _waiting) = watch::channel(0);
        let task = tokio::spawn(stage(delivery).run(
            batcher(2, Duration::from_secs(60)),
            receiver,
            waiting_tx,
        ));
        let start = tokio::time::Instant::now();
        for id in ["m1", "m2", "m3"] {
            let lease = fakes::held(&ledger, Received::fake(id, "{}"));
            records.send((fakes::record(), lease)).unwrap();
        }
        let full = calls.recv().await.expect("the full batch");
        assert_eq!((full.records, full.at - start), (2, Duration::ZERO));
        let aged = calls.recv().await.expect("the rest, by age");
        assert_eq!(
            (aged.records, aged.at - start),
            (1, Duration::from_secs(60))
        );
        drop(records);
        task.await.unwrap();
        assert_eq!(settle.fates().len(), 3);
    }
}
