//! sqs-batch-worker: drains an SQS queue into a rate-limited Records API with few, large,
//! idempotent batch calls, and loses nothing on the way.

pub mod contract;
pub mod emulator;
pub mod units;
