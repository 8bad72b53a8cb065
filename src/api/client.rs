//! HTTP calls to the Records API over reqwest: metadata, batch submits (paced, retried with `backon`
//! under one key and one body), and job status reads.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;

use super::classify::{Action, Signal, classify, signal};
use super::error::ApiError;
use crate::budget::{Budget, Ticket};
use crate::config::{Operation, Settings};
use crate::secret::ApiToken;
use crate::telemetry::Telemetry;
use records_contract::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, ObjectSchema};

/// A 202: the batch is accepted and its job runs.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub job_id: String,
    pub status_path: String,
    pub accepted_records: usize,
    pub replayed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Processing,
    Completed,
    Failed,
}

#[derive(Clone, Debug, Deserialize)]
pub struct JobError {
    pub index: Option<usize>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub path: Option<String>,
}

#[derive(Clone, Debug)]
pub struct JobStatus {
    pub state: JobState,
    pub invalid_rows: usize,
    pub errors: Vec<JobError>,
}

pub struct RecordsApi {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    object: String,
    operation: Operation,
    retry_attempts: usize,
    budget: Arc<Budget>,
    /// Batch calls awaiting their answer, for the adaptive limit's bookkeeping.
    calls_out: std::sync::atomic::AtomicUsize,
    telemetry: Arc<Telemetry>,
}

#[derive(Deserialize)]
struct Envelope {
    data: Option<Value>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedData {
    job_id: String,
    status_path: String,
    #[serde(default)]
    accepted_records: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobData {
    state: JobState,
    #[serde(default)]
    metrics: Option<JobMetrics>,
    #[serde(default)]
    errors: Option<Vec<JobError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobMetrics {
    #[serde(default)]
    invalid_rows: usize,
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
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| ApiError::Connect(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: settings.api_url.clone(),
            auth: auth_header(&settings.api_token),
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

    /// One request: its status, metric and answer.
    async fn call(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let result = self
            .exchange(request.header(AUTHORIZATION, self.auth.clone()))
            .await;
        let label = match &result {
            Ok(answer) => answer.status.to_string(),
            Err(error) => error.status_label(),
        };
        self.telemetry.api_request(route, &label);
        result
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Answer, ApiError> {
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
        let bytes = response.bytes().await.map_err(transport)?;
        let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            let data = envelope.and_then(|e| e.data).ok_or_else(|| {
                ApiError::Malformed(format!("HTTP {status} without a data envelope"))
            })?;
            return Ok(Answer {
                status,
                data,
                replayed,
            });
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

    pub async fn metadata(&self) -> Result<ObjectSchema, ApiError> {
        let url = format!("{}/metadata/objects/{}", self.base, self.object);
        let answer = self.call("metadata", self.http.get(url)).await?;
        serde_json::from_value(answer.data)
            .map_err(|e| ApiError::Malformed(format!("metadata: {e}")))
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
        } = call;
        let _paid = match ticket {
            Some(ticket) => ticket,
            None => self.budget.acquire().await,
        };
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
        let result = self.call("batch", request).await;
        let still_out = self.calls_out.fetch_sub(1, SeqCst).saturating_sub(1);
        on_answer(signal(&result, started.elapsed()), still_out);
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
        let accepted: AcceptedData = serde_json::from_value(data)
            .map_err(|e| ApiError::Malformed(format!("202 without jobId/statusPath: {e}")))?;
        Ok(Accepted {
            job_id: accepted.job_id,
            status_path: accepted.status_path,
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

    pub async fn job(&self, status_path: &str) -> Result<JobStatus, ApiError> {
        let url = status_url(&self.base, status_path);
        let answer = self.call("job", self.http.get(url)).await?;
        job_status(answer.data)
    }
}

/// A job report's `data`, as the worker reads it.
pub fn job_status(data: Value) -> Result<JobStatus, ApiError> {
    let job: JobData = serde_json::from_value(data)
        .map_err(|e| ApiError::Malformed(format!("job status: {e}")))?;
    Ok(JobStatus {
        state: job.state,
        invalid_rows: job.metrics.map_or(0, |m| m.invalid_rows),
        errors: job.errors.unwrap_or_default(),
    })
}

/// A whole job-report body (`{"data": ...}`), for checks that take arbitrary bytes.
pub fn job_status_from_body(body: &[u8]) -> Result<JobStatus, ApiError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ApiError::Malformed(format!("job status: {e}")))?;
    job_status(
        envelope
            .data
            .ok_or_else(|| ApiError::Malformed("job status without a data envelope".into()))?,
    )
}

/// `statusPath` is relative to the base URL, with or without its leading slash; an absolute URL
/// is taken as it is.
pub fn status_url(base: &str, status_path: &str) -> String {
    if status_path.starts_with("http://") || status_path.starts_with("https://") {
        return status_path.to_owned();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        status_path.trim_start_matches('/')
    )
}

fn transport(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        ApiError::Timeout
    } else {
        // reqwest's message names the URL, never the headers; the token stays out.
        ApiError::Connect(error.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::status_url;

    /// Issue 10, defect 8: `statusPath` joins the base with or without its leading slash.
    #[test]
    fn status_paths_join_the_base() {
        let base = "http://api/public/v1";
        for path in ["/records/p/jobs/j", "records/p/jobs/j"] {
            assert_eq!(
                status_url(base, path),
                "http://api/public/v1/records/p/jobs/j"
            );
            assert_eq!(
                status_url("http://api/public/v1/", path),
                "http://api/public/v1/records/p/jobs/j"
            );
        }
        assert_eq!(status_url(base, "https://other/j"), "https://other/j");
    }
}
