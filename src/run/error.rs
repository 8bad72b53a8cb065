//! Errors at the boundary of `start`: what stops the worker from starting, each with the setting
//! to change and the cause it came from. `exit_code` maps them for `main`.

use std::net::SocketAddr;

use crate::sink::api::ApiError;
use crate::sink::budget::BudgetError;
use crate::sqs::SqsError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "--object (env RECORDS_OBJECT) = {object:?}: the Records API has no such object. Fix: \
         name an object that GET {api_url}/metadata/objects/{{object}} knows"
    )]
    UnknownObject { object: String, api_url: String },
    #[error(
        "--api-token / --api-token-file: the Records API answered {status} to the token. Fix: \
         give a valid token with read and write scope"
    )]
    TokenRefused { status: u16 },
    #[error(
        "--match-key (env RECORDS_MATCH_KEY) = {match_key:?} is not a match key of '{object}' \
         (it has {match_keys:?}). Fix: use one of those, or --operation append"
    )]
    NotAMatchKey {
        match_key: String,
        object: String,
        match_keys: Vec<String>,
    },
    #[error(
        "--listen (env WORKER_LISTEN) = {addr}: cannot listen there: {source}. Fix: pick a free port"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the telemetry server's bound address: {source}")]
    Telemetry { source: std::io::Error },
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("cannot fetch the object's metadata: {source}")]
    Metadata { source: ApiError },
    #[error("cannot build the Records API client: {source}")]
    Client { source: ApiError },
    #[error(
        "--dlq-url (env SQS_DLQ_URL): the DLQ takes messages of at most {dlq} bytes \
         (MaximumMessageSize) but the source queue takes {source_max}; a rejected message larger \
         than {dlq} bytes could not be dead-lettered. Fix: aws sqs set-queue-attributes \
         --queue-url <DLQ> --attributes MaximumMessageSize={source_max}"
    )]
    DlqTooSmall { dlq: usize, source_max: usize },
    #[error(
        "--budget-queue (env BUDGET_QUEUE_URL): this host's clock is {offset_s:.0} s off SQS's \
         (the Date of its answer). The queue's token slots are wall-clock, and replicas that far \
         apart could spend one quota twice. Fix: keep the clock in step (NTP, chrony), or share \
         the quota with --budget-table, whose refill does not depend on replicas' clocks agreeing"
    )]
    ClockOffset { offset_s: f64 },
    #[error("{setting}: {source}")]
    Queue {
        setting: &'static str,
        source: SqsError,
    },
}

impl RunError {
    /// 2 when a setting must change (the message names it), 1 when the world must.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::UnknownObject { .. }
            | RunError::TokenRefused { .. }
            | RunError::NotAMatchKey { .. }
            | RunError::Listen { .. }
            | RunError::DlqTooSmall { .. }
            | RunError::ClockOffset { .. }
            | RunError::Budget(_) => 2,
            RunError::Metadata { .. }
            | RunError::Client { .. }
            | RunError::Queue { .. }
            | RunError::Telemetry { .. } => 1,
        }
    }
}
