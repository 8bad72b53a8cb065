//! Errors at the Records API boundary. None of them carries the token.

use std::sync::Arc;
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
    #[error("could not reach the Records API: {message}. Check --api-url and the network")]
    Connect {
        message: String,
        /// The transport's own error, its URL taken out (`Arc` keeps the enum `Clone`).
        #[source]
        source: Option<Arc<reqwest::Error>>,
    },
    #[error("the Records API sent a response the worker cannot read: {message}")]
    Malformed {
        message: String,
        /// Where JSON could not be read. Only its kind and place: serde's own message quotes the
        /// body, which may hold the token, so the quoted text lives in `message`, redacted.
        #[source]
        source: Option<JsonFault>,
    },
    /// The answer ran past its route's ceiling (`api::ceiling`); the rest was never read.
    #[error(
        "the answer on the {route} route ran past its {ceiling}-byte ceiling and was dropped unread. \
         Check what sits between the worker and --api-url"
    )]
    TooLarge { route: &'static str, ceiling: usize },
    /// No token came before the batch's held messages neared SQS's 12-hour visibility ceiling
    /// (`dispatch::HOLD_CEILING`): a budget store down, a quota paused for hours.
    #[error(
        "the batch waited 11 hours for a quota token; its messages go back to the queue before \
         SQS's 12-hour visibility ceiling. Check the budget store and the quota"
    )]
    HeldTooLong,
}

/// Why and where a JSON answer could not be read, without any of its text.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind} at line {line} column {column}")]
pub struct JsonFault {
    kind: &'static str,
    line: usize,
    column: usize,
}

impl From<&serde_json::Error> for JsonFault {
    fn from(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        Self {
            kind: match error.classify() {
                Category::Io => "an I/O error",
                Category::Syntax => "not JSON",
                Category::Data => "JSON of the wrong shape",
                Category::Eof => "JSON cut short",
            },
            line: error.line(),
            column: error.column(),
        }
    }
}

impl ApiError {
    /// The API could not be reached, for a reason the worker states itself.
    pub fn connect(message: impl Into<String>) -> Self {
        ApiError::Connect {
            message: message.into(),
            source: None,
        }
    }

    /// An answer the worker cannot use, for a reason it states itself.
    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError::Malformed {
            message: message.into(),
            source: None,
        }
    }

    /// An answer whose JSON could not be read as `what`.
    pub fn unreadable(what: &str, error: &serde_json::Error) -> Self {
        ApiError::Malformed {
            message: format!("{what}: {error}"),
            source: Some(error.into()),
        }
    }

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
            ApiError::Connect { message, source } => ApiError::Connect {
                message: token.redact(&message),
                source,
            },
            ApiError::Malformed { message, source } => ApiError::Malformed {
                message: token.redact(&message),
                source,
            },
            other => other,
        }
    }

    /// The label metrics use for the status: the number, or the kind of transport failure.
    pub fn status_label(&self) -> String {
        match self {
            ApiError::Status { status, .. } => status.to_string(),
            ApiError::Timeout => "timeout".into(),
            ApiError::Connect { .. } => "connect".into(),
            ApiError::Malformed { .. } => "malformed".into(),
            ApiError::TooLarge { .. } => "too_large".into(),
            ApiError::HeldTooLong => "held_too_long".into(),
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
        ApiError::connect(REFUSED_REDIRECT)
    } else {
        // reqwest's message names the URL, never the headers; the token stays out.
        let error = error.without_url();
        ApiError::Connect {
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error keeps what went wrong as its source, with none of the answer's text: serde's own
    /// message may quote a token the API echoed, and only the redacted message carries text.
    #[test]
    fn an_unreadable_answer_keeps_its_source_without_its_text() {
        let token = crate::secret::ApiToken::new("tok-5ecret".into());
        let parsed = serde_json::from_str::<u32>(r#""tok-5ecret""#).unwrap_err();
        let error = ApiError::unreadable("metadata", &parsed).redacted(&token);
        assert!(!error.to_string().contains("5ecret"), "{error}");
        let source = std::error::Error::source(&error)
            .expect("a source")
            .to_string();
        assert_eq!(source, "JSON of the wrong shape at line 1 column 12");
    }
}
