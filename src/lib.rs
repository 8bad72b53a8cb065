//! sqs-batch-worker: drains an SQS queue into a rate-limited Records API with few, large,
//! idempotent batch calls, and loses nothing on the way.
//!
//! The pipeline, stage by stage:
//!
//! 1. **poll** (`pipeline::poll`): `--pollers` long-poll loops receive up to 10 messages each, with
//!    backpressure, and record every message in the ledger (`lease::ledger`).
//! 2. **decode** (`decode`): MD5, JSON object, match key, schema field names, size. Failures go
//!    straight to the DLQ (`pipeline::settle`), never into a batch.
//! 3. **batch** (`batch::batcher`): pure logic over `now`; flushes on records, bytes, age and
//!    shutdown; coalesces upserts by match key. Keys come from `batch::key`.
//! 4. **submit** (`pipeline::deliver`, `api`): paced, retried under one key and body; 413 splits,
//!    422 drops the offender, 400 bisects, 401/403 pauses.
//! 5. **ack and track jobs** (`pipeline::settle`, `pipeline::jobs`): delete after the 202 (or after
//!    the job in `completed` mode), follow the job to its end; the heartbeat
//!    (`pipeline::heartbeat`) keeps held messages invisible.
//! 6. **DLQ** (`sqs::dlq`): every rejected row's messages, byte for byte, with `dlq-*` reasons.
//!
//! `run` wires the stages and drains them on shutdown. The workspace's other crates:
//! `records-contract` (crates/records-contract) holds the wire types, units and quotas that the
//! worker and the emulator share; `records-emulator` (crates/records-emulator) is the local Records
//! API, which this crate reaches only as a dev-dependency, for its tests and benches.

pub mod batch;
pub mod cli;
pub mod config;
#[cfg(test)]
mod fakes;
pub mod lease;
pub mod message;
pub mod outage;
pub mod outcome;
pub mod run;
pub mod schema;
pub mod secret;
pub mod sink;
pub mod source;
pub mod sqs;
pub mod telemetry;

pub use run::{RunError, Running, Summary, run, start};
