//! What becomes of a message: its fate (which only ever gets worse: Delivered, then Retry, then
//! Rejected), and the DLQ reasons of docs/operations.md ("Alarms and what to do").

use std::collections::HashSet;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::lease::{DeletedLease, Lease, Leased};

/// SQS's longest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// How long a message released for a retry stays invisible: `base` doubled per earlier receive,
/// at most `cap`. An outage of the API then spends time instead of receive counts.
pub fn release_visibility(base: Duration, receive_count: u32, cap: Duration) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings)
        .min(cap)
        .min(MAX_VISIBILITY)
}

/// The DLQ reason names that operators filter on (`dlq-reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidRow,
    Unparseable,
    NotAnObject,
    MissingMatchKey,
    UnknownField,
    Oversize,
    Md5Mismatch,
    RequestRejected,
    JobFailed,
    JobTimeout,
    InvalidRowUnidentified,
    /// A number no IEEE-754 double can hold (`1e999`): an API that reads JSON numbers as doubles
    /// would store infinity.
    NumberOutOfRange,
    /// 422 KEY_REUSED: a job under this batch's key exists with other bytes (a change of version or
    /// settings since); whether its rows committed is unknown, so the messages are kept here.
    KeyReused,
    /// The API lost track of an accepted append's job (404 past the grace): it may have committed,
    /// so the rows are not sent again, which could write them twice.
    JobUnknown,
    /// `--envelope sns|eventbridge`, and the body is not that envelope.
    NotAnEnvelope,
    /// `--field`: no source of the mapping is in the message, or a mapped attribute has no JSON
    /// form.
    MappingFailed,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::InvalidRow,
        Reason::Unparseable,
        Reason::NotAnObject,
        Reason::MissingMatchKey,
        Reason::UnknownField,
        Reason::Oversize,
        Reason::Md5Mismatch,
        Reason::RequestRejected,
        Reason::JobFailed,
        Reason::JobTimeout,
        Reason::InvalidRowUnidentified,
        Reason::NumberOutOfRange,
        Reason::KeyReused,
        Reason::JobUnknown,
        Reason::NotAnEnvelope,
        Reason::MappingFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidRow => "invalid_row",
            Reason::Unparseable => "unparseable",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingMatchKey => "missing_match_key",
            Reason::UnknownField => "unknown_field",
            Reason::Oversize => "oversize",
            Reason::Md5Mismatch => "md5_mismatch",
            Reason::RequestRejected => "request_rejected",
            Reason::JobFailed => "job_failed",
            Reason::JobTimeout => "job_timeout",
            Reason::InvalidRowUnidentified => "invalid_row_unidentified",
            Reason::NumberOutOfRange => "number_out_of_range",
            Reason::KeyReused => "key_reused",
            Reason::JobUnknown => "job_unknown",
            Reason::NotAnEnvelope => "not_an_envelope",
            Reason::MappingFailed => "mapping_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }
}

/// Why a message goes to the DLQ, with the API's words where it gave any.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub reason: Reason,
    pub code: Option<String>,
    pub message: String,
    pub job_id: Option<String>,
    pub row_index: Option<usize>,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            code: None,
            message: message.into(),
            job_id: None,
            row_index: None,
        }
    }

    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    pub fn in_job(mut self, job_id: &str, row_index: Option<usize>) -> Self {
        self.job_id = Some(job_id.to_owned());
        self.row_index = row_index;
        self
    }
}

/// A message's fate, decided once: `Settlement::add` takes the lease by move, so no message
/// gets a second fate that could contradict the first.
#[derive(Clone, Debug)]
pub enum Fate {
    Delivered,
    Retry,
    Rejected(Rejection),
}

/// The decided fates of a set of messages, routed by what each message is, ready to be carried
/// out against SQS. It owns their leases: carrying it out consumes them.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Held and delivered: deleted from the source.
    pub delete: Vec<Lease>,
    /// Held, to be tried again: released with its backoff.
    pub release: Vec<Lease>,
    /// Rejected, or deleted and not deliverable again: a DLQ copy, then (if held) the delete.
    pub dead_letter: Vec<(Leased, Rejection)>,
    /// Deleted after its 202, and its job committed it: nothing more to do.
    pub done: Vec<DeletedLease>,
}

impl Settlement {
    pub fn add(&mut self, message: impl Into<Leased>, fate: Fate) {
        match (message.into(), fate) {
            (Leased::Held(lease), Fate::Delivered) => self.delete.push(lease),
            (Leased::Held(lease), Fate::Retry) => self.release.push(lease),
            (Leased::Deleted(lease), Fate::Delivered) => self.done.push(lease),
            // It left the queue already, so its only way back is the DLQ.
            (deleted @ Leased::Deleted(_), Fate::Retry) => {
                let rejection = Rejection::new(
                    Reason::JobFailed,
                    "the batch could not be delivered again after its job failed, and the \
                     message was already deleted (--ack-on accepted)",
                );
                self.dead_letter.push((deleted, rejection));
            }
            (message, Fate::Rejected(rejection)) => self.dead_letter.push((message, rejection)),
        }
    }

    /// Every message of a row shares the row's fate.
    pub fn add_all<M: Into<Leased>>(&mut self, messages: impl IntoIterator<Item = M>, fate: Fate) {
        for message in messages {
            self.add(message, fate.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.delete.is_empty()
            && self.release.is_empty()
            && self.dead_letter.is_empty()
            && self.done.is_empty()
    }
}

/// How the sink hands fates back to the source: the seam between a delivery and the settler, so
/// that the sink does not reach into the source and its unit tests can record fates instead.
pub trait Settle: Send + Sync {
    /// Carries out a settlement, consuming its leases.
    fn settle(&self, settlement: Settlement) -> BoxFuture<'_, ()>;

    /// Deletes these held messages; returns the generations (`Lease::generation`) that left the
    /// queue. The others are still in it, and still the caller's to settle.
    fn delete<'a>(&'a self, leases: Vec<&'a Lease>) -> BoxFuture<'a, HashSet<u64>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }
}
