//! HTTP calls to the Records API over reqwest: metadata, batch submits (paced, retried with `backon`
//! under one key and one body), and job status reads.
//!
//! The API is trusted with records, not with the token or the worker's memory (docs/security.md):
//! the token goes only to the origin of `--api-url` (`origin.rs`), every answer is read against its
//! route's ceiling (`ceiling.rs`), and text the API sends is redacted of the token before it goes
//! anywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::ceiling::{Ceiling, read_capped};
use super::classify::{Action, Signal, classify, signal};
use super::error::{ApiError, REFUSED_REDIRECT, transport};
use super::origin::{JobRoute, Origin};
use crate::config::{Operation, Settings};
use crate::secret::ApiToken;
use crate::sink::budget::{Budget, Ticket};
use crate::telemetry::Telemetry;
use records_contract::{
    BatchAccepted, Envelope, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, JobReport, ObjectSchema,
};

/// A 202: the batch is accepted and its job runs.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub job_id: String,
    /// Where the job is polled: `statusPath` joined to `--api-url`, always on its origin.
    pub job_url: String,
    pub accepted_records: usize,
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Processing,
    Completed,
    /// `failed`, and `cancelled`/`canceled`: the job ended without committing (docs/operations.md).
    Failed,
    /// A state the contract does not name: the job is read as still running, and `--job-timeout`
    /// decides, with a warning naming the state.
    Unknown(String),
}

impl JobState {
    /// Any case; the contract's four states plus the cancelled spellings.
    fn parse(text: &str) -> Self {
        match text.to_ascii_lowercase().as_str() {
            "queued" | "pending" => JobState::Queued,
            "processing" | "running" => JobState::Processing,
            "completed" => JobState::Completed,
            "failed" | "cancelled" | "canceled" => JobState::Failed,
            // Cut to 64 characters only after the token is redacted (`RecordsApi::job`).
            _ => JobState::Unknown(text.to_owned()),
        }
    }
}

/// One entry of a job's `errors`, read on its own: a field of the wrong type is left out, and an
/// entry without a usable row index is "unidentified" (its row is not known).
#[derive(Clone, Debug, Default)]
pub struct JobError {
    pub index: Option<usize>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub path: Option<String>,
}

impl JobError {
    fn from_value(value: &Value) -> Self {
        let text = |name: &str| match value.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        Self {
            index: value
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok()),
            code: text("code"),
            message: text("message"),
            path: value.get("path").and_then(Value::as_str).map(str::to_owned),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JobStatus {
    pub state: JobState,
    /// `metrics.invalidRows`; 0 when the report does not give it (`invalid_rows_given`).
    pub invalid_rows: usize,
    pub invalid_rows_given: bool,
    pub errors: Vec<JobError>,
}

pub struct RecordsApi {
    http: reqwest::Client,
    base: String,
    origin: Origin,
    auth: HeaderValue,
    token: ApiToken,
    object: String,
    operation: Operation,
    retry_attempts: usize,
    budget: Arc<Budget>,
    /// Batch calls awaiting their answer, for the adaptive limit's bookkeeping.
    calls_out: std::sync::atomic::AtomicUsize,
    telemetry: Arc<Telemetry>,
}

fn auth_header(token: &ApiToken) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    value.set_sensitive(true);
    value
}

/// One batch request: the same key and body bytes on every attempt.
pub struct BatchCall<'a> {
    pub key: &'a str,
    pub body: Bytes,
    pub records: usize,
    /// Hears each answer's load signal and the calls still out (the adaptive limit).
    pub on_answer: &'a (dyn Fn(Signal, usize) + Sync),
    /// The last moment a retry may still take a token: past it the batch's held messages near
    /// SQS's 12-hour visibility ceiling, and it goes back to the queue (`ApiError::HeldTooLong`).
    pub pay_by: Option<Instant>,
}

/// A 2xx answer: its status, the envelope's `data`, and whether the API replayed it from its
/// idempotency store (the `Idempotent-Replayed` header).
struct Answer {
    status: u16,
    data: Value,
    replayed: bool,
}

impl RecordsApi {
    pub fn new(
        settings: &Settings,
        budget: Arc<Budget>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, ApiError> {
        let origin = Origin::of(&settings.api_url)
            .ok_or_else(|| ApiError::connect("--api-url is not an absolute http(s) URL"))?;
        let http = reqwest::Client::builder()
            .redirect(same_origin_redirects(
                origin.clone(),
                settings.api_url.clone(),
            ))
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| ApiError::connect(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: settings.api_url.clone(),
            origin,
            auth: auth_header(&settings.api_token),
            token: settings.api_token.clone(),
            object: settings.object.clone(),
            operation: settings.operation,
            retry_attempts: settings.retry_attempts,
            budget,
            calls_out: Default::default(),
            telemetry,
        })
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// One request: its status, metric and answer. The request must go to `self.origin` (every
    /// URL is built from `self.base`, and a job's from `JobRoute`); a redirect elsewhere is
    /// refused (`same_origin_redirects`).
    async fn call(
        &self,
        ceiling: Ceiling,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let result = self
            .exchange(ceiling, request.header(AUTHORIZATION, self.auth.clone()))
            .await
            .map_err(|error| error.redacted(&self.token));
        let label = match &result {
            Ok(answer) => answer.status.to_string(),
            Err(error) => error.status_label(),
        };
        self.telemetry.api_request(ceiling.route, &label);
        result
    }

    async fn exchange(
        &self,
        ceiling: Ceiling,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| Duration::from_secs_f64(secs.min(3600.0)));
        let replayed = response.headers().contains_key(IDEMPOTENT_REPLAYED);
        let bytes = match read_capped(response, ceiling).await {
            Err(ApiError::TooLarge { route, ceiling }) => {
                self.telemetry.api_answer_too_large(route, ceiling);
                if (200..300).contains(&status) {
                    return Err(ApiError::TooLarge { route, ceiling });
                }
                // A refusal is classified by its status (a 401 still pauses, a 413 still splits),
                // whatever its body says.
                Bytes::new()
            }
            read => read?,
        };
        let data = answer_data(status, &bytes, retry_after)?;
        Ok(Answer {
            status,
            data,
            replayed,
        })
    }

    pub async fn metadata(&self) -> Result<ObjectSchema, ApiError> {
        let url = format!("{}/metadata/objects/{}", self.base, self.object);
        let answer = self.call(Ceiling::METADATA, self.http.get(url)).await?;
        let schema = metadata(answer.data).map_err(|e| e.redacted(&self.token))?;
        let names = std::iter::once(&schema.name)
            .chain(&schema.match_keys)
            .chain(schema.fields.iter().map(|field| &field.name));
        if names
            .into_iter()
            .any(|name| name.contains(self.token.expose()))
        {
            // Names go to logs, `check` and `dlq-error-message`; rewriting them would break matching.
            return Err(ApiError::malformed(
                "the object's metadata holds the API token in a name",
            ));
        }
        Ok(schema)
    }

    /// One attempt, paid for by `ticket` or by a token taken now. A 429 pauses every sender for
    /// its `Retry-After`; the answer's load signal goes to `on_answer`.
    pub async fn submit_once(
        &self,
        call: &BatchCall<'_>,
        ticket: Option<Ticket>,
    ) -> Result<Accepted, ApiError> {
        let BatchCall {
            key,
            body,
            records,
            on_answer,
            pay_by,
        } = call;
        pay(&self.budget, ticket, *pay_by).await?.spend();
        self.telemetry.call_records(*records);
        let url = format!(
            "{}/records/{}/{}",
            self.base,
            self.object,
            self.operation.path()
        );
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, *key)
            .body(body.clone());
        use std::sync::atomic::Ordering::SeqCst;
        let started = std::time::Instant::now();
        self.calls_out.fetch_add(1, SeqCst);
        let result = self.call(Ceiling::BATCH, request).await;
        let still_out = self.calls_out.fetch_sub(1, SeqCst).saturating_sub(1);
        on_answer(signal(&result, started.elapsed(), *records), still_out);
        if let Err(ApiError::Status {
            status: 429,
            retry_after,
            ..
        }) = &result
        {
            self.budget
                .pause_for(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        let Answer { data, replayed, .. } = result?;
        let accepted = accepted_data(data).map_err(|e| e.redacted(&self.token))?;
        if accepted.job_id.contains(self.token.expose()) {
            // The job ID goes to logs and DLQ attributes; an API that puts the token there is
            // read as broken, and the call is retried under the same key.
            return Err(ApiError::malformed("the jobId holds the API token"));
        }
        let job_url = match JobRoute::resolve(
            &self.origin,
            &self.base,
            &self.object,
            &accepted.job_id,
            &accepted.status_path,
        ) {
            JobRoute::Named(url) => url,
            JobRoute::Foreign { named_origin, url } => {
                let named_origin = self.token.redact_any_case(&named_origin);
                self.telemetry
                    .api_foreign_status_path(&accepted.job_id, &named_origin);
                url
            }
            JobRoute::Unusable { .. } => {
                return Err(ApiError::malformed(
                    "the statusPath names another origin, and the jobId cannot name the \
                     documented job route",
                ));
            }
        };
        Ok(Accepted {
            job_id: accepted.job_id,
            job_url,
            accepted_records: accepted.accepted_records,
            replayed,
        })
    }

    /// Submits with exponential backoff and jitter on transient failures, always with the same key
    /// and the same body bytes, honouring `Retry-After`. The first attempt spends `ticket`; every
    /// retry pays for itself.
    pub async fn submit(
        &self,
        call: &BatchCall<'_>,
        ticket: Option<Ticket>,
    ) -> Result<Accepted, ApiError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.retry_attempts.saturating_sub(1));
        let ticket = std::sync::Mutex::new(ticket);
        let first = || ticket.lock().unwrap_or_else(|p| p.into_inner()).take();
        (|| self.submit_once(call, first()))
            .retry(backoff)
            .when(|error| matches!(classify(error), Action::Retry { .. }))
            .adjust(|error, delay| match (classify(error), delay) {
                (Action::Retry { after: Some(after) }, Some(delay)) => Some(delay.max(after)),
                (_, delay) => delay,
            })
            .notify(|error, delay| self.telemetry.api_retry(call.key, error, delay))
            .await
    }

    /// `job_url` comes from `Accepted`: on the origin of `--api-url`.
    pub async fn job(&self, job_url: &str) -> Result<JobStatus, ApiError> {
        let answer = self.call(Ceiling::JOB, self.http.get(job_url)).await?;
        let mut status = job_status(answer.data).map_err(|e| e.redacted(&self.token))?;
        if let JobState::Unknown(state) = &mut status.state {
            *state = self.token.redact(state).chars().take(64).collect();
        }
        for error in &mut status.errors {
            for text in [&mut error.code, &mut error.message, &mut error.path]
                .into_iter()
                .flatten()
            {
                *text = self.token.redact(text);
            }
        }
        Ok(status)
    }
}

/// The ticket of a call: the one it came with, or a token taken now, by `pay_by` at the latest.
pub async fn pay(
    budget: &Arc<Budget>,
    ticket: Option<Ticket>,
    pay_by: Option<Instant>,
) -> Result<Ticket, ApiError> {
    match (ticket, pay_by) {
        (Some(ticket), _) => Ok(ticket),
        (None, None) => Ok(budget.acquire().await),
        (None, Some(by)) => tokio::time::timeout_at(by.into(), budget.acquire())
            .await
            .map_err(|_| ApiError::HeldTooLong),
    }
}

/// An answer's body read through the envelope: a 2xx gives its `data`; any other status gives the
/// error the body names, or "no error body". The pure half of every request, for the fuzz bench.
pub fn answer_data(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Value, ApiError> {
    let envelope: Option<Envelope> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return envelope
            .and_then(|e| e.data)
            .ok_or_else(|| ApiError::malformed(format!("HTTP {status} without a data envelope")));
    }
    let error = envelope.and_then(|e| e.error);
    Err(ApiError::Status {
        status,
        code: error.as_ref().and_then(|e| e.code.clone()),
        message: error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| "no error body".into()),
        path: error.and_then(|e| e.details).and_then(|d| d.path),
        retry_after,
    })
}

/// A 202's `data`: it must name the job and where to poll it.
pub fn accepted_data(data: Value) -> Result<BatchAccepted, ApiError> {
    serde_json::from_value(data)
        .map_err(|e| ApiError::unreadable("202 without jobId/statusPath", &e))
}

/// The metadata route's `data`: the object's schema.
pub fn metadata(data: Value) -> Result<ObjectSchema, ApiError> {
    serde_json::from_value(data).map_err(|e| ApiError::unreadable("metadata", &e))
}

/// A job report's `data`, as the worker reads it. Only a missing or non-string `state` makes it
/// Malformed; every other field is read on its own, so that one odd entry cannot hide a job that
/// committed.
pub fn job_status(data: Value) -> Result<JobStatus, ApiError> {
    let report: JobReport = serde_json::from_value(data)
        .map_err(|e| ApiError::unreadable("job status without a string 'state'", &e))?;
    let invalid_rows = report
        .metrics
        .and_then(|m| m.invalid_rows)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let errors = report
        .errors
        .unwrap_or_default()
        .iter()
        .map(JobError::from_value)
        .collect();
    Ok(JobStatus {
        state: JobState::parse(&report.state),
        invalid_rows: invalid_rows.unwrap_or(0),
        invalid_rows_given: invalid_rows.is_some(),
        errors,
    })
}

/// A whole job-report body (`{"data": ...}`), for checks that take arbitrary bytes.
pub fn job_status_from_body(body: &[u8]) -> Result<JobStatus, ApiError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ApiError::unreadable("job status", &e))?;
    job_status(
        envelope
            .data
            .ok_or_else(|| ApiError::malformed("job status without a data envelope"))?,
    )
}

/// Redirects are followed only within the origin of `--api-url` and under its path, 10 at most.
/// reqwest alone would follow one to
/// another origin without the token, but with the records of a 307, and the worker would then
/// believe the stranger's answer (a 202, or a job "completed" that gets messages deleted). A hop
/// elsewhere ends the request as a transient failure that names the fix.
fn same_origin_redirects(origin: Origin, base: String) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let home = Origin::of(attempt.url().as_str()).as_ref() == Some(&origin)
            && super::origin::under(&base, attempt.url());
        if attempt.previous().len() > 10 || !home {
            attempt.error(REFUSED_REDIRECT)
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry pays with a token taken by `pay_by` at the latest: under `1/day`, whose next
    /// token is a day away, it gives up at `pay_by` with `HeldTooLong`, and the batch goes back
    /// before SQS's 12-hour ceiling. Before, the retry waited the whole day for its token.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_its_token_no_later_than_pay_by() {
        let limits = records_contract::quota::parse_limits("1/day").unwrap();
        let telemetry = Arc::new(crate::telemetry::Telemetry::new());
        let budget = Arc::new(Budget::local(&limits, None, telemetry).unwrap());
        budget.acquire().await.spend();
        let start = tokio::time::Instant::now();
        let by = start.into_std() + Duration::from_secs(11 * 3600);
        let paid = pay(&budget, None, Some(by)).await;
        assert!(matches!(paid, Err(ApiError::HeldTooLong)), "{paid:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(11 * 3600));
        let with_ticket = pay(&budget, Some(Ticket::free()), Some(start.into_std())).await;
        assert!(with_ticket.is_ok(), "a ticket in hand pays at once");
    }

    /// A job report is read entry by entry. Each of these made the whole report
    /// Malformed on 8f017ce, so a committed job ran into `--job-timeout` and its rows into the DLQ.
    #[test]
    fn odd_job_reports_are_read_entry_by_entry() {
        let read = |text: &str| job_status_from_body(text.as_bytes());
        let report = read(
            r#"{"data":{"state":"completed","metrics":{"invalidRows":3},"errors":[
                {"index":-1,"code":"X","message":"m"},
                {"index":1,"code":7,"message":{"why":"no"}},
                "not an object",
                {"index":"2","path":"records[2].email"}]}}"#,
        )
        .unwrap();
        assert_eq!(report.state, JobState::Completed);
        assert_eq!(report.invalid_rows, 3);
        assert_eq!(report.errors.len(), 4);
        assert_eq!(report.errors[0].index, None, "index -1 is unidentified");
        assert_eq!(report.errors[1].index, Some(1));
        assert_eq!(report.errors[1].code.as_deref(), Some("7"));
        assert_eq!(report.errors[3].path.as_deref(), Some("records[2].email"));
        for (state, expected) in [
            ("COMPLETED", JobState::Completed),
            ("Processing", JobState::Processing),
            ("cancelled", JobState::Failed),
            ("canceled", JobState::Failed),
            ("paused", JobState::Unknown("paused".into())),
        ] {
            let body = format!(r#"{{"data":{{"state":"{state}","errors":"n/a","metrics":null}}}}"#);
            assert_eq!(read(&body).unwrap().state, expected, "{state}");
        }
        assert!(
            read(r#"{"data":{"errors":[]}}"#).is_err(),
            "no state at all"
        );
    }
}
