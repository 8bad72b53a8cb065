//! sqs-batch-worker: drains an SQS queue into a rate-limited Records API with few, large,
//! idempotent batch calls, and loses nothing on the way.
//!
//! A message flows source → batch → sink, and its fate flows back to the source. Each stage, the
//! file that owns it, and the task that runs it (`run::wire` spawns every task):
//!
//! | stage | file | task |
//! |---|---|---|
//! | 1. poll: receive, lease, number FIFO | `source/poll.rs`, `lease/`, `source/sequence.rs` | `Poller::run`, ×`--pollers` |
//! | 2. decode: MD5, envelope, field mapping, JSON, match key, schema, size | `source/decode.rs`, `source/envelope.rs`, `source/mapping.rs` | inline in the poller |
//! | 3. batch: flush on records, bytes, age, shutdown | `batch/batcher.rs` (pure, over `now`), `batch/key.rs` | inline in the dispatcher |
//! | 4. dispatch: wait for a slot and a token, FIFO gate | `sink/dispatch.rs`, `sink/fifo.rs`, `sink/concurrency.rs`, `sink/budget/` | `Dispatch::run`, ×1 |
//! | 5. submit: one key and body, split, drop, bisect, pause | `sink/deliver.rs`, `sink/api/` | a task per batch, in the dispatcher's `JoinSet` |
//! | 6. ack and track jobs | `sink/deliver.rs` (`accepted`), `sink/jobs.rs` | in the batch's task |
//! | 7. settle: delete, release, dead-letter | `source/settle.rs`, `source/dlq.rs` | called by the poller and the deliveries (`outcome::Settle`) |
//! | keep held messages invisible, release orphans | `source/heartbeat.rs` | `Heartbeat::run`, ×1 |
//! | watch the quota against arrivals | `run/overrun.rs` | `overrun::watch`, ×1 |
//! | `/healthz`, `/readyz`, `/metrics` | `telemetry/server.rs` | `server::serve`, ×1 |
//!
//! Shared between the sides, and importing neither: `lease/` (who holds a message), `batch/`,
//! `outcome.rs` (fates, and the `Settle` seam), `outage.rs` (the sink pauses the source),
//! `schema.rs`, `message.rs`, `sqs/` (the SQS adapter, also used by the budget and the CLI) and
//! `telemetry/` (a leaf). `run/` starts, wires and drains; `config/` turns one table into
//! settings; `cli/` holds the other commands.
//!
//! The workspace's other crates: `records-contract` (crates/records-contract) holds the wire
//! types, units and quotas that the worker and the emulator share; `records-emulator`
//! (crates/records-emulator) is the local Records API, which this crate reaches only as a
//! dev-dependency, for its tests and benches.

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
