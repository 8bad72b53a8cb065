//! The emulator's in-memory state: rows per object, jobs, the idempotency store, rate-limit buckets,
//! faults and stats. One std `Mutex` guards it, and no code path holds it across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use super::config::EmulatorConfig;
use super::faults::{Class, Decision, Faults, FaultsPatch, JobOrder};
use super::schema::Schemas;
use super::validate::RowError;
use records_contract::quota::{Bucket, Limit};
use records_contract::{ErrorBody, JobMetrics, JobReport, ObjectSchema};

const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

pub type Record = Map<String, Value>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    UpsertBatch,
    AppendBatch,
    Upsert,
    Append,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::UpsertBatch => "upsert-batch",
            Operation::AppendBatch => "append-batch",
            Operation::Upsert => "upsert",
            Operation::Append => "append",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Operation::UpsertBatch | Operation::AppendBatch => Class::Batch,
            Operation::Upsert | Operation::Append => Class::Single,
        }
    }

    pub fn is_upsert(self) -> bool {
        matches!(self, Operation::UpsertBatch | Operation::Upsert)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

pub struct Job {
    id: String,
    object: String,
    operation: Operation,
    match_key: Option<String>,
    records: Arc<Vec<Record>>,
    accepted: usize,
    state: JobState,
    idempotency_key: Option<String>,
    created_at: OffsetDateTime,
    completed_at: Option<OffsetDateTime>,
    valid_rows: usize,
    invalid_rows: usize,
    errors: Option<Vec<RowError>>,
    /// The job store lost it (`job_lost`): it runs and commits, but polls answer 404.
    lost: bool,
    /// Its report takes odd shapes (`odd_reports`).
    odd: bool,
    /// Its place in creation order, for `job_order: created`.
    number: u64,
}

/// What a job needs to run once it leaves `queued`.
pub struct JobInput {
    pub object: String,
    pub match_key: Option<String>,
    pub records: Arc<Vec<Record>>,
}

/// A newly accepted batch: its job ID and its timeline.
pub struct NewJob {
    pub id: String,
    pub number: u64,
    pub generation: u64,
    pub queued: Duration,
    pub processing: Duration,
}

#[derive(Default)]
struct Table {
    rows: Vec<Record>,
    by_key: HashMap<String, usize>,
}

impl Table {
    fn append(&mut self, record: &Record) {
        self.rows.push(without_nulls(record));
    }

    /// Field-level merge into the row with the same match-key value: absent fields stay, `null` clears.
    fn upsert(&mut self, match_key: &str, record: &Record) {
        let key = record
            .get(match_key)
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.by_key.get(key) {
            Some(&index) => {
                let row = &mut self.rows[index];
                for (field, value) in record {
                    if value.is_null() {
                        row.remove(field);
                    } else {
                        row.insert(field.clone(), value.clone());
                    }
                }
            }
            None => {
                self.by_key.insert(key.to_owned(), self.rows.len());
                self.rows.push(without_nulls(record));
            }
        }
    }
}

fn without_nulls(record: &Record) -> Record {
    record
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect()
}

enum Idempotency {
    InProgress {
        fingerprint: [u8; 16],
    },
    Done {
        fingerprint: [u8; 16],
        status: StatusCode,
        body: Bytes,
        correlation: String,
        at: Instant,
    },
}

/// The outcome of claiming an idempotency key.
pub enum Claim {
    Fresh,
    Replay {
        status: StatusCode,
        body: Bytes,
        correlation: String,
    },
    InProgress,
    Reused,
}

#[derive(Default)]
struct Stats {
    requests: BTreeMap<String, BTreeMap<u16, u64>>,
    batches: u64,
    records_accepted: u64,
    single_writes: u64,
    rows_committed: u64,
    invalid_rows: u64,
    replays: u64,
    jobs_completed: u64,
    jobs_failed: u64,
    rate_limited: u64,
    overloaded: u64,
    max_in_progress: usize,
    injected: u64,
}

struct Inner {
    faults: Faults,
    rng: StdRng,
    /// Per class: the limits the buckets were built for, and the buckets.
    buckets: HashMap<Class, (Vec<Limit>, Vec<Bucket>)>,
    idempotency: HashMap<String, Idempotency>,
    jobs: HashMap<String, Job>,
    job_order: Vec<String>,
    tables: HashMap<String, Table>,
    stats: Stats,
    generation: u64,
    next_job: u64,
    /// Jobs numbered below this have all finished (`job_order: created`).
    finished_below: u64,
    finished_out_of_turn: std::collections::BTreeSet<u64>,
    /// Bodies whose job already failed once (`job_fail_once`).
    failed_once: std::collections::HashSet<u64>,
    log: VecDeque<LoggedRequest>,
}

/// How many requests `/__emu/requests` remembers.
const REQUEST_LOG_LEN: usize = 20_000;

/// One request as `/__emu/requests` shows it.
pub struct LoggedRequest {
    pub at: OffsetDateTime,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub idempotency_key: Option<String>,
}

impl LoggedRequest {
    fn view(&self) -> Value {
        json!({
            "at": now_rfc3339(self.at),
            "atMs": (self.at.unix_timestamp_nanos() / 1_000_000) as i64,
            "route": self.route,
            "path": self.path,
            "status": self.status,
            "idempotencyKey": self.idempotency_key,
        })
    }
}

/// A write in progress, counted for `--concurrency` until dropped.
pub struct InProgress(Arc<Emulator>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The API's own bucket for a limit: the stated burst, or one second of traffic (at least one).
fn api_bucket(limit: &Limit, now: Instant) -> Bucket {
    let burst = limit
        .burst
        .unwrap_or_else(|| limit.per_second().ceil().clamp(1.0, 1e6) as u32);
    Bucket::new(limit.per_second(), burst, now)
}

pub struct Emulator {
    pub config: EmulatorConfig,
    in_progress: AtomicUsize,
    /// The start-up schemas, which `/__emu/reset` restores.
    initial_schemas: Schemas,
    /// The live schemas: `/__emu/schemas` replaces them, as a migration on the real API would.
    schemas: RwLock<Schemas>,
    /// Cancelled at shutdown: ends hangs, latency sleeps and job timelines.
    pub shutdown: CancellationToken,
    /// Woken whenever a job finishes, for `job_order: created`.
    finished: tokio::sync::Notify,
    inner: Mutex<Inner>,
}

fn now_rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

impl Emulator {
    pub fn new(config: EmulatorConfig, schemas: Schemas) -> Self {
        let inner = Inner::new(&config);
        Self {
            config,
            initial_schemas: schemas.clone(),
            schemas: RwLock::new(schemas),
            shutdown: CancellationToken::new(),
            in_progress: AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than losing the emulator, so a poisoned lock is simply taken over.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record_request(&self, request: LoggedRequest) {
        let mut inner = self.lock();
        let (route, status) = (request.route.clone(), request.status);
        if inner.log.len() == REQUEST_LOG_LEN {
            inner.log.pop_front();
        }
        inner.log.push_back(request);
        *inner
            .stats
            .requests
            .entry(route)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// Takes a token of every limit of the class, or returns the `Retry-After` seconds.
    pub fn take_token(&self, class: Class) -> Result<(), u64> {
        let mut inner = self.lock();
        let limits = inner.faults.limits_for(class).to_vec();
        if limits.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let (built_for, buckets) = inner
            .buckets
            .entry(class)
            .or_insert_with(|| (Vec::new(), Vec::new()));
        if *built_for != limits {
            *buckets = limits.iter().map(|limit| api_bucket(limit, now)).collect();
            *built_for = limits;
        }
        if !buckets.iter_mut().all(|b| b.has_token(now)) {
            let ready = buckets
                .iter_mut()
                .map(|b| b.ready_at(now))
                .max()
                .unwrap_or(now);
            inner.stats.rate_limited += 1;
            return Err((ready - now).as_secs_f64().ceil().max(1.0) as u64);
        }
        for bucket in buckets.iter_mut() {
            bucket.take(now);
        }
        Ok(())
    }

    /// Enters a write, or `None` (answer 503) when `concurrency` writes are already in progress.
    pub fn enter_write(self: &Arc<Self>) -> Option<InProgress> {
        let mut inner = self.lock();
        if let Some(limit) = inner.faults.concurrency
            && self.in_progress.load(Ordering::SeqCst) >= limit
        {
            inner.stats.overloaded += 1;
            return None;
        }
        let now = self.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
        inner.stats.max_in_progress = inner.stats.max_in_progress.max(now);
        Some(InProgress(self.clone()))
    }

    /// The added time a batch write of `records` takes.
    pub fn latency_for(&self, records: usize) -> Duration {
        let per_record = self.lock().faults.latency_per_record_us;
        Duration::from_micros(per_record) * u32::try_from(records).unwrap_or(u32::MAX)
    }

    /// The fault this request gets, its added latency, and the `Retry-After` for injected 429s.
    pub fn decide(&self, class: Class) -> (Decision, Duration, u64) {
        let mut inner = self.lock();
        let Inner { faults, rng, .. } = &mut *inner;
        let decision = faults.decide(class, rng);
        let latency = faults.latency(class);
        let retry_after = faults.retry_after_s.unwrap_or(1);
        if decision != Decision::Pass {
            inner.stats.injected += 1;
        }
        (decision, latency, retry_after)
    }

    pub fn claim(&self, scope: &str, fingerprint: [u8; 16]) -> Claim {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.idempotency.get(scope) {
            Some(Idempotency::InProgress { fingerprint: held }) => {
                if *held == fingerprint {
                    Claim::InProgress
                } else {
                    Claim::Reused
                }
            }
            Some(Idempotency::Done {
                fingerprint: held,
                status,
                body,
                correlation,
                at,
            }) if now.duration_since(*at) < IDEMPOTENCY_TTL => {
                if *held != fingerprint {
                    return Claim::Reused;
                }
                let replay = Claim::Replay {
                    status: *status,
                    body: body.clone(),
                    correlation: correlation.clone(),
                };
                inner.stats.replays += 1;
                replay
            }
            _ => {
                inner
                    .idempotency
                    .insert(scope.to_owned(), Idempotency::InProgress { fingerprint });
                Claim::Fresh
            }
        }
    }

    /// Forgets an in-progress claim: only successful responses are stored.
    pub fn release(&self, scope: &str) {
        let mut inner = self.lock();
        if matches!(
            inner.idempotency.get(scope),
            Some(Idempotency::InProgress { .. })
        ) {
            inner.idempotency.remove(scope);
        }
    }

    pub fn store(&self, scope: &str, status: StatusCode, body: Bytes, correlation: String) {
        let mut inner = self.lock();
        let fingerprint = match inner.idempotency.get(scope) {
            Some(Idempotency::InProgress { fingerprint }) => *fingerprint,
            _ => return,
        };
        inner.idempotency.insert(
            scope.to_owned(),
            Idempotency::Done {
                fingerprint,
                status,
                body,
                correlation,
                at: Instant::now(),
            },
        );
    }

    /// Whether this job poll answers 404 although the job exists.
    pub fn roll_job_unknown(&self) -> bool {
        let mut inner = self.lock();
        let p = inner.faults.job_unknown;
        p > 0.0 && inner.rng.random_bool(p)
    }

    pub fn status_path_relative(&self) -> bool {
        self.lock().faults.status_path_relative
    }

    /// The origin an absolute `statusPath` names, when the hostile knob is set.
    pub fn status_path_origin(&self) -> Option<String> {
        self.lock().faults.hostile.status_path_origin.clone()
    }

    pub fn echo_credentials(&self) -> bool {
        self.lock().faults.hostile.echo_credentials
    }

    pub fn pad_errors_mib(&self) -> u64 {
        self.lock().faults.hostile.pad_errors_mib
    }

    /// How this job poll is answered: plainly, or with a due hostile answer.
    pub fn hostile_answer(&self) -> super::faults::HostileAnswer {
        self.lock().faults.hostile.next_answer()
    }

    /// Every job with its idempotency key, state and records, for checks that a record was
    /// committed under one key only.
    pub fn jobs_with_records(&self) -> Vec<Value> {
        let inner = self.lock();
        inner
            .job_order
            .iter()
            .filter_map(|id| inner.jobs.get(id))
            .map(|job| {
                json!({
                    "jobId": job.id,
                    "state": job.state.name(),
                    "idempotencyKey": job.idempotency_key,
                    "createdAtMs": (job.created_at.unix_timestamp_nanos() / 1_000_000) as i64,
                    "completedAtMs": job
                        .completed_at
                        .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64),
                    "records": job.records.as_ref(),
                })
            })
            .collect()
    }

    pub fn roll_commit_then_500(&self) -> bool {
        let mut inner = self.lock();
        let p = inner.faults.commit_then_500;
        p > 0.0 && inner.rng.random_bool(p)
    }

    pub fn create_job(
        &self,
        object: &str,
        operation: Operation,
        match_key: Option<String>,
        records: Vec<Record>,
        idempotency_key: Option<String>,
    ) -> NewJob {
        let mut inner = self.lock();
        inner.next_job += 1;
        let salt: u32 = inner.rng.random();
        let id = format!("rjob_{:08}{salt:08x}", inner.next_job);
        inner.stats.batches += 1;
        inner.stats.records_accepted += records.len() as u64;
        let job = Job {
            id: id.clone(),
            object: object.to_owned(),
            operation,
            match_key,
            accepted: records.len(),
            records: Arc::new(records),
            state: JobState::Queued,
            idempotency_key,
            created_at: OffsetDateTime::now_utc(),
            completed_at: None,
            valid_rows: 0,
            invalid_rows: 0,
            errors: Some(Vec::new()),
            lost: false,
            odd: false,
            number: 0,
        };
        let accepted = job.accepted;
        let roll = |inner: &mut Inner, p: f64| p > 0.0 && inner.rng.random_bool(p);
        let (lost, slow) = (inner.faults.job_lost, inner.faults.job_slow);
        let mut job = job;
        job.lost = roll(&mut inner, lost);
        job.odd = inner.faults.odd_reports;
        job.number = inner.next_job;
        let mut extra = Duration::ZERO;
        if roll(&mut inner, slow) {
            extra += Duration::from_millis(inner.faults.job_slow_ms);
        }
        if inner.faults.job_order == JobOrder::Random && inner.faults.job_jitter_ms > 0 {
            let jitter = inner.faults.job_jitter_ms;
            extra += Duration::from_millis(inner.rng.random_range(0..=jitter));
        }
        inner.jobs.insert(id.clone(), job);
        inner.job_order.push(id.clone());
        NewJob {
            id,
            number: inner.next_job,
            generation: inner.generation,
            queued: Duration::from_millis(inner.faults.queued_ms),
            processing: Duration::from_millis(inner.faults.processing_ms)
                + Duration::from_micros(inner.faults.processing_per_record_us)
                    * u32::try_from(accepted).unwrap_or(u32::MAX)
                + extra,
        }
    }

    /// Moves a queued job to `processing`; false when a reset has since dropped it.
    pub fn start_job(&self, id: &str, generation: u64) -> Option<JobInput> {
        let mut inner = self.lock();
        if inner.generation != generation {
            return None;
        }
        let job = inner.jobs.get_mut(id)?;
        job.state = JobState::Processing;
        Some(JobInput {
            object: job.object.clone(),
            match_key: job.match_key.clone(),
            records: job.records.clone(),
        })
    }

    /// Ends a job with the row outcomes computed outside the lock, committing the valid rows.
    pub fn finish_job(&self, id: &str, generation: u64, outcomes: Vec<Result<(), RowError>>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let failed = if inner.faults.job_fail_next > 0 {
            inner.faults.job_fail_next -= 1;
            true
        } else {
            let p = inner.faults.job_fail;
            p > 0.0 && inner.rng.random_bool(p)
        };
        let failed = failed || self.fails_once(&mut inner, id);
        let errors_limit = inner.faults.errors_limit;
        let Inner {
            jobs,
            tables,
            stats,
            ..
        } = &mut *inner;
        let Some(job) = jobs.get_mut(id) else { return };
        job.completed_at = Some(OffsetDateTime::now_utc());
        // A finished job needs its records no longer; dropping them keeps long benchmarks lean.
        let records = if self.config.keep_job_records {
            job.records.clone()
        } else {
            std::mem::take(&mut job.records)
        };
        if failed {
            job.state = JobState::Failed;
            stats.jobs_failed += 1;
            return;
        }
        let table = tables.entry(job.object.clone()).or_default();
        let mut errors = Vec::new();
        for (record, outcome) in records.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    match &job.match_key {
                        Some(key) => table.upsert(key, record),
                        None => table.append(record),
                    }
                    job.valid_rows += 1;
                }
                Err(error) => {
                    job.invalid_rows += 1;
                    errors.push(error);
                }
            }
        }
        stats.rows_committed += job.valid_rows as u64;
        stats.invalid_rows += job.invalid_rows as u64;
        stats.jobs_completed += 1;
        job.errors = match errors_limit {
            Some(0) => None,
            Some(limit) => Some(errors.into_iter().take(limit).collect()),
            None => Some(errors),
        };
        job.state = JobState::Completed;
    }

    /// `job_fail_once`: whether this job fails, at most once per body.
    fn fails_once(&self, inner: &mut Inner, id: &str) -> bool {
        let p = inner.faults.job_fail_once;
        if p <= 0.0 || !inner.rng.random_bool(p) {
            return false;
        }
        let Some(job) = inner.jobs.get(id) else {
            return false;
        };
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&*job.records)
            .unwrap_or_default()
            .hash(&mut hasher);
        job.match_key.hash(&mut hasher);
        inner.failed_once.insert(hasher.finish())
    }

    /// `job_order: created`: waits until every job created before job `number` has finished.
    /// Other orders return at once.
    pub async fn turn_to_finish(&self, number: u64, generation: u64) {
        loop {
            let notified = self.finished.notified();
            {
                let inner = self.lock();
                if inner.faults.job_order != JobOrder::Created
                    || inner.generation != generation
                    || inner.finished_below >= number
                {
                    return;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = self.shutdown.cancelled() => return,
                // A job dropped by a reset never finishes: look again now and then.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Job `number` has finished (or given up): later ones may finish now.
    pub fn finished_turn(&self, number: u64, generation: u64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.generation != generation {
            return;
        }
        inner.finished_out_of_turn.insert(number);
        while inner.finished_out_of_turn.remove(&inner.finished_below) {
            inner.finished_below += 1;
        }
        drop(guard);
        self.finished.notify_waiters();
    }

    pub fn job_view(&self, object: &str, id: &str) -> Option<Value> {
        let inner = self.lock();
        let job = inner
            .jobs
            .get(id)
            .filter(|job| job.object == object && !job.lost)?;
        Some(job.view())
    }

    pub fn write_single(&self, object: &str, match_key: Option<&str>, record: &Record) {
        let mut inner = self.lock();
        let table = inner.tables.entry(object.to_owned()).or_default();
        match match_key {
            Some(key) => table.upsert(key, record),
            None => table.append(record),
        }
        inner.stats.single_writes += 1;
        inner.stats.rows_committed += 1;
    }

    /// The live schema of an object.
    pub fn schema(&self, object: &str) -> Option<ObjectSchema> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.get(object).cloned()
    }

    pub fn set_schemas(&self, schemas: Schemas) {
        *self.schemas.write().unwrap_or_else(|p| p.into_inner()) = schemas;
    }

    /// The most recent requests, oldest first, for tests that check keys and timing.
    pub fn request_log(&self) -> Vec<Value> {
        self.lock().log.iter().map(LoggedRequest::view).collect()
    }

    pub fn rows(&self, object: &str) -> Vec<Record> {
        let inner = self.lock();
        inner
            .tables
            .get(object)
            .map(|table| table.rows.clone())
            .unwrap_or_default()
    }

    pub fn jobs(&self) -> Vec<Value> {
        let inner = self.lock();
        inner
            .job_order
            .iter()
            .filter_map(|id| inner.jobs.get(id))
            .map(Job::view)
            .collect()
    }

    pub fn stats(&self) -> Value {
        let inner = self.lock();
        let s = &inner.stats;
        let mut jobs_by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for job in inner.jobs.values() {
            *jobs_by_state.entry(job.state.name()).or_default() += 1;
        }
        json!({
            "requests": s.requests,
            "batches": s.batches,
            "records_accepted": s.records_accepted,
            "single_writes": s.single_writes,
            "rows_committed": s.rows_committed,
            "invalid_rows": s.invalid_rows,
            "replays": s.replays,
            "jobs_completed": s.jobs_completed,
            "jobs_failed": s.jobs_failed,
            "jobs_by_state": jobs_by_state,
            "rate_limited": s.rate_limited,
            "overloaded": s.overloaded,
            "max_in_progress": s.max_in_progress,
            "injected_faults": s.injected,
        })
    }

    pub fn faults(&self) -> Value {
        serde_json::to_value(&self.lock().faults).unwrap_or(Value::Null)
    }

    pub fn apply_faults(&self, patch: FaultsPatch) -> Result<(), String> {
        self.lock().faults.apply(patch, self.config.time_scale)
    }

    /// Back to the start-up configuration: faults as the flags set them, and no jobs, keys or rows.
    pub fn reset(&self) {
        self.set_schemas(self.initial_schemas.clone());
        let mut inner = self.lock();
        let generation = inner.generation + 1;
        *inner = Inner::new(&self.config);
        inner.generation = generation;
    }
}

impl Inner {
    fn new(config: &EmulatorConfig) -> Self {
        Self {
            faults: Faults::from_config(config),
            rng: StdRng::seed_from_u64(config.seed),
            buckets: HashMap::new(),
            idempotency: HashMap::new(),
            jobs: HashMap::new(),
            job_order: Vec::new(),
            tables: HashMap::new(),
            stats: Stats::default(),
            generation: 0,
            next_job: 0,
            finished_below: 1,
            finished_out_of_turn: Default::default(),
            failed_once: Default::default(),
            log: VecDeque::new(),
        }
    }
}

impl Job {
    fn view(&self) -> Value {
        let report = JobReport {
            state: self.state.name().to_owned(),
            job_id: Some(self.id.clone()),
            object_name: Some(self.object.clone()),
            operation: Some(self.operation.name().to_owned()),
            accepted_records: Some(self.accepted as u64),
            metrics: Some(JobMetrics {
                total_rows: Some(self.accepted as u64),
                valid_rows: Some(self.valid_rows as u64),
                invalid_rows: Some(self.invalid_rows as u64),
            }),
            created_at: Some(now_rfc3339(self.created_at)),
            completed_at: self.completed_at.map(now_rfc3339),
            idempotency_key: self.idempotency_key.clone(),
            errors: self.errors.as_ref().map(|errors| {
                errors
                    .iter()
                    .map(|error| serde_json::to_value(error).unwrap_or_default())
                    .collect()
            }),
            error: (self.state == JobState::Failed).then(|| ErrorBody {
                code: Some("CDP_ETL.INTERNAL.JOB_FAILED".to_owned()),
                message: Some("the job failed; no row was committed".to_owned()),
                details: None,
            }),
        };
        let mut data = serde_json::to_value(report).unwrap_or_default();
        if self.odd {
            data["state"] = json!(self.state.name().to_ascii_uppercase());
            data["runner"] = json!({"shard": 3, "notes": null});
            if let Some(Value::Array(entries)) = data.get_mut("errors")
                && !entries.is_empty()
            {
                for entry in entries.iter_mut() {
                    entry["code"] = json!(422);
                    entry["detail"] = json!({"hint": "see the schema"});
                }
                entries.push(json!({"index": -1, "message": "summary of the rows above"}));
            }
        }
        data
    }
}
