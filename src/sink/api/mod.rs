//! The Records API client: paced requests, typed errors, and the one function that classifies a
//! failure into what the worker does next.

pub mod ceiling;
pub mod classify;
pub mod client;
pub mod error;
pub mod origin;

pub use classify::{Action, Signal, classify, signal};
pub use client::{Accepted, BatchCall, JobError, JobState, JobStatus, RecordsApi};
pub use error::ApiError;

use futures::future::BoxFuture;
use records_contract::ObjectSchema;

use crate::sink::budget::Ticket;

/// What a delivery asks of the Records API: the seam that lets the sink's unit tests answer with
/// a fake under a paused clock. `RecordsApi` is the real one.
pub trait Records: Send + Sync {
    /// Submits one batch; every retry (backoff, `Retry-After`, the 429 pause) happens inside,
    /// under the same key and body. `ticket` pays for the first attempt.
    fn submit<'a>(
        &'a self,
        call: &'a BatchCall<'a>,
        ticket: Option<Ticket>,
    ) -> BoxFuture<'a, Result<Accepted, ApiError>>;

    /// The job's status, from the `statusPath` of its 202.
    fn job<'a>(&'a self, job_url: &'a str) -> BoxFuture<'a, Result<JobStatus, ApiError>>;

    /// The object's schema.
    fn metadata(&self) -> BoxFuture<'_, Result<ObjectSchema, ApiError>>;
}

impl Records for RecordsApi {
    fn submit<'a>(
        &'a self,
        call: &'a BatchCall<'a>,
        ticket: Option<Ticket>,
    ) -> BoxFuture<'a, Result<Accepted, ApiError>> {
        Box::pin(RecordsApi::submit(self, call, ticket))
    }

    fn job<'a>(&'a self, job_url: &'a str) -> BoxFuture<'a, Result<JobStatus, ApiError>> {
        Box::pin(RecordsApi::job(self, job_url))
    }

    fn metadata(&self) -> BoxFuture<'_, Result<ObjectSchema, ApiError>> {
        Box::pin(RecordsApi::metadata(self))
    }
}
