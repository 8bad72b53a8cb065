//! The long-poll loops: receive up to 10 messages with `WaitTimeSeconds=20`, take a lease on each
//! (a second copy of a message already held is absorbed into the first), decode them, pass
//! records to the batcher and dead-letter the undecodable at once.
//!
//! Backpressure, in messages and in bytes: a loop receives only while buffered plus in-flight
//! messages fit in what `--max-in-flight` batches can hold, and it waits with what it received
//! until their bodies fit in `--max-held-bytes`. Under a quota, it also waits while more messages
//! wait for a slot than the calls within one visibility timeout can carry. While the API is out
//! (`outage`), it does not receive at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::batch::Decoded;
use crate::lease::{Lease, Ledger};
use crate::message::Received;
use crate::outage::Outage;
use crate::outcome::{Fate, Settlement};
use crate::sink::dispatch::Backlog;
use crate::source::decode::Decoder;
use crate::source::sequence::Sequences;
use crate::source::settle::Settler;
use crate::sqs::Queue;
use crate::telemetry::Telemetry;

/// How long a receive already under way may still finish after shutdown begins. Dropping it at
/// once would leave whatever SQS was handing out invisible until its visibility ends; a receive
/// that has messages answers in milliseconds, and one that has none loses nothing when dropped.
pub const RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// How often a loop waiting on backpressure tells the watchdog it is alive.
const BACKPRESSURE_CHECK: Duration = Duration::from_secs(5);

/// The bytes a message holds against `--max-held-bytes`: its body and the producer's message
/// attributes (kept for its DLQ copy).
pub fn held_bytes(message: &Received) -> usize {
    let attributes: usize = message
        .attributes
        .iter()
        .flatten()
        .map(|(name, value)| {
            name.len()
                + value.string_value.as_deref().map_or(0, str::len)
                + value.binary_value.as_ref().map_or(0, |b| b.as_ref().len())
        })
        .sum();
    (message.body.len() + attributes).max(1)
}

/// One long-poll loop, with only its own handles: the queue it receives from, the settler for
/// what cannot be decoded, and the bounds it waits on.
pub struct Poller {
    pub queue: Queue,
    pub settler: Arc<Settler>,
    pub ledger: Arc<Ledger>,
    pub outage: Arc<Outage>,
    pub sequences: Arc<Sequences>,
    pub telemetry: Arc<Telemetry>,
    /// `--visibility-timeout`, when set, and `--receive-wait`.
    pub visibility: Option<Duration>,
    pub receive_wait: Duration,
    pub decoder: Arc<Decoder>,
    pub capacity: Arc<Semaphore>,
    pub bytes: Arc<Semaphore>,
    pub bytes_budget: usize,
    pub per_receive: usize,
    pub records: mpsc::UnboundedSender<(Decoded, Lease)>,
    /// Messages waiting in the dispatcher for a slot, and how many may wait (`run::read_ahead`).
    pub waiting: watch::Receiver<Backlog>,
    pub read_ahead: Option<ReadAhead>,
}

/// How many messages may wait in the dispatcher before the pollers stop receiving: while it waits
/// for a ticket, and while it holds one (they differ only under a shared quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    pub waiting: usize,
    pub holding: usize,
}

impl ReadAhead {
    /// Whether a poller may receive more now.
    pub fn has_room(&self, backlog: &Backlog) -> bool {
        let limit = if backlog.holds_ticket {
            self.holding
        } else {
            self.waiting
        };
        backlog.messages < limit
    }
}

impl Poller {
    pub async fn run(self, stop: CancellationToken) {
        let source = &self.queue;
        let visibility = self.visibility;
        let mut failures = 0u32;
        loop {
            if let Some(until) = self.outage.receives_wait_until(Instant::now()) {
                self.telemetry.systemd.poll_alive();
                let wait = until.min(Instant::now() + BACKPRESSURE_CHECK);
                tokio::select! {
                    _ = tokio::time::sleep_until(wait.into()) => continue,
                    _ = stop.cancelled() => return,
                }
            }
            if let Some(read_ahead) = self.read_ahead {
                let mut waiting = self.waiting.clone();
                let room = waiting.wait_for(|backlog| read_ahead.has_room(backlog));
                tokio::select! {
                    _ = room => {}
                    _ = tokio::time::sleep(BACKPRESSURE_CHECK) => {
                        self.telemetry.systemd.poll_alive();
                        continue;
                    }
                    _ = stop.cancelled() => return,
                }
            }
            let capacity = loop {
                // Waiting on backpressure is the loop doing its job: keep the watchdog fed.
                self.telemetry.systemd.poll_alive();
                tokio::select! {
                    permit = self.capacity.clone().acquire_many_owned(self.per_receive as u32) => match permit {
                        Ok(permit) => break permit,
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(BACKPRESSURE_CHECK) => continue,
                    _ = stop.cancelled() => return,
                }
            };
            let wait_s = self.receive_wait.as_secs() as i32;
            let receive = source.receive(self.per_receive as i32, wait_s, visibility);
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
                Ok(mut messages) => {
                    failures = 0;
                    self.sequences.number(&mut messages);
                    messages
                }
                Err(error) => {
                    self.telemetry.systemd.poll_alive();
                    failures += 1;
                    let pause = Duration::from_millis(250 * 2u64.pow(failures.min(6)));
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            self.telemetry.sqs_reached();
            self.telemetry.received(messages.len());
            // Even while stopping: the batcher flushes these with the rest of the buffer.
            self.accept(messages, capacity, &stop).await;
            if stopping || stop.is_cancelled() {
                break;
            }
        }
    }

    /// Leases the messages, waits until their bytes fit the budget, and hands them on.
    async fn accept(
        &self,
        messages: Vec<(Received, String)>,
        mut capacity: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) {
        let mut fresh = Vec::with_capacity(messages.len());
        for (message, receipt) in messages {
            let share = capacity.split(1).into_iter().collect();
            match Lease::hold(&self.ledger, message, receipt, share) {
                Ok(lease) => fresh.push(lease),
                Err(copy) => self.telemetry.duplicate_receipt(&copy.id),
            }
        }
        let total: usize = fresh.iter().map(|lease| held_bytes(lease)).sum();
        let mut bytes = self.bytes_permit(total.min(self.bytes_budget), stop).await;
        self.telemetry.set_held_bytes(
            self.bytes_budget - self.bytes.available_permits().min(self.bytes_budget),
        );
        let mut undecodable = Settlement::default();
        for mut lease in fresh {
            let share = bytes.as_mut().and_then(|permit| {
                let n = held_bytes(&lease).min(permit.num_permits());
                permit.split(n)
            });
            lease.hold_bytes(share);
            match self.decoder.decode(
                &lease.body,
                lease.md5_of_body.as_deref(),
                lease.attributes.as_ref(),
            ) {
                Ok(decoded) => {
                    if let Err(mpsc::error::SendError((_, lease))) =
                        self.records.send((decoded, lease))
                    {
                        // The batcher is gone (shutdown): the message goes back to the queue.
                        undecodable.add(lease, Fate::Retry);
                    }
                }
                Err(rejection) => undecodable.add(lease, Fate::Rejected(rejection)),
            }
        }
        if !undecodable.is_empty() {
            self.settler.settle(undecodable).await;
        }
    }

    /// The budget's bytes for a receive; none when the worker is stopping (the drain frees no
    /// more room, and the messages are flushed with the rest).
    async fn bytes_permit(
        &self,
        bytes: usize,
        stop: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        if bytes == 0 {
            return None;
        }
        loop {
            self.telemetry.systemd.poll_alive();
            tokio::select! {
                permit = self.bytes.clone().acquire_many_owned(bytes as u32) => return permit.ok(),
                _ = tokio::time::sleep(BACKPRESSURE_CHECK) => continue,
                _ = stop.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_waiting_for_a_shared_ticket_reads_little() {
        let read_ahead = ReadAhead {
            waiting: 10,
            holding: 1010,
        };
        let backlog = |messages, holds_ticket| Backlog {
            messages,
            holds_ticket,
        };
        let cases = [
            (backlog(0, false), true),
            (backlog(9, false), true),
            (backlog(10, false), false),
            (backlog(10, true), true),
            (backlog(1009, true), true),
            (backlog(1010, true), false),
        ];
        for (backlog, room) in cases {
            assert_eq!(read_ahead.has_room(&backlog), room, "{backlog:?}");
        }
    }
}
