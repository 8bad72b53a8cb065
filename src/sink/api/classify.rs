//! Retry classification: one function from an API failure to the worker's next step, tested from
//! a table.

use std::time::Duration;

use super::ApiError;
use records_contract::codes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Transient: try again with the same key and body, after at least `after`.
    Retry { after: Option<Duration> },
    /// 413: split the batch in half.
    Split,
    /// 422 `REQUEST_SCHEMA` naming a row: dead-letter it, refresh the schema, resubmit the rest.
    DropOffender { index: usize },
    /// 400, or a 422 `REQUEST_SCHEMA` without a path: bisect to find the offending records.
    Bisect { schema: bool },
    /// 401/403: release everything, mark not ready, retry slowly.
    Pause,
    /// 422 `KEY_REUSED`: the same messages were sent before with another body.
    KeyReused,
    /// 404: the object is gone; nothing the batch can fix.
    Release,
    /// The batch's held messages near SQS's 12-hour ceiling: back to the queue now.
    GiveBack,
}

/// What one batch call's answer says about the API's load, for the adaptive concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// Answered a call of `records` records in `took`.
    Answered { took: Duration, records: usize },
    /// 429, 503, 504 or a timeout: too many requests at once.
    Overloaded,
    /// Anything else (a 4xx about the batch itself, a refused connection): says nothing about
    /// how loaded the API is.
    Neutral,
}

pub fn signal<T>(result: &Result<T, ApiError>, took: Duration, records: usize) -> Signal {
    match result {
        Ok(_) => Signal::Answered { took, records },
        Err(ApiError::Timeout) => Signal::Overloaded,
        Err(ApiError::Status {
            status: 429 | 503 | 504,
            ..
        }) => Signal::Overloaded,
        Err(_) => Signal::Neutral,
    }
}

pub fn classify(error: &ApiError) -> Action {
    match error {
        ApiError::Timeout
        | ApiError::Connect { .. }
        | ApiError::Malformed { .. }
        | ApiError::TooLarge { .. } => Action::Retry { after: None },
        ApiError::HeldTooLong => Action::GiveBack,
        ApiError::Status {
            status,
            code,
            path,
            retry_after,
            ..
        } => match (*status, code.as_deref()) {
            (408 | 409 | 429, _) | (500..=599, _) => Action::Retry {
                after: *retry_after,
            },
            (413, _) => Action::Split,
            (422, Some(codes::KEY_REUSED)) => Action::KeyReused,
            (422, Some(codes::REQUEST_SCHEMA)) => match path.as_deref().and_then(row_index) {
                Some(index) => Action::DropOffender { index },
                None => Action::Bisect { schema: true },
            },
            (400 | 422, _) => Action::Bisect { schema: false },
            (401 | 403, _) => Action::Pause,
            _ => Action::Release,
        },
    }
}

/// `records[17].favourite_color` → 17.
pub fn row_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("records[")?;
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        status: u16,
        code: Option<&str>,
        path: Option<&str>,
        retry_after: Option<u64>,
    ) -> ApiError {
        ApiError::Status {
            status,
            code: code.map(str::to_owned),
            message: String::new(),
            path: path.map(str::to_owned),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn load_signals_from_a_table() {
        let took = Duration::from_millis(80);
        let cases: Vec<(Result<(), ApiError>, Signal)> = vec![
            (Ok(()), Signal::Answered { took, records: 7 }),
            (Err(ApiError::Timeout), Signal::Overloaded),
            (Err(status(429, None, None, Some(1))), Signal::Overloaded),
            (Err(status(503, None, None, None)), Signal::Overloaded),
            (Err(status(504, None, None, None)), Signal::Overloaded),
            (Err(status(500, None, None, None)), Signal::Neutral),
            (Err(status(413, None, None, None)), Signal::Neutral),
            (Err(ApiError::connect("refused")), Signal::Neutral),
        ];
        for (result, expected) in cases {
            assert_eq!(signal(&result, took, 7), expected, "{result:?}");
        }
    }

    #[test]
    fn table() {
        let retry = |after: Option<u64>| Action::Retry {
            after: after.map(Duration::from_secs),
        };
        let cases: Vec<(ApiError, Action)> = vec![
            (ApiError::Timeout, retry(None)),
            (ApiError::connect("refused"), retry(None)),
            (ApiError::malformed("bad json"), retry(None)),
            (
                ApiError::TooLarge {
                    route: "job",
                    ceiling: 1,
                },
                retry(None),
            ),
            (status(408, None, None, None), retry(None)),
            (ApiError::HeldTooLong, Action::GiveBack),
            (
                status(409, Some(codes::IN_PROGRESS), None, None),
                retry(None),
            ),
            (
                status(429, Some(codes::RATE_LIMITED), None, Some(2)),
                retry(Some(2)),
            ),
            (
                status(500, Some(codes::INTERNAL_ERROR), None, None),
                retry(None),
            ),
            (status(502, None, None, None), retry(None)),
            (status(503, None, None, Some(1)), retry(Some(1))),
            (status(504, None, None, None), retry(None)),
            (
                status(413, Some(codes::REQUEST_INVALID), None, None),
                Action::Split,
            ),
            (
                status(
                    422,
                    Some(codes::REQUEST_SCHEMA),
                    Some("records[17].favourite_color"),
                    None,
                ),
                Action::DropOffender { index: 17 },
            ),
            (
                status(422, Some(codes::REQUEST_SCHEMA), None, None),
                Action::Bisect { schema: true },
            ),
            (
                status(422, Some(codes::REQUEST_SCHEMA), Some("nonsense"), None),
                Action::Bisect { schema: true },
            ),
            (
                status(422, Some(codes::KEY_REUSED), None, None),
                Action::KeyReused,
            ),
            (
                status(422, None, None, None),
                Action::Bisect { schema: false },
            ),
            (
                status(400, Some(codes::REQUEST_INVALID), None, None),
                Action::Bisect { schema: false },
            ),
            (
                status(401, Some(codes::UNAUTHORIZED), None, None),
                Action::Pause,
            ),
            (
                status(403, Some(codes::FORBIDDEN), None, None),
                Action::Pause,
            ),
            (
                status(404, Some(codes::NOT_FOUND), None, None),
                Action::Release,
            ),
            (status(405, None, None, None), Action::Release),
        ];
        for (error, expected) in cases {
            assert_eq!(classify(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn row_paths() {
        assert_eq!(row_index("records[0].x"), Some(0));
        assert_eq!(row_index("records[123]"), Some(123));
        assert_eq!(row_index("record.x"), None);
        assert_eq!(row_index("records[x].y"), None);
    }
}
