//! A batch's life after the flush: submit under its key, handle each kind of refusal (split,
//! drop the offender, bisect, pause, release), ack on acceptance, follow the job, and settle
//! every message's fate. The batch owns its leases throughout; whatever path it takes, every lease
//! ends in a settlement, or, if the task dies, reports itself: a held one as an orphan that the
//! heartbeat releases, a deleted one as unsettled or lost (`lease`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::Instrument;

use super::jobs::{JobEnd, Overdue, row_fates, track};
use crate::batch::key::derived_key;
use crate::config::{AckOn, Operation};
use crate::lease::Ledger;
use crate::lease::{Lease, Leased};
use crate::outage::Outage;
use crate::outcome::{Fate, Reason, Rejection, Settle, Settlement, release_visibility};
use crate::schema::SchemaHandle;
use crate::sink::api::{Accepted, Action, ApiError, BatchCall, Records, classify};
use crate::sink::budget::{Budget, Ticket};
use crate::sink::concurrency::Slots;
use crate::sink::dispatch::HOLD_CEILING;
use crate::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

/// A delivery's batch: each message held until its 202, and then, in `accepted` mode, deleted.
type Batch = crate::batch::Batch<Leased>;
type Row = crate::batch::Row<Leased>;

/// May this batch's job still be resubmitted once? Carried through splits and bisections, so a
/// resubmitted batch's halves are not resubmitted again.
#[derive(Clone)]
struct Attempt {
    resubmit_left: bool,
    /// How many times this batch was held for a retry (`hold_and_retry`): each pause doubles.
    holds: u32,
    /// The bisection of a 400 that this part belongs to, shared by every part of the batch it
    /// began in.
    bisection: Option<Arc<Bisection>>,
    /// Every attempt of the last submission timed out (it was held once to see whether the API
    /// committed it).
    timed_out: bool,
}

/// A batch kept (the heartbeat keeps its messages invisible) to be sent again under the same key
/// after `pause`, while receiving waits as long: a refusal that applies to every batch (401, 403,
/// 404, 405), or a FIFO batch's transient failures, spend time, not receive counts. At the drain
/// it goes back to the queue instead.
struct Hold {
    batch: Batch,
    key: String,
    attempt: Attempt,
    pause: Duration,
}

impl Hold {
    fn new(batch: Batch, key: String, attempt: Attempt, pause: Duration) -> Self {
        Self {
            batch,
            key,
            attempt,
            pause,
        }
    }
}

/// How many times a FIFO batch is held through transient failures before it goes back to the
/// queue: with pauses doubling from `--release-backoff` up to 15 minutes, about 36 minutes of
/// outage at the default 10 s.
const MAX_FIFO_HOLDS: u32 = 8;

struct Bisection {
    /// Calls it may still spend (`bisection_calls`).
    calls_left: AtomicUsize,
    /// Whether the API accepted any part: until it has, a row refused alone may be refused only
    /// because the API refuses everything.
    any_accepted: AtomicBool,
    /// Rows refused alone, decided when the bisection ends.
    refused_alone: std::sync::Mutex<Vec<(Row, Rejection)>>,
}

impl Bisection {
    fn refused_alone(&self, rows: Vec<Row>, rejection: Rejection) {
        let mut refused = self.refused_alone.lock().unwrap_or_else(|p| p.into_inner());
        refused.extend(rows.into_iter().map(|row| (row, rejection.clone())));
    }

    fn take_refused_alone(&self) -> Vec<(Row, Rejection)> {
        std::mem::take(&mut *self.refused_alone.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Times a message may be received before a row refused alone goes to the DLQ even though no
/// part of its batch was accepted.
const SYSTEMIC_RECEIVES: u32 = 3;

const FIRST: Attempt = Attempt {
    resubmit_left: true,
    holds: 0,
    bisection: None,
    timed_out: false,
};

/// The most calls a bisection of `rows` may spend: enough to isolate four bad rows (each takes
/// at most two calls a level), where an unbounded one spends 2N-1 calls when the API refuses
/// every request, each paid from the quota.
pub fn bisection_calls(rows: usize) -> usize {
    let levels = usize::BITS - rows.max(1).leading_zeros();
    4 * 2 * levels as usize
}

/// Takes two calls (one bisection) from the budget; false when it is spent.
fn spend_bisection(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(2)
        })
        .is_ok()
}

fn settle_rows(rows: Vec<Row>, fate: impl Fn() -> Fate) -> Settlement {
    let mut settlement = Settlement::default();
    for row in rows {
        settlement.add_all(row.messages, fate());
    }
    settlement
}

fn rejected(reason: Reason, error: &ApiError) -> impl Fn() -> Fate {
    let rejection =
        Rejection::new(reason, error.to_string()).with_code(error.code().map(str::to_owned));
    move || Fate::Rejected(rejection.clone())
}

/// What a delivery decides by: its part of the settings.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The source is a FIFO queue: groups stay in order.
    pub fifo: bool,
    pub ack_on: AckOn,
    pub operation: Operation,
    pub job_timeout: Duration,
    pub auth_retry: Duration,
    /// `--release-backoff`, and the most it doubles to.
    pub release_base: Duration,
    pub release_cap: Duration,
}

/// When the batch's held messages near SQS's 12-hour visibility ceiling: the earliest receive
/// plus `HOLD_CEILING`. Messages already deleted (accepted mode) have no ceiling.
fn held_until(batch: &Batch) -> Option<Instant> {
    batch
        .messages()
        .filter_map(Leased::held)
        .map(|lease| lease.as_ref().received_at)
        .min()
        .map(|received| received + HOLD_CEILING)
}

/// The delivery stage: one batch's submit, refusals, acks, job and settlement, with only the
/// handles it needs. The API and the settler come through their seams (`Records`, `Settle`).
pub struct Delivery {
    pub api: Arc<dyn Records>,
    pub settler: Arc<dyn Settle>,
    pub budget: Arc<Budget>,
    pub slots: Slots,
    /// The ledger's FIFO release stamps: rows behind a released group go back with it.
    pub ledger: Arc<Ledger>,
    pub schema: SchemaHandle,
    pub outage: Arc<Outage>,
    /// Cancelled when the drain begins: a held batch goes back to the queue.
    pub draining: CancellationToken,
    pub telemetry: Arc<Telemetry>,
    pub policy: Policy,
}

impl Delivery {
    /// Delivers a freshly flushed batch under the key of its own message IDs.
    /// `ticket` pays for its first call.
    pub fn deliver(
        self: &Arc<Self>,
        batch: crate::batch::Batch<Lease>,
        ticket: Ticket,
    ) -> BoxFuture<'static, ()> {
        let batch = batch.map_messages(Leased::Held);
        let key = batch.key();
        self.deliver_as(batch, key, FIRST, Some(ticket))
    }

    /// Gives a batch that was never sent back to the queue: its messages' fate is undecided.
    pub fn release(self: &Arc<Self>, batch: crate::batch::Batch<Lease>) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let batch = batch.map_messages(Leased::Held);
            this.settler
                .settle(settle_rows(batch.rows, || Fate::Retry))
                .await
        })
    }

    /// Delivers a part of a batch (a half, the rest after an offender) under its own key.
    fn deliver_part(self: &Arc<Self>, batch: Batch, attempt: Attempt) -> BoxFuture<'static, ()> {
        let key = batch.key();
        self.deliver_as(batch, key, attempt, None)
    }

    fn deliver_as(
        self: &Arc<Self>,
        mut batch: Batch,
        mut key: String,
        mut attempt: Attempt,
        mut ticket: Option<Ticket>,
    ) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            // One turn per call; a held batch takes another turn after its pause (a loop, so
            // that an outage of days does not nest a future per retry).
            loop {
                let behind = this.rows_behind_a_released_group(&mut batch);
                if !behind.is_empty() {
                    // Settled as retries: one already deleted (accepted mode) goes to the DLQ.
                    this.settler
                        .settle(settle_rows(behind, || Fate::Retry))
                        .await;
                    if batch.rows.is_empty() {
                        return;
                    }
                    // The settle took time: a ticket spent now would reach the API late, closer
                    // to the next call than the bucket assumed. The rest pays for a fresh one.
                    key = batch.key();
                    ticket = None;
                    continue;
                }
                let span = tracing::info_span!(
                    "batch",
                    key = %key,
                    records = batch.rows.len(),
                    messages = batch.message_count()
                );
                let held = this
                    .call(batch, key, attempt, ticket.take())
                    .instrument(span)
                    .await;
                let Some(hold) = held else { return };
                if held_until(&hold.batch)
                    .is_some_and(|by| tokio::time::Instant::now().into_std() + hold.pause >= by)
                {
                    tracing::warn!(
                        messages = hold.batch.message_count(),
                        "a held batch would pass 11 hours; its messages go back to the queue \
                         before SQS's 12-hour visibility ceiling"
                    );
                    let settlement = settle_rows(hold.batch.rows, || Fate::Retry);
                    return this.settler.settle(settlement).await;
                }
                this.outage.began(Instant::now(), hold.pause);
                tokio::select! {
                    _ = tokio::time::sleep(hold.pause) => {}
                    _ = this.draining.cancelled() => {
                        let settlement = settle_rows(hold.batch.rows, || Fate::Retry);
                        return this.settler.settle(settlement).await;
                    }
                }
                (batch, key) = (hold.batch, hold.key);
                attempt = Attempt {
                    holds: hold.attempt.holds.saturating_add(1),
                    ..hold.attempt
                };
            }
        })
    }

    /// One submission and whatever its answer leads to; `Some` when the batch is to be held and
    /// sent again under the same key.
    async fn call(
        self: &Arc<Self>,
        batch: Batch,
        key: String,
        attempt: Attempt,
        ticket: Option<Ticket>,
    ) -> Option<Hold> {
        let on_answer = |signal, still_out| self.slots.observe(signal, still_out);
        let call = BatchCall {
            key: &key,
            body: batch.body(),
            records: batch.rows.len(),
            on_answer: &on_answer,
            pay_by: held_until(&batch),
        };
        match self.api.submit(&call, ticket).await {
            Ok(accepted) => {
                if let Some(bisection) = &attempt.bisection {
                    bisection.any_accepted.store(true, Ordering::SeqCst);
                }
                self.telemetry.unblock();
                self.outage.ended();
                self.accepted(batch, key, accepted, attempt).await;
                None
            }
            Err(error) => self.refused(batch, key, error, attempt).await,
        }
    }

    /// FIFO: the rows holding a message that an earlier message of its group was released after.
    /// They go back to the queue with it instead of committing ahead of it.
    fn rows_behind_a_released_group(&self, batch: &mut Batch) -> Vec<Row> {
        if !self.policy.fifo {
            return Vec::new();
        }
        let groups = self.ledger.released_groups();
        batch.extract(|row| row.messages.iter().any(|m| groups.must_follow(m)))
    }

    async fn refused(
        self: &Arc<Self>,
        batch: Batch,
        key: String,
        error: ApiError,
        attempt: Attempt,
    ) -> Option<Hold> {
        let action = classify(&error);
        self.telemetry
            .batch_refused(&error, &format!("{action:?}"), batch.rows.len());
        let fifo = self.policy.fifo;
        let settlement = match action {
            // Every attempt timed out. Once, the whole batch is sent again under its key after a
            // pause, since a slow API may have committed it (the answer is then a replay). If
            // that times out too, the batch is too big for the API's answer time (seed 003:
            // latency grows with the batch): it shrinks, as on a 413.
            Action::Retry { .. } if matches!(error, ApiError::Timeout) && batch.rows.len() > 1 => {
                if !attempt.timed_out {
                    let attempt = Attempt {
                        timed_out: true,
                        ..attempt
                    };
                    return Some(Hold::new(batch, key, attempt, self.policy.release_base));
                }
                self.telemetry.timeout_split(batch.rows.len());
                let attempt = Attempt {
                    timed_out: false,
                    ..attempt
                };
                self.split(batch, attempt).await;
                return None;
            }
            // A FIFO batch is held, not released: a release lets the group's later messages be
            // received (and committed) before it comes back, and a commit-then-error job answers
            // the same key with its own replay when the batch is sent again. After
            // `MAX_FIFO_HOLDS` it goes back to the queue, so that its receive count (and the
            // redrive policy) can see a batch that never gets through.
            Action::Retry { .. } if fifo && attempt.holds < MAX_FIFO_HOLDS => {
                let pause = release_visibility(
                    self.policy.release_base,
                    attempt.holds.saturating_add(1),
                    self.policy.release_cap,
                );
                self.telemetry.api_outage(&error, pause);
                return Some(Hold::new(batch, key, attempt, pause));
            }
            Action::Retry { .. } => {
                self.outage_began(&batch, &error);
                settle_rows(batch.rows, || Fate::Retry)
            }
            Action::Split => match batch.halves() {
                Ok((front, back)) => {
                    self.deliver_part(front, attempt.clone()).await;
                    self.deliver_part(back, attempt).await;
                    return None;
                }
                Err(one) => settle_rows(one.rows, rejected(Reason::Oversize, &error)),
            },
            Action::DropOffender { index } => {
                self.drop_offender(batch, index, &error, attempt).await;
                return None;
            }
            Action::Bisect { schema } => {
                if schema {
                    self.refresh_schema().await;
                }
                let reason = if schema {
                    Reason::UnknownField
                } else {
                    Reason::RequestRejected
                };
                self.bisect(batch, &error, reason, attempt).await;
                return None;
            }
            Action::Pause => {
                self.telemetry.block(format!(
                    "the Records API refused the token ({error}). Fix: set a valid token with write \
                     scope in --api-token-file / RECORDS_API_TOKEN; retrying every {:?}",
                    self.policy.auth_retry
                ));
                // The token is refused for every call: every sender pauses.
                self.budget.pause_for(self.policy.auth_retry);
                return Some(Hold::new(batch, key, attempt, self.policy.auth_retry));
            }
            Action::KeyReused => {
                // The key is the batch's sorted message IDs and the body a function of them, so a
                // job under this key with other bytes comes from another version or other
                // settings. Whether it committed these rows is unknown: sending them again under
                // another key could write them twice, and deleting them could lose them. They go
                // to the DLQ with the reason, where an operator decides (docs/operations.md).
                self.telemetry.key_reused(&key, batch.message_count());
                settle_rows(batch.rows, rejected(Reason::KeyReused, &error))
            }
            Action::GiveBack => settle_rows(batch.rows, || Fate::Retry),
            Action::Release => {
                self.telemetry.block(format!(
                    "the Records API refused the batch ({error}). Fix: check --object and --api-url; \
                     retrying every {:?}",
                    self.policy.auth_retry
                ));
                // Receiving pauses, sending does not: a 404 may name only this batch's route.
                return Some(Hold::new(batch, key, attempt, self.policy.auth_retry));
            }
        };
        self.settler.settle(settlement).await;
        None
    }

    /// Every retry failed on a transient error: receiving pauses, and the batch's messages come
    /// back later, the more often they were received.
    fn outage_began(&self, batch: &Batch, error: &ApiError) {
        let least_received = batch.messages().map(|m| m.receive_count).min();
        let pause = release_visibility(
            self.policy.release_base,
            least_received.unwrap_or(1),
            self.policy.release_cap,
        );
        self.telemetry.api_outage(error, pause);
        self.outage.began(Instant::now(), pause);
    }

    /// A 422 named the row with a field outside the schema: that row goes to the DLQ, the
    /// schema is fetched again, and the rest of the batch is sent again.
    async fn drop_offender(
        self: &Arc<Self>,
        mut batch: Batch,
        index: usize,
        error: &ApiError,
        attempt: Attempt,
    ) {
        let Some(row) = batch.take_row(index) else {
            return self
                .bisect(batch, error, Reason::UnknownField, attempt)
                .await;
        };
        let settlement = settle_rows(vec![row], rejected(Reason::UnknownField, error));
        self.refresh_schema().await;
        if batch.rows.is_empty() {
            return self.settler.settle(settlement).await;
        }
        let rest = self.deliver_part(batch, attempt.clone());
        if self.policy.fifo {
            // The offender is earlier in its group than what follows it: decide it first, so a
            // failed DLQ send takes the rest of its group back.
            self.settler.settle(settlement).await;
            rest.await;
        } else {
            let ((), ()) = tokio::join!(self.settler.settle(settlement), rest);
        }
    }

    /// Halves the batch until the rows the API refuses stand alone, and dead-letters those.
    async fn bisect(
        self: &Arc<Self>,
        batch: Batch,
        error: &ApiError,
        reason: Reason,
        attempt: Attempt,
    ) {
        let alone = batch.rows.len() < 2;
        let Some(bisection) = attempt.bisection.clone() else {
            if alone {
                // Sent alone from the start: the API refused this row itself.
                let settlement = settle_rows(batch.rows, rejected(reason, error));
                return self.settler.settle(settlement).await;
            }
            return self.bisect_from_the_top(batch, error, attempt).await;
        };
        if alone {
            // Decided when the whole bisection is done: a row refused alone proves nothing
            // until some part of its batch was accepted.
            let rejection = Rejection::new(reason, error.to_string())
                .with_code(error.code().map(str::to_owned));
            bisection.refused_alone(batch.rows, rejection);
            return;
        }
        if !spend_bisection(&bisection.calls_left) {
            return self.refused_everything(batch.rows, error).await;
        }
        self.split(batch, attempt).await
    }

    /// Starts the bisection of a refused batch, and decides its rows refused alone at the end:
    /// dead-lettered once some part was accepted (or after `SYSTEMIC_RECEIVES` receives), else
    /// back to the queue with receiving paused, since the API may refuse every request.
    async fn bisect_from_the_top(
        self: &Arc<Self>,
        batch: Batch,
        error: &ApiError,
        mut attempt: Attempt,
    ) {
        let bisection = Arc::new(Bisection {
            calls_left: AtomicUsize::new(bisection_calls(batch.rows.len())),
            any_accepted: AtomicBool::new(false),
            refused_alone: Default::default(),
        });
        attempt.bisection = Some(bisection.clone());
        spend_bisection(&bisection.calls_left);
        self.split(batch, attempt).await;
        let refused = bisection.take_refused_alone();
        if refused.is_empty() {
            return;
        }
        let least_received = refused
            .iter()
            .flat_map(|(row, _)| row.messages.iter().map(|m| m.receive_count))
            .min()
            .unwrap_or(1);
        if bisection.any_accepted.load(Ordering::SeqCst) || least_received >= SYSTEMIC_RECEIVES {
            let mut settlement = Settlement::default();
            for (row, rejection) in refused {
                settlement.add_all(row.messages, Fate::Rejected(rejection));
            }
            return self.settler.settle(settlement).await;
        }
        let rows = refused.into_iter().map(|(row, _)| row).collect();
        self.refused_everything(rows, error).await
    }

    /// No part of a bisection was accepted: the API likely refuses every request. The rows go
    /// back to the queue and receiving pauses, instead of a call (and a DLQ entry) for every row.
    async fn refused_everything(&self, rows: Vec<Row>, error: &ApiError) {
        self.telemetry.block(format!(
            "the Records API refused every part of a batch's bisection ({error}); it likely \
             refuses every request. Fix: check the API's validator and --object; retrying after \
             {:?}",
            self.policy.auth_retry
        ));
        self.outage.began(Instant::now(), self.policy.auth_retry);
        self.settler.settle(settle_rows(rows, || Fate::Retry)).await
    }

    /// Sends the two halves of a batch in turn (in order, for FIFO groups).
    async fn split(self: &Arc<Self>, batch: Batch, attempt: Attempt) {
        match batch.halves() {
            Ok((front, back)) => {
                self.deliver_part(front, attempt.clone()).await;
                self.deliver_part(back, attempt).await;
            }
            Err(one) => self.deliver_part(one, attempt).await,
        }
    }

    async fn accepted(
        self: &Arc<Self>,
        mut batch: Batch,
        key: String,
        accepted: Accepted,
        attempt: Attempt,
    ) {
        self.record_acceptance(&batch, &accepted);
        if self.policy.ack_on == AckOn::Accepted {
            let held = batch.messages().filter_map(Leased::held).collect();
            let gone = self.settler.delete(held).await;
            // A message whose delete failed is still in the queue: it stays held and is settled
            // like any other, never as "already deleted".
            batch = batch.map_messages(|message| match message {
                Leased::Held(lease) if gone.contains(&lease.generation()) => {
                    lease.deleted(&self.telemetry).into()
                }
                other => other,
            });
        }
        let job: Arc<str> = accepted.job_id.as_str().into();
        batch
            .messages_mut()
            .for_each(|message| message.follow(&job));
        let overdue = if self.policy.fifo {
            Overdue::KeepFollowing
        } else {
            Overdue::GiveUp
        };
        let end = track(
            &*self.api,
            &self.telemetry,
            &accepted,
            self.policy.job_timeout,
            overdue,
        )
        .await;
        let settlement = match end {
            JobEnd::Completed(status) => {
                self.telemetry.job_finished(
                    &accepted.job_id,
                    "completed",
                    status.invalid_rows,
                    status.errors.len(),
                );
                let fates = row_fates(batch.rows.len(), &status, &accepted.job_id);
                let mut settlement = Settlement::default();
                for (row, fate) in batch.rows.into_iter().zip(fates) {
                    settlement.add_all(row.messages, fate);
                }
                settlement
            }
            // An append sent again could be written twice; an upsert sent again writes the same
            // values, so it is resubmitted like a failed job.
            JobEnd::Unknown(why) if self.policy.operation == Operation::Append => {
                self.telemetry
                    .job_finished(&accepted.job_id, "unknown", 0, 0);
                let rejection =
                    Rejection::new(Reason::JobUnknown, why).in_job(&accepted.job_id, None);
                settle_rows(batch.rows, || Fate::Rejected(rejection.clone()))
            }
            JobEnd::Failed(why) | JobEnd::Unknown(why) if attempt.resubmit_left => {
                self.telemetry
                    .job_finished(&accepted.job_id, "failed", 0, 0);
                tracing::warn!(
                    job_id = accepted.job_id,
                    why,
                    "job failed; resubmitting once under a derived key"
                );
                let key = derived_key(&key, "resubmit");
                let attempt = Attempt {
                    resubmit_left: false,
                    ..attempt
                };
                // From here a deleted message dropped unsettled counts as lost (its guard).
                batch.messages_mut().for_each(Leased::unfollow);
                self.deliver_as(batch, key, attempt, None).await;
                return;
            }
            JobEnd::Failed(why) | JobEnd::Unknown(why) => {
                self.telemetry
                    .job_finished(&accepted.job_id, "failed", 0, 0);
                let rejection = Rejection::new(Reason::JobFailed, format!("{why}, twice"))
                    .in_job(&accepted.job_id, None);
                settle_rows(batch.rows, || Fate::Rejected(rejection.clone()))
            }
            JobEnd::TimedOut => {
                let rejection = Rejection::new(
                    Reason::JobTimeout,
                    format!(
                        "the job was not terminal after {:?} (--job-timeout)",
                        self.policy.job_timeout
                    ),
                )
                .in_job(&accepted.job_id, None);
                settle_rows(batch.rows, || Fate::Rejected(rejection.clone()))
            }
        };
        self.settler.settle(settlement).await;
    }

    /// The 202 in telemetry, with each message's time from its send to now.
    fn record_acceptance(&self, batch: &Batch, accepted: &Accepted) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.telemetry.accepted(
            &accepted.job_id,
            accepted.accepted_records,
            accepted.replayed,
            batch
                .messages()
                .filter_map(|m| m.sent_at_ms)
                .map(|sent| std::time::Duration::from_millis(now_ms.saturating_sub(sent))),
        );
    }

    /// Fetches the object's schema again, after the API said a field is not in it.
    async fn refresh_schema(&self) {
        match self.api.metadata().await {
            Ok(schema) => self.schema.replace(schema),
            Err(error) => tracing::warn!(%error, "schema refresh failed; keeping the old schema"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{self, FakeSettle};
    use crate::message::Received;

    /// A batch held on 401s goes back to the queue before its messages pass SQS's 12-hour
    /// visibility ceiling, instead of being held (and extended) past it.
    #[tokio::test(start_paused = true)]
    async fn a_batch_held_on_refusals_goes_back_before_twelve_hours() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let refusals = (0..2_000).map(|_| Err(fakes::status(401))).collect();
        let (api, mut calls) = fakes::api(refusals);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let batch = fakes::batch(vec![fakes::held(&ledger, Received::fake("m1", "{}"))]);
        let ticket = delivery.budget.acquire().await;
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(delivery.deliver(batch, ticket));
        tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
        assert_eq!(settle.fates(), [("m1".to_owned(), "retry".to_owned())]);
        assert!(task.is_finished(), "the delivery ended");
        let mut last = start;
        while let Ok(call) = calls.try_recv() {
            last = call.at;
        }
        assert!(
            last - start <= HOLD_CEILING,
            "no call after 11 hours: {:?}",
            last - start
        );
    }

    /// A FIFO batch is held through a 503, not released: after `--release-backoff` it goes out
    /// again under the same key with the same bytes, and its messages end delivered.
    #[tokio::test(start_paused = true)]
    async fn a_fifo_batch_held_through_a_503_is_sent_again_with_the_same_key_and_bytes() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![Err(fakes::status(503))]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, true);
        let mut message = Received::fake("m1", "{}");
        message.group_id = Some("g1".into());
        let batch = fakes::batch(vec![fakes::held(&ledger, message)]);
        let key = batch.key();
        let ticket = delivery.budget.acquire().await;
        delivery.deliver(batch, ticket).await;
        let (first, second) = (calls.recv().await.unwrap(), calls.recv().await.unwrap());
        assert_eq!((&first.key, &second.key), (&key, &key));
        assert_eq!(first.body, second.body);
        assert_eq!(
            second.at - first.at,
            Duration::from_secs(10),
            "--release-backoff"
        );
        assert!(calls.try_recv().is_err(), "exactly two calls");
        assert_eq!(settle.fates(), [("m1".to_owned(), "delivered".to_owned())]);
        assert!(
            delivery
                .outage
                .receives_wait_until(Instant::now())
                .is_none()
        );
        assert!(delivery.ledger.open_jobs().is_empty());
    }

    /// On a standard queue, a 503 that outlived the client's retries releases the batch (no
    /// hold) and pauses receiving.
    #[tokio::test(start_paused = true)]
    async fn a_standard_batch_whose_retries_are_spent_is_released_and_receiving_pauses() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![Err(fakes::status(503))]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let batch = fakes::batch(vec![fakes::held(&ledger, Received::fake("m1", "{}"))]);
        let ticket = delivery.budget.acquire().await;
        delivery.deliver(batch, ticket).await;
        assert_eq!(settle.fates(), [("m1".to_owned(), "retry".to_owned())]);
        assert!(
            calls.recv().await.is_some() && calls.try_recv().is_err(),
            "one submit"
        );
        assert!(
            delivery
                .outage
                .receives_wait_until(Instant::now())
                .is_some()
        );
    }

    /// A 413 splits the batch: each half goes out under its own key, and every message ends
    /// delivered once.
    #[tokio::test(start_paused = true)]
    async fn a_413_splits_the_batch_into_halves_under_their_own_keys() {
        let ledger = Ledger::new(Duration::from_secs(30));
        let (api, mut calls) = fakes::api(vec![Err(fakes::status(413))]);
        let settle = Arc::new(FakeSettle::default());
        let delivery = fakes::delivery(api, settle.clone(), &ledger, false);
        let leases = ["m1", "m2", "m3", "m4"]
            .map(|id| fakes::held(&ledger, Received::fake(id, "{}")))
            .into_iter()
            .collect();
        let ticket = delivery.budget.acquire().await;
        delivery.deliver(fakes::batch(leases), ticket).await;
        let keys: Vec<(usize, String)> = std::iter::from_fn(|| calls.try_recv().ok())
            .map(|call| (call.records, call.key))
            .collect();
        use crate::batch::key::batch_key;
        assert_eq!(
            keys,
            [
                (4, batch_key(["m1", "m2", "m3", "m4"])),
                (2, batch_key(["m1", "m2"])),
                (2, batch_key(["m3", "m4"])),
            ]
        );
        let mut fates = settle.fates();
        fates.sort();
        assert!(fates.iter().all(|(_, fate)| fate == "delivered") && fates.len() == 4);
        assert!(ledger.take_orphans().is_empty());
    }
}
