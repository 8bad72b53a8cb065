//! The visibility heartbeat: every message held for half its visibility timeout gets it extended
//! with `ChangeMessageVisibilityBatch`, so no message the worker holds reappears in the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sqs::{Holdings, Queue};
use crate::telemetry::Telemetry;

pub fn tick(visibility: Duration) -> Duration {
    (visibility / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

pub async fn run(
    source: Queue,
    holdings: Arc<Holdings>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let visibility = holdings.visibility();
    let seconds = visibility.as_secs().max(1) as i32;
    let mut ticker = tokio::time::interval(tick(visibility));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let due = holdings.due_for_extension(Instant::now());
        for group in due.chunks(10) {
            let receipts: Vec<&str> = group.iter().map(|(_, receipt)| receipt.as_str()).collect();
            let sent_at = Instant::now();
            match source.change_visibility_batch(&receipts, seconds).await {
                Ok(failed) => {
                    for failure in &failed {
                        tracing::debug!(
                            message_id = group[failure.index].0,
                            code = failure.code,
                            "visibility not extended (deleted meanwhile?)"
                        );
                    }
                    let extended = group
                        .iter()
                        .enumerate()
                        .filter(|(index, _)| !failed.iter().any(|f| f.index == *index))
                        .map(|(_, (id, _))| id.as_str());
                    holdings.renewed(extended, sent_at);
                    telemetry.visibility_extended(group.len() - failed.len());
                }
                Err(error) => {
                    tracing::warn!(%error, "visibility extension failed; will try again next tick")
                }
            }
        }
    }
}
