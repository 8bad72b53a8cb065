//! The visibility heartbeat: every message held for half its visibility timeout gets it extended
//! with `ChangeMessageVisibilityBatch`, the longest unrenewed first and many calls at once, so no
//! message the worker holds reappears in the queue. Each tick also releases the orphans of
//! dropped claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::lease::Ledger;
use crate::lease::ledger::HeldReceipt;
use crate::source::settle::Settler;
use crate::sqs::Sqs;
use crate::telemetry::Telemetry;

/// Extension calls in flight at once. At 40 ms a call (a slow SQS), 16 calls extend 4,000
/// messages a second.
pub const CONCURRENT_EXTENSIONS: usize = 16;

pub fn tick(visibility: Duration) -> Duration {
    (visibility / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// The heartbeat's handles: the queue it extends visibilities on, the ledger of held messages,
/// and the settler that releases orphans.
pub struct Heartbeat {
    pub queue: Arc<dyn Sqs>,
    pub ledger: Arc<Ledger>,
    pub settler: Arc<Settler>,
    pub telemetry: Arc<Telemetry>,
}

impl Heartbeat {
    pub async fn run(self, stop: CancellationToken) {
        heartbeat(Arc::new(self), stop).await
    }
}

async fn heartbeat(this: Arc<Heartbeat>, stop: CancellationToken) {
    let ledger = this.ledger.clone();
    let visibility = ledger.visibility();
    let seconds = visibility.as_secs().clamp(1, 43_200) as i32;
    let mut ticker = tokio::time::interval(tick(visibility));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One slow call must not hold up a round past the point where messages reappear: a call that
    // takes longer than this is abandoned, and its messages stay due for the next round.
    let call_limit = (visibility / 4).max(Duration::from_secs(1));
    let mut orphans: Option<tokio::task::JoinHandle<usize>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        // Orphans are released on the side, one batch of them at a time.
        if orphans.as_ref().is_none_or(|task| task.is_finished()) {
            let settler = this.settler.clone();
            orphans = Some(tokio::spawn(async move { settler.release_orphans().await }));
        }
        let round = async {
            let due = ledger.due_for_extension(Instant::now());
            let groups: Vec<Vec<HeldReceipt>> = due.chunks(10).map(<[_]>::to_vec).collect();
            futures::stream::iter(groups)
                .for_each_concurrent(CONCURRENT_EXTENSIONS, |group| async {
                    if tokio::time::timeout(call_limit, extend(&this, group, seconds))
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            limit_ms = call_limit.as_millis() as u64,
                            "a visibility extension took too long; its messages stay due"
                        );
                    }
                })
                .await;
        };
        tokio::select! {
            () = round => {}
            _ = stop.cancelled() => break,
        }
    }
    // An orphan release under way finishes: its messages are already out of the ledger, so the
    // shutdown's final release would not see them.
    if let Some(task) = orphans {
        let _ = task.await;
    }
}

async fn extend(this: &Heartbeat, group: Vec<HeldReceipt>, seconds: i32) {
    let entries: Vec<(&str, i32)> = group
        .iter()
        .map(|h| (h.receipt.as_str(), seconds))
        .collect();
    let sent_at = Instant::now();
    match this.queue.change_visibility_batch(&entries).await {
        Ok(failed) => {
            let refused = |index: usize| failed.iter().any(|f| f.index == index);
            for failure in &failed {
                tracing::debug!(
                    message_id = group.get(failure.index).map(|h| h.id.as_str()),
                    code = failure.code,
                    "visibility not extended (deleted meanwhile?)"
                );
            }
            let extended: Vec<&str> = group
                .iter()
                .enumerate()
                .filter(|(index, _)| !refused(*index))
                .map(|(_, held)| held.id.as_str())
                .collect();
            this.ledger.renewed(extended.iter().copied(), sent_at);
            this.telemetry.visibility_extended(extended.len());
        }
        Err(error) => {
            tracing::warn!(%error, "visibility extension failed; will try again next tick")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{self, FakeQueue};
    use crate::message::Received;

    /// One round: a message held for more than half its visibility has it extended to the full
    /// visibility, a fresh one is left alone, and the orphan of a dropped lease is released with
    /// its backoff and no longer held.
    #[tokio::test(start_paused = true)]
    async fn a_round_extends_what_is_due_and_releases_orphans() {
        let queue = Arc::new(FakeQueue::default());
        let ledger = Ledger::new(Duration::from_secs(30));
        let telemetry = Arc::new(Telemetry::new());
        let settler = Arc::new(Settler {
            source: queue.clone(),
            dlq: Arc::new(FakeQueue::default()),
            ledger: ledger.clone(),
            telemetry: telemetry.clone(),
            release_base: Duration::from_secs(10),
            release_cap: Duration::from_secs(900),
            dlq_max_bytes: 256 * 1024,
            envelope: Default::default(),
        });
        let mut old = Received::fake("m1", "{}");
        old.received_at = Instant::now() - Duration::from_secs(20);
        let _held = fakes::held(&ledger, old);
        let _fresh = fakes::held(&ledger, Received::fake("m2", "{}"));
        drop(fakes::held(&ledger, Received::fake("m3", "{}")));
        let heartbeat = Heartbeat {
            queue: queue.clone(),
            ledger: ledger.clone(),
            settler,
            telemetry: telemetry.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        task.await.unwrap();
        let mut calls: Vec<(String, i32)> = queue
            .visibility
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect();
        calls.sort();
        assert_eq!(
            calls,
            [("r-m1".to_owned(), 30), ("r-m3".to_owned(), 10)],
            "m1 extended to the visibility, m3 released after --release-backoff, m2 untouched"
        );
        assert_eq!(ledger.len(), 2, "the orphan is no longer held");
        assert!(telemetry.render().contains("sbw_orphans_released_total 1"));
    }
}
