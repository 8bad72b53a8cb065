//! A batch's life after the flush: submit under its key, handle each kind of refusal (split,
//! drop the offender, bisect, pause, release), ack on acceptance, follow the job, and settle
//! every message's fate. The batch owns its leases throughout; whatever path it takes, every lease
//! ends in a settlement (or, if the task dies, as an orphan that the heartbeat releases).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::Instrument;

use super::Pipeline;
use super::jobs::{JobEnd, Overdue, row_fates, track};
use super::settle::release_visibility;
use crate::api::{Accepted, Action, ApiError, BatchCall, classify};
use crate::batch::key::derived_key;
use crate::batch::{Batch, Row};
use crate::budget::Ticket;
use crate::config::{AckOn, Operation};
use crate::outcome::{Fate, Reason, Rejection, Settlement};
use crate::telemetry::Telemetry;

/// May this batch's job still be resubmitted once? Carried through splits and bisections, so a
/// resubmitted batch's halves are not resubmitted again.
#[derive(Clone, Debug)]
struct Attempt {
    resubmit_left: bool,
    /// How many times this batch was held for a retry (`hold_and_retry`): each pause doubles.
    holds: u32,
    /// The bisection of a 400 that this part belongs to, shared by every part of the batch it
    /// began in.
    bisection: Option<Arc<Bisection>>,
}

#[derive(Debug)]
struct Bisection {
    /// Calls it may still spend (`bisection_calls`).
    calls_left: AtomicUsize,
    /// Whether the API accepted any part: until it has, a row refused alone may be refused only
    /// because the API refuses everything.
    any_accepted: AtomicBool,
}

/// Times a message may be received before a row refused alone goes to the DLQ even though no
/// part of its batch was accepted.
const SYSTEMIC_RECEIVES: u32 = 3;

const FIRST: Attempt = Attempt {
    resubmit_left: true,
    holds: 0,
    bisection: None,
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

/// Messages already deleted (`--ack-on accepted`) whose job then failed: until the resubmission
/// settles them, the worker's memory is their only copy. If the delivery is dropped before that
/// (a drain that ran out of time), they are counted and logged as lost, never silently gone.
struct AtRisk {
    ids: Vec<String>,
    telemetry: Arc<Telemetry>,
}

impl AtRisk {
    fn of(batch: &Batch, telemetry: &Arc<Telemetry>) -> Self {
        Self {
            ids: batch
                .messages()
                .filter(|lease| lease.is_deleted())
                .map(|lease| lease.id.clone())
                .collect(),
            telemetry: telemetry.clone(),
        }
    }

    fn defuse(mut self) {
        self.ids.clear();
    }
}

impl Drop for AtRisk {
    fn drop(&mut self) {
        for id in &self.ids {
            self.telemetry.dlq_lost(
                id,
                "deleted after its first 202 (--ack-on accepted); its job failed and the worker \
                 stopped before the resubmission was settled",
            );
        }
    }
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

impl Pipeline {
    /// Delivers a freshly flushed batch under the key of its own message IDs.
    /// `ticket` pays for its first call.
    pub fn deliver(self: &Arc<Self>, batch: Batch, ticket: Ticket) -> BoxFuture<'static, ()> {
        let key = batch.key();
        self.deliver_as(batch, key, FIRST, Some(ticket))
    }

    /// Delivers a part of a batch (a half, the rest after an offender) under its own key.
    fn deliver_part(self: &Arc<Self>, batch: Batch, attempt: Attempt) -> BoxFuture<'static, ()> {
        let key = batch.key();
        self.deliver_as(batch, key, attempt, None)
    }

    fn deliver_as(
        self: &Arc<Self>,
        mut batch: Batch,
        key: String,
        attempt: Attempt,
        ticket: Option<Ticket>,
    ) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let behind = this.rows_behind_a_released_group(&mut batch);
            if !behind.is_empty() {
                // Settled as retries: one already deleted (accepted mode) goes to the DLQ.
                this.acks.settle(settle_rows(behind, || Fate::Retry)).await;
                if batch.rows.is_empty() {
                    return;
                }
                // The settle took time: a ticket spent now would reach the API late, closer to
                // the next call than the bucket assumed. Let the rest pay for a fresh one.
                let _unspent = ticket;
                return this.deliver_part(batch, attempt).await;
            }
            let span = tracing::info_span!(
                "batch",
                key = %key,
                records = batch.rows.len(),
                messages = batch.message_count()
            );
            async move {
                let on_answer = |signal, still_out| this.slots.observe(signal, still_out);
                let call = BatchCall {
                    key: &key,
                    body: batch.body(),
                    records: batch.rows.len(),
                    on_answer: &on_answer,
                };
                match this.api.submit(&call, ticket).await {
                    Ok(accepted) => {
                        if let Some(bisection) = &attempt.bisection {
                            bisection.any_accepted.store(true, Ordering::SeqCst);
                        }
                        this.telemetry.unblock();
                        this.outage.ended();
                        this.accepted(batch, key, accepted, attempt).await;
                    }
                    Err(error) => this.refused(batch, key, error, attempt).await,
                }
            }
            .instrument(span)
            .await
        })
    }

    /// FIFO: the rows holding a message that an earlier message of its group was released after.
    /// They go back to the queue with it instead of committing ahead of it.
    fn rows_behind_a_released_group(&self, batch: &mut Batch) -> Vec<Row> {
        if !self.settings.source_is_fifo() {
            return Vec::new();
        }
        let groups = self.acks.holdings.released_groups();
        batch.extract(|row| row.messages.iter().any(|m| groups.must_follow(m)))
    }

    async fn refused(
        self: &Arc<Self>,
        batch: Batch,
        key: String,
        error: ApiError,
        attempt: Attempt,
    ) {
        let action = classify(&error);
        self.telemetry
            .batch_refused(&error, &format!("{action:?}"), batch.rows.len());
        let settlement = match action {
            // A batch that timed out on every attempt is too big for the API's answer time
            // (seed 003: latency grows with the batch): it shrinks, as on a 413.
            Action::Retry { .. } if matches!(error, ApiError::Timeout) && batch.rows.len() > 1 => {
                self.telemetry.timeout_split(batch.rows.len());
                return self.split(batch, attempt).await;
            }
            Action::Retry { .. } if self.settings.source_is_fifo() => {
                // A FIFO batch is held, not released: a release lets the group's later messages
                // be received (and committed) before it comes back, and a commit-then-error job
                // answers the same key with its own replay when the batch is sent again.
                let pause = release_visibility(
                    self.acks.release_base,
                    attempt.holds.saturating_add(1),
                    self.acks.release_cap,
                );
                self.telemetry.api_outage(&error, pause);
                return self.hold_and_retry(batch, key, attempt, pause).await;
            }
            Action::Retry { .. } => {
                self.outage_began(&batch, &error);
                settle_rows(batch.rows, || Fate::Retry)
            }
            Action::Split => match batch.halves() {
                Ok((front, back)) => {
                    self.deliver_part(front, attempt.clone()).await;
                    self.deliver_part(back, attempt).await;
                    return;
                }
                Err(one) => settle_rows(one.rows, rejected(Reason::Oversize, &error)),
            },
            Action::DropOffender { index } => {
                return self.drop_offender(batch, index, &error, attempt).await;
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
                return self.bisect(batch, &error, reason, attempt).await;
            }
            Action::Pause => {
                self.telemetry.block(format!(
                    "the Records API refused the token ({error}). Fix: set a valid token with write \
                     scope in --api-token-file / RECORDS_API_TOKEN; retrying every {:?}",
                    self.settings.auth_retry
                ));
                return self.refused_every_batch(batch, key, attempt).await;
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
            Action::Release => {
                self.telemetry.block(format!(
                    "the Records API refused the batch ({error}). Fix: check --object and --api-url; \
                     retrying every {:?}",
                    self.settings.auth_retry
                ));
                return self.refused_every_batch(batch, key, attempt).await;
            }
        };
        self.acks.settle(settlement).await;
    }

    /// A refusal that applies to every batch (401, 403, 404, 405): sending and receiving pause
    /// for `--auth-retry`, and the batch is held and sent again, so that a bad token rotation or
    /// a gateway's 404 during a deploy spends time, not receive counts.
    async fn refused_every_batch(self: &Arc<Self>, batch: Batch, key: String, attempt: Attempt) {
        let pause = self.settings.auth_retry;
        self.api.budget().pause_for(pause);
        self.outage.began(Instant::now(), pause);
        self.hold_and_retry(batch, key, attempt, pause).await
    }

    /// Keeps the batch's messages (the heartbeat keeps them invisible) and sends it again under
    /// the same key after `pause`; receiving waits as long. At the drain it goes back to the
    /// queue instead.
    fn hold_and_retry(
        self: &Arc<Self>,
        batch: Batch,
        key: String,
        attempt: Attempt,
        pause: Duration,
    ) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            this.outage.began(Instant::now(), pause);
            let attempt = Attempt {
                holds: attempt.holds.saturating_add(1),
                ..attempt
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => this.deliver_as(batch, key, attempt, None).await,
                _ = this.draining.cancelled() => {
                    this.acks.settle(settle_rows(batch.rows, || Fate::Retry)).await;
                }
            }
        })
    }

    /// Every retry failed on a transient error: receiving pauses, and the batch's messages come
    /// back later, the more often they were received.
    fn outage_began(&self, batch: &Batch, error: &ApiError) {
        let least_received = batch.messages().map(|m| m.receive_count).min();
        let pause = release_visibility(
            self.acks.release_base,
            least_received.unwrap_or(1),
            self.acks.release_cap,
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
            return self.acks.settle(settlement).await;
        }
        let rest = self.deliver_part(batch, attempt.clone());
        if self.settings.source_is_fifo() {
            // The offender is earlier in its group than what follows it: decide it first, so a
            // failed DLQ send takes the rest of its group back.
            self.acks.settle(settlement).await;
            rest.await;
        } else {
            let ((), ()) = tokio::join!(self.acks.settle(settlement), rest);
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
        let least_received = batch.messages().map(|m| m.receive_count).min().unwrap_or(1);
        let unproven = attempt
            .bisection
            .as_ref()
            .is_some_and(|b| !b.any_accepted.load(Ordering::SeqCst));
        if alone && !(unproven && least_received < SYSTEMIC_RECEIVES) {
            let settlement = settle_rows(batch.rows, rejected(reason, error));
            return self.acks.settle(settlement).await;
        }
        let mut attempt = attempt;
        let bisection = attempt
            .bisection
            .get_or_insert_with(|| {
                Arc::new(Bisection {
                    calls_left: AtomicUsize::new(bisection_calls(batch.rows.len())),
                    any_accepted: AtomicBool::new(false),
                })
            })
            .clone();
        if alone || !spend_bisection(&bisection.calls_left) {
            // So many parts refused that the API likely refuses every request: the rest goes
            // back to the queue, and receiving pauses, instead of a call for every row.
            self.telemetry.block(format!(
                "the Records API refused every part of a batch's bisection ({error}); it likely \
                 refuses every request. Fix: check the API's validator and --object; retrying \
                 after {:?}",
                self.settings.auth_retry
            ));
            self.outage.began(Instant::now(), self.settings.auth_retry);
            return self
                .acks
                .settle(settle_rows(batch.rows, || Fate::Retry))
                .await;
        }
        self.split(batch, attempt).await
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
        if self.settings.ack_on == AckOn::Accepted {
            let undeleted = self.acks.delete(batch.take_claims()).await;
            // A message whose delete failed is still in the queue: its lease keeps its claim,
            // so it is settled like any other, never as "already deleted".
            drop(batch.restore_claims(undeleted));
        }
        let _open = self.open_jobs.open(&accepted.job_id, batch.message_count());
        let overdue = if self.settings.source_is_fifo() {
            Overdue::KeepFollowing
        } else {
            Overdue::GiveUp
        };
        let end = track(
            &self.api,
            &self.telemetry,
            &accepted,
            self.settings.job_timeout,
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
            JobEnd::Unknown(why) if self.settings.operation == Operation::Append => {
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
                let at_risk = AtRisk::of(&batch, &self.telemetry);
                self.deliver_as(batch, key, attempt, None).await;
                at_risk.defuse();
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
                        self.settings.job_timeout
                    ),
                )
                .in_job(&accepted.job_id, None);
                settle_rows(batch.rows, || Fate::Rejected(rejection.clone()))
            }
        };
        self.acks.settle(settlement).await;
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
