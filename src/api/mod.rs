//! The Records API client: paced requests, typed errors, and the one function that classifies a
//! failure into what the worker does next.

pub mod classify;
pub mod client;
pub mod error;
pub mod pacer;

pub use classify::{Action, classify};
pub use client::{Accepted, JobError, JobState, JobStatus, RecordsApi};
pub use error::ApiError;
