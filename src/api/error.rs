//! Errors at the Records API boundary. None of them carries the token.

use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Records API answered {status} {}: {message}", code.as_deref().unwrap_or("(no code)"))]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
        /// `error.details.path`, e.g. `records[17].favourite_color`.
        path: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("the Records API did not answer within the request timeout")]
    Timeout,
    #[error("could not reach the Records API: {0}. Check --api-url and the network")]
    Connect(String),
    #[error("the Records API sent a response the worker cannot read: {0}")]
    Malformed(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The label metrics use for the status: the number, or the kind of transport failure.
    pub fn status_label(&self) -> String {
        match self {
            ApiError::Status { status, .. } => status.to_string(),
            ApiError::Timeout => "timeout".into(),
            ApiError::Connect(_) => "connect".into(),
            ApiError::Malformed(_) => "malformed".into(),
        }
    }
}
