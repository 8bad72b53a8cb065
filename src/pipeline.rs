//! The running pipeline: poll, decode, batch, submit, ack and track jobs, dead-letter. Each stage
//! is its own task; they meet in `Pipeline`, which holds what they share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::config::Settings;
use crate::outage::Outage;
use crate::sink::api::RecordsApi;
use crate::source::decode::SchemaHandle;
use crate::source::settle::Acks;
use crate::telemetry::Telemetry;

pub struct Pipeline {
    pub settings: Arc<Settings>,
    pub api: RecordsApi,
    pub acks: Acks,
    pub schema: SchemaHandle,
    pub telemetry: Arc<Telemetry>,
    pub outage: Outage,
    pub open_jobs: OpenJobs,
    /// Batches in flight, under the adaptive limit.
    pub slots: crate::sink::concurrency::Slots,
    /// Cancelled when the drain begins: receiving stops, and a batch held for a retry goes back
    /// to the queue instead of waiting out its pause.
    pub draining: tokio_util::sync::CancellationToken,
    /// Numbers FIFO messages in the order they were received (`sqs::sequence`).
    pub sequences: crate::source::sequence::Sequences,
}

/// The jobs the worker is following, with how many messages each holds, so that a drain that
/// runs out of time can name the ones it abandons.
#[derive(Default)]
pub struct OpenJobs(Mutex<BTreeMap<String, usize>>);

/// Removes its job from `OpenJobs` when dropped.
pub struct OpenJob<'a>(&'a OpenJobs, String);

impl OpenJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self, job_id: &str, messages: usize) -> OpenJob<'_> {
        self.lock().insert(job_id.to_owned(), messages);
        OpenJob(self, job_id.to_owned())
    }

    pub fn snapshot(&self) -> Vec<(String, usize)> {
        self.lock().iter().map(|(id, n)| (id.clone(), *n)).collect()
    }
}

impl Drop for OpenJob<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}
