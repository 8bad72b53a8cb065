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
    /// The answer ran past its route's ceiling (`api::ceiling`); the rest was never read.
    #[error(
        "the answer on the {route} route ran past its {ceiling}-byte ceiling and was dropped unread. \
         Check what sits between the worker and --api-url"
    )]
    TooLarge { route: &'static str, ceiling: usize },
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

    /// The error with every copy of the token taken out of the text the API sent, before it can
    /// reach a log, `/readyz` or a DLQ attribute (a gateway may echo the credential it was shown).
    pub fn redacted(self, token: &crate::secret::ApiToken) -> Self {
        match self {
            ApiError::Status {
                status,
                code,
                message,
                path,
                retry_after,
            } => ApiError::Status {
                status,
                code: code.map(|c| token.redact(&c)),
                message: token.redact(&message),
                path: path.map(|p| token.redact(&p)),
                retry_after,
            },
            ApiError::Connect(text) => ApiError::Connect(token.redact(&text)),
            ApiError::Malformed(text) => ApiError::Malformed(token.redact(&text)),
            other => other,
        }
    }

    /// The label metrics use for the status: the number, or the kind of transport failure.
    pub fn status_label(&self) -> String {
        match self {
            ApiError::Status { status, .. } => status.to_string(),
            ApiError::Timeout => "timeout".into(),
            ApiError::Connect(_) => "connect".into(),
            ApiError::Malformed(_) => "malformed".into(),
            ApiError::TooLarge { .. } => "too_large".into(),
        }
    }
}

pub(super) const REFUSED_REDIRECT: &str = "a redirect was refused: the worker follows at most 10, and only \
     within --api-url's origin and path, so that the token and the records stay there. If the API \
     moved, update --api-url";

pub(super) fn transport(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        ApiError::Timeout
    } else if error.is_redirect() {
        ApiError::Connect(REFUSED_REDIRECT.into())
    } else {
        // reqwest's message names the URL, never the headers; the token stays out.
        ApiError::Connect(error.without_url().to_string())
    }
}
