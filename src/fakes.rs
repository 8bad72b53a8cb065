//! Fakes behind the pipeline's seams, for the glue's unit tests on a paused clock: a queue
//! (`sqs::Sqs`), an API (`sink::api::Records`) and a settler (`outcome::Settle`), each recording
//! what it was asked; and builders for the stages they stand in for.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use bytes::Bytes;
use futures::future::BoxFuture;
use records_contract::ObjectSchema;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::Decoded;
use crate::batch::{Batch, BodyFrame, FlushReason, Row};
use crate::config::{AckOn, Operation};
use crate::lease::{Lease, Leased, Ledger};
use crate::message::Received;
use crate::outcome::{Settle, Settlement};
use crate::schema::SchemaHandle;
use crate::sink::api::{Accepted, ApiError, BatchCall, JobState, JobStatus, Records};
use crate::sink::budget::{Budget, Ticket};
use crate::sink::concurrency::Slots;
use crate::sink::deliver::{Delivery, Policy};
use crate::sqs::{EntryFailure, Sqs, SqsError};
use crate::telemetry::Telemetry;

/// A queue that records every call; `refuse_deletes` refuses every delete entry with its code.
#[derive(Default)]
pub struct FakeQueue {
    pub url: String,
    pub refuse_deletes: Option<&'static str>,
    pub deletes: Mutex<Vec<Vec<String>>>,
    pub visibility: Mutex<Vec<Vec<(String, i32)>>>,
    pub sent: Mutex<usize>,
}

impl Sqs for FakeQueue {
    fn url(&self) -> &str {
        &self.url
    }

    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>> {
        lock(&self.deletes).push(receipts.iter().map(|r| r.to_string()).collect());
        let failed = self.refuse_deletes.map_or_else(Vec::new, |code| {
            (0..receipts.len())
                .map(|index| EntryFailure {
                    index,
                    code: code.into(),
                    sender_fault: false,
                })
                .collect()
        });
        Box::pin(async move { Ok(failed) })
    }

    fn change_visibility_batch<'a>(
        &'a self,
        entries: &'a [(&'a str, i32)],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>> {
        lock(&self.visibility).push(entries.iter().map(|(r, s)| (r.to_string(), *s)).collect());
        Box::pin(async { Ok(Vec::new()) })
    }

    fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> BoxFuture<'_, Result<Vec<EntryFailure>, SqsError>> {
        *lock(&self.sent) += entries.len();
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// One submit the fake API saw.
#[derive(Debug)]
pub struct Submitted {
    pub key: String,
    pub body: Bytes,
    pub records: usize,
    pub at: tokio::time::Instant,
}

/// Answers submits from `answers`, then with 202s; every job completes without errors, after
/// `job_time` on the (paused) clock.
pub struct FakeApi {
    pub answers: Mutex<VecDeque<Result<Accepted, ApiError>>>,
    pub seen: mpsc::UnboundedSender<Submitted>,
    pub job_time: Duration,
}

impl Records for FakeApi {
    fn submit<'a>(
        &'a self,
        call: &'a BatchCall<'a>,
        ticket: Option<Ticket>,
    ) -> BoxFuture<'a, Result<Accepted, ApiError>> {
        // The call leaves, as the real client's does once its ticket is spent.
        if let Some(ticket) = ticket {
            ticket.spend();
        }
        let _ = self.seen.send(Submitted {
            key: call.key.to_owned(),
            body: call.body.clone(),
            records: call.records,
            at: tokio::time::Instant::now(),
        });
        let answer = lock(&self.answers).pop_front().unwrap_or_else(|| {
            Ok(Accepted {
                job_id: "job-1".into(),
                job_url: "http://api/jobs/job-1".into(),
                accepted_records: call.records,
                replayed: false,
            })
        });
        Box::pin(async move { answer })
    }

    fn job<'a>(&'a self, _job_url: &'a str) -> BoxFuture<'a, Result<JobStatus, ApiError>> {
        Box::pin(async {
            tokio::time::sleep(self.job_time).await;
            Ok(JobStatus {
                state: JobState::Completed,
                invalid_rows: 0,
                invalid_rows_given: true,
                errors: Vec::new(),
            })
        })
    }

    fn metadata(&self) -> BoxFuture<'_, Result<ObjectSchema, ApiError>> {
        Box::pin(async { Err(ApiError::Timeout) })
    }
}

/// An API refusal with this status and nothing else.
pub fn status(code: u16) -> ApiError {
    ApiError::Status {
        status: code,
        code: None,
        message: String::new(),
        path: None,
        retry_after: None,
    }
}

/// Records each message's fate as (message id, `delivered` | `retry` | the DLQ reason), and
/// spends its claim the way the real settler would.
#[derive(Default)]
pub struct FakeSettle(pub Mutex<Vec<(String, String)>>);

impl FakeSettle {
    pub fn fates(&self) -> Vec<(String, String)> {
        lock(&self.0).clone()
    }
}

impl Settle for FakeSettle {
    fn settle(&self, settlement: Settlement) -> BoxFuture<'_, ()> {
        let Settlement {
            delete,
            release,
            dead_letter,
            done,
        } = settlement;
        let mut fates = lock(&self.0);
        for lease in delete {
            fates.push((lease.id.clone(), "delivered".to_owned()));
            lease.spend();
        }
        for lease in done {
            fates.push((lease.id.clone(), "delivered".to_owned()));
            lease.settled();
        }
        for lease in release {
            fates.push((lease.id.clone(), "retry".to_owned()));
            lease.spend();
        }
        for (message, rejection) in dead_letter {
            fates.push((message.id.clone(), rejection.reason.as_str().to_owned()));
            match message {
                Leased::Held(lease) => lease.spend(),
                Leased::Deleted(lease) => lease.settled(),
            }
        }
        Box::pin(async {})
    }

    /// Every delete goes through.
    fn delete<'a>(&'a self, leases: Vec<&'a Lease>) -> BoxFuture<'a, HashSet<u64>> {
        let gone = leases.iter().map(|lease| lease.generation()).collect();
        Box::pin(async move { gone })
    }
}

/// A FIFO message of `group`, `sequence` in it.
pub fn in_group(id: &str, group: &str, sequence: u128) -> Received {
    let mut message = Received::fake(id, "{}");
    message.group_id = Some(group.to_owned());
    message.sequence = Some(sequence);
    message
}

/// A message held in `ledger`, with receipt `r-<id>`.
pub fn held(ledger: &Arc<Ledger>, message: Received) -> Lease {
    let receipt = format!("r-{}", message.id);
    Lease::hold(ledger, message, receipt, Vec::new()).expect("a new message")
}

pub fn record() -> Decoded {
    Decoded {
        key: None,
        encoded: r#"{"n":1}"#.into(),
    }
}

pub fn batch(leases: Vec<Lease>) -> Batch {
    let rows = leases.into_iter().map(|l| Row::new(record(), l)).collect();
    Batch::new(
        rows,
        FlushReason::Size,
        BodyFrame::new(Operation::Append, "n"),
    )
}

/// A delivery over fakes: unlimited budget, a fixed limit of 4 batches, a 10 s release backoff,
/// `--ack-on completed`, appends.
pub fn delivery(
    api: FakeApi,
    settle: Arc<FakeSettle>,
    ledger: &Arc<Ledger>,
    fifo: bool,
) -> Arc<Delivery> {
    let telemetry = Arc::new(Telemetry::new());
    Arc::new(Delivery {
        api: Arc::new(api),
        settler: settle,
        budget: Arc::new(Budget::unlimited(telemetry.clone())),
        slots: Slots::new(4, false, telemetry.clone()),
        ledger: ledger.clone(),
        schema: SchemaHandle::new(ObjectSchema {
            name: "o".into(),
            match_keys: Vec::new(),
            fields: Vec::new(),
        }),
        outage: Default::default(),
        draining: CancellationToken::new(),
        telemetry,
        policy: Policy {
            fifo,
            ack_on: AckOn::Completed,
            operation: Operation::Append,
            job_timeout: Duration::from_secs(60),
            auth_retry: Duration::from_secs(30),
            release_base: Duration::from_secs(10),
            release_cap: Duration::from_secs(900),
        },
    })
}

/// A fake API answering `answers` first, and the receiver of what it saw.
pub fn api(
    answers: Vec<Result<Accepted, ApiError>>,
) -> (FakeApi, mpsc::UnboundedReceiver<Submitted>) {
    let (seen, calls) = mpsc::unbounded_channel();
    let api = FakeApi {
        answers: Mutex::new(answers.into()),
        seen,
        job_time: Duration::ZERO,
    };
    (api, calls)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
