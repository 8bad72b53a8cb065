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

use super::Pipeline;
use super::concurrency::Slot;
use super::fifo::GroupGate;
use crate::batch::Batch;
use crate::batch::batcher::Batcher;
use crate::budget::Ticket;
use crate::decode::Decoded;
use crate::lease::Lease;

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

pub async fn run(
    pipeline: Arc<Pipeline>,
    mut batcher: Batcher,
    mut records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
    waiting: watch::Sender<usize>,
) {
    let telemetry = pipeline.telemetry.clone();
    let fifo = pipeline.settings.source_is_fifo();
    let gate = Arc::new(GroupGate::default());
    let mut tasks = JoinSet::new();
    let mut turn = Turn {
        ready: VecDeque::new(),
        slot: None,
        ticket: None,
        getting_slot: None,
        getting_ticket: None,
    };
    let mut closing = false;
    loop {
        let now = Instant::now();
        let in_hand = turn.slot.is_some() && turn.ticket.is_some();
        if in_hand {
            let leaving = turn.ready.pop_front().or_else(|| {
                let eligible = batcher.deadline();
                batcher
                    .poll(now, closing)
                    .map(|batch| (batch, eligible.unwrap_or(now)))
            });
            if let Some((batch, eligible)) = leaving {
                telemetry.slot_wait(now.saturating_duration_since(eligible));
                telemetry.batch_flushed(
                    batch.reason.as_str(),
                    batch.rows.len(),
                    batch.message_count(),
                );
                let (slot, mut ticket) = (turn.slot.take(), turn.ticket.take());
                let hold = if fifo {
                    let groups = batch.groups();
                    match gate.try_acquire(&groups) {
                        Some(hold) => Some(hold),
                        None => {
                            // An earlier batch of a group still runs. The ticket would be spent
                            // late, so close on the next call: give it up and pay afresh.
                            let hold = gate.acquire(groups).await;
                            ticket = Some(pipeline.api.budget().acquire().await);
                            Some(hold)
                        }
                    }
                } else {
                    None
                };
                let pipeline = pipeline.clone();
                tasks.spawn(async move {
                    if let Some(ticket) = ticket {
                        pipeline.deliver(batch, ticket).await;
                    }
                    drop(hold);
                    drop(slot);
                });
                continue;
            }
        }
        let waiting_now = turn.waiting_messages(&batcher);
        telemetry.set_buffered(waiting_now);
        waiting.send_replace(waiting_now);
        let has_work = turn.has_work(&batcher);
        if closing && !has_work {
            break;
        }
        // A slot is sought only once a batch could leave: a token taken early would be spent
        // later than the bucket assumed, and two calls could reach the API closer than it allows.
        let deadline = batcher.deadline();
        let due = !turn.ready.is_empty()
            || (has_work && closing)
            || deadline.is_some_and(|deadline| deadline <= now);
        if due && turn.slot.is_none() && turn.getting_slot.is_none() {
            let slots = pipeline.slots.clone();
            turn.getting_slot = Some(Box::pin(async move { slots.acquire().await }));
        }
        if due && turn.slot.is_some() && turn.ticket.is_none() && turn.getting_ticket.is_none() {
            let pipeline = pipeline.clone();
            turn.getting_ticket = Some(Box::pin(
                async move { pipeline.api.budget().acquire().await },
            ));
        }
        let wake_at = if due { None } else { deadline };
        tokio::select! {
            item = records.recv(), if !closing => match item {
                Some(first) => {
                    // What is already queued joins in the same turn: a turn per message costs
                    // more than the batcher does.
                    let closed_at = Instant::now();
                    let queued = std::iter::from_fn(|| records.try_recv().ok()).take(DRAIN - 1);
                    for (decoded, lease) in std::iter::once(first).chain(queued) {
                        for batch in batcher.push(decoded, lease, closed_at) {
                            turn.ready.push_back((batch, closed_at));
                        }
                    }
                }
                None => closing = true,
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
    while let Some(ended) = tasks.join_next().await {
        report(ended);
    }
}
