//! The long-poll loops: receive up to 10 messages with `WaitTimeSeconds=20`, hold them, decode
//! them, pass records to the batcher and dead-letter the undecodable at once. A loop waits while
//! buffered plus in-flight messages would exceed what `--max-in-flight` batches can hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::decode::{Decoded, Decoder};
use crate::message::Received;
use crate::outcome::{Fate, Settlement};
use crate::sqs::Holdings;

pub const WAIT_TIME_S: i32 = 20;

/// How long a receive already under way may still finish after shutdown begins. Dropping it at
/// once would leave whatever SQS was handing out invisible until its visibility ends; a receive
/// that has messages answers in milliseconds, and one that has none loses nothing when dropped.
pub const RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// How often a loop waiting on backpressure tells the watchdog it is alive.
const BACKPRESSURE_CHECK: Duration = Duration::from_secs(5);

pub struct Poller {
    pub pipeline: Arc<Pipeline>,
    pub holdings: Arc<Holdings>,
    pub decoder: Arc<Decoder>,
    pub capacity: Arc<Semaphore>,
    pub per_receive: usize,
    pub records: mpsc::UnboundedSender<(Decoded, Arc<Received>)>,
}

impl Poller {
    pub async fn run(self, stop: CancellationToken) {
        let source = &self.pipeline.acks.source;
        let visibility = self.pipeline.settings.visibility_timeout;
        let mut failures = 0u32;
        loop {
            let capacity = loop {
                // Waiting on backpressure is the loop doing its job: keep the watchdog fed.
                self.pipeline.telemetry.systemd.poll_alive();
                tokio::select! {
                    permit = self.capacity.clone().acquire_many_owned(self.per_receive as u32) => match permit {
                        Ok(permit) => break permit,
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(BACKPRESSURE_CHECK) => continue,
                    _ = stop.cancelled() => return,
                }
            };
            let receive = source.receive(self.per_receive as i32, WAIT_TIME_S, visibility);
            tokio::pin!(receive);
            let mut stopping = false;
            let received = tokio::select! {
                received = &mut receive => received,
                _ = stop.cancelled() => {
                    stopping = true;
                    match tokio::time::timeout(RECEIVE_GRACE, &mut receive).await {
                        Ok(received) => received,
                        Err(_) => break,
                    }
                }
            };
            let messages = match received {
                Ok(messages) => {
                    failures = 0;
                    messages
                }
                Err(error) => {
                    self.pipeline.telemetry.systemd.poll_alive();
                    failures += 1;
                    let pause = Duration::from_millis(250 * 2u64.pow(failures.min(6)));
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            self.pipeline.telemetry.sqs_reached();
            self.pipeline.telemetry.received(messages.len());
            // Even while stopping: the batcher flushes these with the rest of the buffer.
            self.accept(messages, capacity).await;
            if stopping || stop.is_cancelled() {
                break;
            }
        }
    }

    async fn accept(
        &self,
        messages: Vec<Received>,
        mut capacity: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut undecodable = Settlement::default();
        for message in messages {
            let message = Arc::new(message);
            self.holdings.hold(&message, capacity.split(1));
            match self
                .decoder
                .decode(&message.body, message.md5_of_body.as_deref())
            {
                Ok(decoded) => {
                    if let Err(mpsc::error::SendError((_, message))) =
                        self.records.send((decoded, message))
                    {
                        // The batcher is gone (shutdown): the message goes back to the queue.
                        undecodable.add(message, Fate::Retry);
                    }
                }
                Err(rejection) => undecodable.add(message, Fate::Rejected(rejection)),
            }
        }
        if !undecodable.is_empty() {
            self.pipeline.acks.settle(undecodable, false).await;
        }
    }
}
