//! The batcher task (feeds the pure batcher, fires its age trigger, flushes at shutdown) and the
//! dispatcher (at most `--max-in-flight` batches at once, FIFO groups in order).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::Pipeline;
use super::fifo::GroupGate;
use crate::batch::batcher::Batcher;
use crate::batch::{Batch, FlushReason};
use crate::decode::Decoded;
use crate::lease::Lease;
use crate::telemetry::Telemetry;

pub async fn batch_loop(
    mut batcher: Batcher,
    mut records: mpsc::UnboundedReceiver<(Decoded, Lease)>,
    batches: mpsc::Sender<Batch>,
    telemetry: Arc<Telemetry>,
) {
    loop {
        let deadline = batcher.deadline();
        let flushed: Vec<Batch> = tokio::select! {
            item = records.recv() => match item {
                Some((decoded, message)) => batcher.push(decoded, message, Instant::now()),
                None => {
                    if let Some(batch) = batcher.flush(FlushReason::Shutdown) {
                        let _ = batches.send(batch).await;
                    }
                    telemetry.set_buffered(0);
                    return;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()).await }, if deadline.is_some() => {
                batcher.poll(Instant::now()).into_iter().collect()
            }
        };
        telemetry.set_buffered(batcher.buffered_messages());
        for batch in flushed {
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    }
}

/// Counts a batch in flight for as long as it lives.
struct InFlight(Arc<Telemetry>, Arc<Semaphore>, usize);

impl Drop for InFlight {
    fn drop(&mut self) {
        let in_use = self.2.saturating_sub(self.1.available_permits() + 1);
        self.0.set_in_flight(in_use);
    }
}

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

pub async fn dispatch_loop(
    pipeline: Arc<Pipeline>,
    mut batches: mpsc::Receiver<Batch>,
    fifo: bool,
) {
    let limit = pipeline.settings.max_in_flight;
    let slots = Arc::new(Semaphore::new(limit));
    let gate = Arc::new(GroupGate::default());
    let mut tasks = JoinSet::new();
    while let Some(batch) = batches.recv().await {
        pipeline.telemetry.batch_flushed(
            batch.reason.as_str(),
            batch.rows.len(),
            batch.message_count(),
        );
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let hold = if fifo {
            Some(gate.acquire(batch.groups()).await)
        } else {
            None
        };
        pipeline
            .telemetry
            .set_in_flight(limit - slots.available_permits());
        let counter = InFlight(pipeline.telemetry.clone(), slots.clone(), limit);
        let pipeline = pipeline.clone();
        tasks.spawn(async move {
            pipeline.deliver(batch).await;
            drop(hold);
            drop(counter);
            drop(slot);
        });
        while let Some(ended) = tasks.try_join_next() {
            report(ended);
        }
    }
    while let Some(ended) = tasks.join_next().await {
        report(ended);
    }
    pipeline.telemetry.set_in_flight(0);
}
