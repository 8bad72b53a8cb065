//! The dispatcher: feeds the pure batcher, and sends a batch when it holds a slot, that is an
//! in-flight place under the (adaptive) concurrency limit and a token of the budget. A slot is
//! sought once a batch could leave: it is full, or its oldest message has waited
//! `--batch-max-wait`. While it waits for the slot, the open batch keeps filling, up to
//! `--batch-max-records` and `--batch-max-bytes`; a full batch closes and queues for the next slot
//! (`batcher::departure` states the rule). FIFO groups leave in order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A closed batch waiting for a slot, a ticket or (FIFO) its groups; `groups` and when its
/// first message was received are computed once.
struct Waiting {
    batch: Batch,
    eligible: Instant,
    groups: Vec<String>,
    received: Instant,
}

/// SQS keeps a received message invisible for at most 12 hours in all; past that, extensions fail
/// and it reappears while the worker still holds it. A batch that waited this long for a slot or
/// a ticket (a budget store down, a quota paused for hours) goes back to the queue first: a fresh
/// receive starts a fresh 12 hours.
pub const HOLD_CEILING: Duration = Duration::from_secs(11 * 3600);

/// The batch that leaves next: a closed one (its place in the queue), or the open one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Next {
    Ready(usize),
    Open,
}

/// What the dispatcher holds between turns.
struct Turn {
    ready: VecDeque<Waiting>,
    slot: Option<Slot>,
    ticket: Option<Ticket>,
    /// When the call the ticket pays for may leave: under a shared quota, a fixed time after the
    /// take, which the replica spends gathering messages.
    leaves_at: Instant,
    getting_slot: Option<BoxFuture<'static, Slot>>,
    getting_ticket: Option<BoxFuture<'static, Ticket>>,
}

impl Turn {
    fn waiting_messages(&self, batcher: &Batcher) -> usize {
        batcher.buffered_messages()
            + self
                .ready
                .iter()
                .map(|waiting| waiting.batch.message_count())
                .sum::<usize>()
    }

    fn has_work(&self, batcher: &Batcher) -> bool {
        !self.ready.is_empty() || batcher.buffered_messages() > 0
    }
}

/// What the dispatcher tells the pollers: how many messages wait for a slot, and whether it holds
/// a ticket (under a shared quota it then gathers the call's messages: `run::read_ahead`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub messages: usize,
    pub holds_ticket: bool,
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
    /// How long after its ticket a call leaves (`Budget::gathering`; zero unless shared).
    pub gathering: Duration,
}

impl Dispatch {
    /// Feeds the batcher from `records` and launches batches until the channel closes and the
    /// last delivery ends; `waiting` tells the pollers how many messages wait for a slot.
    pub async fn run(
        self,
        batcher: Batcher,
        records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
        waiting: watch::Sender<Backlog>,
    ) {
        dispatch(self, batcher, records, waiting).await
    }
}

async fn dispatch(
    stage: Dispatch,
    batcher: Batcher,
    mut records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
    waiting: watch::Sender<Backlog>,
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
            leaves_at: tokio::time::Instant::now().into_std(),
            getting_slot: None,
            getting_ticket: None,
        },
        closing: false,
    };
    let mut freed = dispatcher.gate.freed();
    let telemetry = dispatcher.stage.telemetry.clone();
    loop {
        let now = tokio::time::Instant::now().into_std();
        if dispatcher.launch(now) {
            continue;
        }
        let waiting_now = dispatcher.turn.waiting_messages(&dispatcher.batcher);
        telemetry.set_buffered(waiting_now);
        waiting.send_replace(Backlog {
            messages: waiting_now,
            holds_ticket: dispatcher.turn.ticket.is_some(),
        });
        if dispatcher.closing && !dispatcher.turn.has_work(&dispatcher.batcher) {
            break;
        }
        let ceiling = dispatcher.release_overdue(now);
        let gathered = (dispatcher.turn.ticket.is_some() && dispatcher.turn.leaves_at > now)
            .then_some(dispatcher.turn.leaves_at);
        let wake_at = [dispatcher.seek_slot(now), ceiling, gathered]
            .into_iter()
            .flatten()
            .min();
        let Dispatcher {
            batcher,
            tasks,
            turn,
            closing,
            fifo,
            stage,
            ..
        } = &mut dispatcher;
        let gathering = &stage.gathering;
        tokio::select! {
            item = records.recv(), if !*closing => match item {
                Some(first) => {
                    // What is already queued joins in the same turn: a turn per message costs
                    // more than the batcher does.
                    let closed_at = tokio::time::Instant::now().into_std();
                    let queued = std::iter::from_fn(|| records.try_recv().ok()).take(DRAIN - 1);
                    for (decoded, lease) in std::iter::once(first).chain(queued) {
                        for batch in batcher.push(decoded, lease, closed_at) {
                            turn.ready.push_back(Waiting::new(batch, closed_at, *fifo));
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
                turn.leaves_at = tokio::time::Instant::now().into_std() + *gathering;
                turn.getting_ticket = None;
            }
            _ = tokio::time::sleep_until(wake_at.unwrap_or(now).into()), if wake_at.is_some() => {}
            // A batch in flight was decided: a waiting batch of its groups may leave now.
            _ = freed.changed() => {}
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => report(ended),
        }
    }
    telemetry.set_buffered(0);
    waiting.send_replace(Backlog::default());
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

impl Waiting {
    fn new(batch: Batch, eligible: Instant, fifo: bool) -> Self {
        let groups = if fifo { batch.groups() } else { Vec::new() };
        let received = batch
            .messages()
            .map(|lease| lease.as_ref().received_at)
            .min()
            .unwrap_or(eligible);
        Self {
            batch,
            eligible,
            groups,
            received,
        }
    }
}

impl Dispatcher {
    /// Gives back to the queue the waiting batches (and the open one) held for `HOLD_CEILING`;
    /// returns when the next one comes due.
    fn release_overdue(&mut self, now: Instant) -> Option<Instant> {
        let overdue = |received: Instant| now.saturating_duration_since(received) >= HOLD_CEILING;
        let mut released: Vec<Batch> = Vec::new();
        for waiting in std::mem::take(&mut self.turn.ready) {
            if overdue(waiting.received) {
                released.push(waiting.batch);
            } else {
                self.turn.ready.push_back(waiting);
            }
        }
        if self.batcher.first_received().is_some_and(overdue) {
            released.extend(self.batcher.flush(crate::batch::FlushReason::Shutdown));
        }
        if self.fifo && !released.is_empty() {
            // A group's later batches go back with it, in the same pass: one left queued could
            // launch before the release is stamped, and commit ahead of the released messages.
            // Transitively: a batch that goes back for one group takes the later batches of its
            // other groups with it too.
            let mut groups: HashSet<String> = released.iter().flat_map(Batch::groups).collect();
            loop {
                let before = groups.len();
                for waiting in std::mem::take(&mut self.turn.ready) {
                    if waiting.groups.iter().any(|group| groups.contains(group)) {
                        groups.extend(waiting.groups.iter().cloned());
                        released.push(waiting.batch);
                    } else {
                        self.turn.ready.push_back(waiting);
                    }
                }
                let open = self.batcher.open_groups();
                if open.iter().any(|group| groups.contains(group)) {
                    groups.extend(open.iter().cloned());
                    released.extend(self.batcher.flush(crate::batch::FlushReason::Shutdown));
                }
                if groups.len() == before {
                    break;
                }
            }
        }
        for batch in released {
            tracing::warn!(
                messages = batch.message_count(),
                "a batch waited 11 hours for a slot or a quota token; its messages go back to the \
                 queue before SQS's 12-hour visibility ceiling"
            );
            self.tasks.spawn(self.stage.delivery.release(batch));
        }
        self.turn
            .ready
            .iter()
            .map(|waiting| waiting.received)
            .chain(self.batcher.first_received())
            .min()
            .map(|oldest| oldest + HOLD_CEILING)
    }

    /// The batch that may leave next, if any. On a FIFO queue that is the first closed batch
    /// whose groups are neither in flight nor held by an earlier waiting batch, else the open
    /// batch on the same terms: a batch behind a busy group waits in the queue while batches of
    /// other groups go past it (no head-of-line blocking), and a group's batches keep their order.
    fn next(&self, now: Instant) -> Option<Next> {
        let open_due = self.batcher.deadline().is_some_and(|due| due <= now)
            || (self.closing && self.batcher.buffered_messages() > 0);
        if !self.fifo {
            if !self.turn.ready.is_empty() {
                return Some(Next::Ready(0));
            }
            return open_due.then_some(Next::Open);
        }
        let mut behind: HashSet<&String> = HashSet::new();
        for (index, waiting) in self.turn.ready.iter().enumerate() {
            let queued = waiting.groups.iter().any(|group| behind.contains(group));
            if !queued && self.gate.is_free(&waiting.groups) {
                return Some(Next::Ready(index));
            }
            behind.extend(&waiting.groups);
        }
        let open = self.batcher.open_groups();
        let open_free = open.iter().all(|group| !behind.contains(group)) && self.gate.is_free(open);
        (open_due && open_free).then_some(Next::Open)
    }

    /// With a slot and a ticket in hand, sends the batch that may leave next; true when the
    /// dispatcher should look again at once (a batch left, or went back to the queue).
    fn launch(&mut self, now: Instant) -> bool {
        let Some(next) = self.next(now) else {
            // Nothing may leave: a ticket held now would be spent late. It goes back.
            self.turn.ticket = None;
            return false;
        };
        if self.turn.slot.is_none() || self.turn.ticket.is_none() || now < self.turn.leaves_at {
            return false;
        }
        let waiting = match next {
            Next::Ready(index) => self.turn.ready.remove(index),
            Next::Open => {
                let eligible = self.batcher.deadline().unwrap_or(now);
                self.batcher
                    .poll(now, self.closing)
                    .map(|batch| Waiting::new(batch, eligible, self.fifo))
            }
        };
        let Some(waiting) = waiting else {
            return false;
        };
        let hold = if self.fifo {
            match self.gate.try_acquire(&waiting.groups) {
                Some(hold) => Some(hold),
                None => {
                    // A message of a busy group joined the open batch after its ticket was
                    // sought: the batch waits in the queue, and the ticket goes back unspent.
                    let at = match next {
                        Next::Ready(index) => index,
                        Next::Open => self.turn.ready.len(),
                    };
                    self.turn.ready.insert(at, waiting);
                    self.turn.ticket = None;
                    return true;
                }
            }
        } else {
            None
        };
        let Waiting {
            batch, eligible, ..
        } = waiting;
        let telemetry = &self.stage.telemetry;
        telemetry.slot_wait(now.saturating_duration_since(eligible));
        telemetry.batch_flushed(
            batch.reason.as_str(),
            batch.rows.len(),
            batch.message_count(),
        );
        let (slot, ticket) = (self.turn.slot.take(), self.turn.ticket.take());
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

    /// Starts seeking a slot, then a ticket, once a batch may leave; when none may yet, the time
    /// the open batch comes due (a FIFO batch held back by its groups wakes on `freed`).
    fn seek_slot(&mut self, now: Instant) -> Option<Instant> {
        // A slot is sought only once a batch could leave: a token taken early would be spent
        // later than the bucket assumed, and two calls could reach the API closer than it allows.
        // On a FIFO queue the ticket comes after the batch's groups are known to be free.
        let due = self.next(now).is_some();
        let turn = &mut self.turn;
        if due && turn.slot.is_none() && turn.getting_slot.is_none() {
            let slots = self.stage.slots.clone();
            turn.getting_slot = Some(Box::pin(async move { slots.acquire().await }));
        }
        if due && turn.slot.is_some() && turn.ticket.is_none() && turn.getting_ticket.is_none() {
            let budget = self.stage.budget.clone();
            turn.getting_ticket = Some(Box::pin(async move { budget.acquire().await }));
        }
        if due {
            None
        } else {
            self.batcher.deadline().filter(|due| *due > now)
        }
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
            gathering: Duration::ZERO,
            delivery,
        }
    }

    type Started = (
        mpsc::UnboundedSender<(Decoded, Lease)>,
        watch::Receiver<Backlog>,
        tokio::task::JoinHandle<()>,
    );

    /// Runs the dispatcher: the records' sender, what it tells the pollers, and its task.
    fn start(dispatch: Dispatch, batcher: Batcher) -> Started {
        let (records, receiver) = mpsc::unbounded_channel();
        let (waiting_tx, waiting) = watch::channel(Backlog::default());
        let task = tokio::spawn(dispatch.run(batcher, receiver, waiting_tx));
        (records, waiting, task)
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
        let (records, waiting, task) = start(stage(delivery), batcher(100, Duration::from_secs(1)));
        let start = tokio::time::Instant::now();
        let lease = fakes::held(&ledger, Received::fake("m1", "{}"));
        records.send((fakes::record(), lease)).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(999), calls.recv()).await;
        assert!(early.is_err(), "nothing leaves before --batch-max-wait");
        assert_eq!(
            waiting.borrow().messages,
            1,
            "the message waits in the open batch"
        );
        let call = calls.recv().await.expect("the batch leaves by age");
        assert_eq!(call.at - start, Duration::from_secs(1));
        assert_eq!((call.records, call.key), (1, batch_key(["m1"])));
        drop(records);
        task.await.unwrap();
        assert_eq!(settle.fates(), [("m1".to_owned(), "delivered".to_owned())]);
        assert_eq!(waiting.borrow().messages, 0);
    }

    /// Under a shared quota the call leaves a fixed time after its ticket (so the API sees the
    /// calls as far apart as the takes), and what arrives meanwhile joins it: the pollers are
    /// told that the dispatcher holds a ticket, which lifts their small read-ahead.
    #[tokio::test(start_paused = true)]
    async fn a_shared_ticket_gathers_what_arrives_before_its_call_leaves() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let mut dispatch = stage(delivery);
        dispatch.gathering = Duration::from_secs(1);
        let (records, waiting, task) = start(dispatch, batcher(100, Duration::from_secs(1)));
        let start = tokio::time::Instant::now();
        let lease = fakes::held(&ledger, Received::fake("m1", "{}"));
        records.send((fakes::record(), lease)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.borrow().holds_ticket,
            "no ticket before the batch is due"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            *waiting.borrow(),
            Backlog {
                messages: 1,
                holds_ticket: true
            },
            "due at 1 s: the ticket is held, the call gathers"
        );
        let lease = fakes::held(&ledger, Received::fake("m2", "{}"));
        records.send((fakes::record(), lease)).unwrap();
        let call = calls.recv().await.expect("the batch leaves");
        assert_eq!(
            call.at - start,
            Duration::from_secs(2),
            "1 s after the ticket"
        );
        assert_eq!((call.records, call.key), (2, batch_key(["m1", "m2"])));
        drop(records);
        task.await.unwrap();
        assert_eq!(settle.fates().len(), 2);
        assert!(!waiting.borrow().holds_ticket);
    }

    /// A full batch leaves at once, without waiting for its age; the rest stays open.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_at_once_and_the_rest_waits_for_its_age() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let (records, _waiting, task) = start(stage(delivery), batcher(2, Duration::from_secs(60)));
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

    /// FIFO: a batch whose group is still in flight waits in the queue, and a later batch of
    /// other groups goes past it at once instead of waiting for the earlier job to end.
    #[tokio::test(start_paused = true)]
    async fn a_batch_behind_a_busy_group_lets_other_groups_pass() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (mut api, mut calls) = fakes::api(vec![]);
        api.job_time = Duration::from_secs(5);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, true);
        let (records, _waiting, task) = start(stage(delivery), batcher(2, Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        let sent = [
            ("h1", "hot", 1),
            ("h2", "hot", 2),
            ("h3", "hot", 3),
            ("c1", "cold", 1),
            ("d1", "other", 1),
            ("d2", "other", 2),
        ];
        for (id, group, sequence) in sent {
            let lease = fakes::held(&ledger, fakes::in_group(id, group, sequence));
            records.send((fakes::record(), lease)).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let call = calls.recv().await.expect("a call");
            seen.push((call.key, call.at - start >= Duration::from_secs(5)));
        }
        let expected = [
            (batch_key(["h1", "h2"]), false),
            (batch_key(["d1", "d2"]), false),
            (batch_key(["h3", "c1"]), true),
        ];
        assert_eq!(seen, expected, "(key, left after the hot group's 5 s job)");
        drop(records);
        task.await.unwrap();
        assert_eq!(settle.fates().len(), 6);
    }

    /// FIFO: a ticket is taken only for a batch whose groups are free, so a queue of batches
    /// behind one hot group spends one ticket per call made, none thrown away.
    #[tokio::test(start_paused = true)]
    async fn a_batch_behind_a_busy_group_takes_no_ticket_until_the_group_is_free() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (mut api, mut calls) = fakes::api(vec![]);
        api.job_time = Duration::from_secs(5);
        let settle = Arc::new(FakeSettle::default());
        let mut delivery = fakes::delivery(api, settle.clone(), &ledger, true);
        let telemetry = delivery.telemetry.clone();
        let limits = records_contract::quota::parse_limits("60/min:10").unwrap();
        Arc::get_mut(&mut delivery).unwrap().budget =
            Arc::new(Budget::local(&limits, None, telemetry.clone()).unwrap());
        let (records, _waiting, task) = start(stage(delivery), batcher(1, Duration::from_secs(60)));
        for sequence in 1..=3 {
            let id = format!("h{sequence}");
            let lease = fakes::held(&ledger, fakes::in_group(&id, "hot", sequence));
            records.send((fakes::record(), lease)).unwrap();
        }
        for _ in 0..3 {
            calls.recv().await.expect("a call");
        }
        drop(records);
        task.await.unwrap();
        let metrics = telemetry.render();
        assert!(
            metrics.contains("sbw_budget_calls_spent_total{limit=\"60/min:10\"} 3"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("sbw_budget_calls_refunded_total{limit=\"60/min:10\"}"),
            "no ticket was taken and given back: {metrics}"
        );
        assert_eq!(settle.fates().len(), 3);
    }

    /// A dispatcher whose four slots are all taken: nothing leaves until `taken` is dropped.
    struct Starved {
        ledger: Arc<Ledger>,
        settle: Arc<FakeSettle>,
        calls: mpsc::UnboundedReceiver<fakes::Submitted>,
        taken: Vec<Slot>,
        records: mpsc::UnboundedSender<(Decoded, Lease)>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Starved {
        async fn new(fifo: bool, max_records: usize) -> Self {
            let ledger = Ledger::new(Duration::from_secs(30));
            let (api, calls) = fakes::api(vec![]);
            let settle = Arc::new(FakeSettle::default());
            let delivery = fakes::delivery(api, settle.clone(), &ledger, fifo);
            let mut taken = Vec::new();
            for _ in 0..4 {
                taken.push(delivery.slots.acquire().await);
            }
            let batcher = batcher(max_records, Duration::from_secs(1));
            let (records, _waiting, task) = start(stage(delivery), batcher);
            Self {
                ledger,
                settle,
                calls,
                taken,
                records,
                task,
            }
        }

        /// Sends `message` as received now, on the paused clock.
        fn receive(&self, mut message: Received) {
            message.received_at = tokio::time::Instant::now().into_std();
            let lease = fakes::held(&self.ledger, message);
            self.records.send((fakes::record(), lease)).unwrap();
        }

        fn retried(ids: &[&str]) -> Vec<(String, String)> {
            ids.iter()
                .map(|id| (id.to_string(), "retry".to_owned()))
                .collect()
        }

        async fn end(self) {
            drop(self.records);
            self.task.await.unwrap();
        }
    }

    /// A batch that waits for a slot for 11 hours goes back to the queue (released, visibility
    /// 0) before SQS's 12-hour visibility ceiling would make it reappear while held.
    #[tokio::test(start_paused = true)]
    async fn a_batch_held_for_eleven_hours_goes_back_to_the_queue() {
        let mut starved = Starved::new(false, 2).await;
        for id in ["m1", "m2", "m3"] {
            starved.receive(Received::fake(id, "{}"));
        }
        tokio::time::sleep(HOLD_CEILING - Duration::from_secs(60)).await;
        assert!(
            starved.settle.fates().is_empty(),
            "held, not released, before 11 hours"
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        let mut fates = starved.settle.fates();
        fates.sort();
        assert_eq!(fates, Starved::retried(&["m1", "m2", "m3"]));
        assert!(starved.calls.try_recv().is_err(), "nothing was sent");
        starved.end().await;
    }

    /// FIFO: when a group's overdue batch goes back to the queue, the group's later batch goes
    /// with it in the same pass; left queued, it could commit ahead of the released message.
    #[tokio::test(start_paused = true)]
    async fn a_released_fifo_batch_takes_its_groups_later_batches_with_it() {
        let mut starved = Starved::new(true, 1).await;
        starved.receive(fakes::in_group("m1", "g", 1));
        tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
        starved.receive(fakes::in_group("m2", "g", 2));
        tokio::time::sleep(Duration::from_secs(3600 + 60)).await;
        starved.taken.clear();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(starved.settle.fates(), Starved::retried(&["m1", "m2"]));
        assert!(
            starved.calls.try_recv().is_err(),
            "m2 did not commit ahead of m1"
        );
        starved.end().await;
    }

    /// The release is transitive: B1{g1} goes back at 11 hours, B2{g1,g2} with it for g1, and
    /// B3{g2} with them for g2; left queued, B3 could commit g2 ahead of B2's g2 message.
    #[tokio::test(start_paused = true)]
    async fn a_fifo_release_follows_groups_from_batch_to_batch() {
        let mut starved = Starved::new(true, 2).await;
        starved.receive(fakes::in_group("a1", "g1", 1));
        starved.receive(fakes::in_group("c1", "g3", 1));
        tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
        for (id, group, sequence) in [
            ("a2", "g1", 2),
            ("b1", "g2", 1),
            ("b2", "g2", 2),
            ("d1", "g4", 1),
        ] {
            starved.receive(fakes::in_group(id, group, sequence));
        }
        tokio::time::sleep(Duration::from_secs(3600 + 60)).await;
        starved.taken.clear();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mut fates = starved.settle.fates();
        fates.sort();
        let expected = Starved::retried(&["a1", "a2", "b1", "b2", "c1", "d1"]);
        assert_eq!(fates, expected);
        starved.end().await;
    }
}
