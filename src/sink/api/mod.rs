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
