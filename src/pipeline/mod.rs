//! The running pipeline: poll, decode, batch, submit, ack and track jobs, dead-letter. Each stage
//! is its own task; they meet in `Pipeline`, which holds what they share.

pub mod deliver;
pub mod dispatch;
pub mod fifo;
pub mod heartbeat;
pub mod jobs;
pub mod poll;
pub mod settle;

use std::sync::Arc;

use crate::api::RecordsApi;
use crate::config::Settings;
use crate::decode::SchemaHandle;
use crate::telemetry::Telemetry;
use settle::Acks;

pub struct Pipeline {
    pub settings: Arc<Settings>,
    pub api: RecordsApi,
    pub acks: Acks,
    pub schema: SchemaHandle,
    pub telemetry: Arc<Telemetry>,
}
