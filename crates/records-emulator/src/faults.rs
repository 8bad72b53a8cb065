//! Seeded fault injection: what `--fault`-style flags and `POST /__emu/faults` set, and the pure
//! decision of which fault (if any) a request gets.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::config::EmulatorConfig;
use records_contract::quota::{FASTEST_PER_S, Limit, SLOWEST_PER_S, parse_limits};

/// The endpoint classes that rate limits count and faults apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Single,
    Batch,
    Jobs,
    Metadata,
}

/// A scripted fault: the next `count` requests get `status`, or a connection `reset`, or a `hang`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scripted {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub fault: Option<Kind>,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Reset,
    Hang,
}

/// When jobs finish relative to each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOrder {
    /// Each job on its own timeline, as a parallel job runner would.
    #[default]
    Concurrent,
    /// Strictly in the order they were created, as a single-queue job runner would: a stale job
    /// created late commits late, where a worker's bug shows.
    Created,
    /// Each job's processing gets a random extra of up to `job_jitter_ms`, so that they finish
    /// in an order unrelated to their creation.
    Random,
}

/// The fault settings in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faults {
    pub statuses: BTreeMap<u16, f64>,
    pub retry_after_s: Option<u64>,
    pub latency_ms: u64,
    pub commit_then_500: f64,
    pub job_fail: f64,
    /// The next this many jobs to finish fail, before `job_fail` is rolled.
    pub job_fail_next: u32,
    /// Probability that a job poll answers 404 although the job exists (a lagging job store).
    pub job_unknown: f64,
    /// Give `statusPath` without its leading slash; the contract says it is relative.
    pub status_path_relative: bool,
    pub next: VecDeque<Scripted>,
    /// Write limits (single and batch writes), already time-scaled.
    pub quota: Vec<Limit>,
    pub job_quota: Vec<Limit>,
    /// Writes in progress at which the next one is answered 503.
    pub concurrency: Option<usize>,
    pub latency_per_record_us: u64,
    pub processing_per_record_us: u64,
    pub reset: f64,
    pub hang: f64,
    pub hang_ms: u64,
    /// At most this many entries in a job's `errors`; 0 leaves the field out. None: all of them.
    pub errors_limit: Option<usize>,
    pub queued_ms: u64,
    pub processing_ms: u64,
    pub apply_to: Vec<Class>,
    pub job_order: JobOrder,
    pub job_jitter_ms: u64,
    /// Probability that a job fails, once per body: a resend of the same records does not fail.
    pub job_fail_once: f64,
    /// Probability that a job takes `job_slow_ms` more (one slower than the worker's timeout).
    pub job_slow: f64,
    pub job_slow_ms: u64,
    /// Probability that the job store loses a job: it still commits, but every poll answers 404.
    pub job_lost: f64,
    /// Job reports in odd but readable shapes: upper-case state, numeric error codes, an extra
    /// `errors` entry with index -1 beside real ones, unknown fields.
    pub odd_reports: bool,
    /// Hostile answers (issue 20): a peer that wants the token, the memory or a socket.
    pub hostile: Hostile,
}

/// Answers a hostile or broken API gives. Each `*_next` counts down one per job poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostile {
    /// `statusPath` is this origin plus the job's path: an absolute URL on another host.
    #[serde(default)]
    pub status_path_origin: Option<String>,
    /// The next `redirect_next` job polls answer 307 to this origin plus the same path.
    #[serde(default)]
    pub redirect_to: Option<String>,
    #[serde(default)]
    pub redirect_next: u32,
    /// The next `big_next` job reports carry `big_mib` MiB of JSON whitespace before their data.
    #[serde(default)]
    pub big_mib: u64,
    #[serde(default)]
    pub big_next: u32,
    /// The next `drip_next` job reports are sent one byte every `drip_ms` (1000 when 0).
    #[serde(default)]
    pub drip_next: u32,
    #[serde(default)]
    pub drip_ms: u64,
    /// Every error message, and every job report's `errors[].message`, repeats the
    /// `Authorization` header it was shown, as a careless gateway does.
    #[serde(default)]
    pub echo_credentials: bool,
    /// Every error answer on the API routes (status 400 and up) starts with this many MiB of
    /// JSON whitespace: a refusal whose body is over any ceiling.
    #[serde(default)]
    pub pad_errors_mib: u64,
}

/// How one job poll is answered beside its report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostileAnswer {
    Plain,
    Redirect(String),
    Big(u64),
    Drip(Duration),
}

impl Hostile {
    /// Takes this poll's hostile answer, if one is due.
    pub fn next_answer(&mut self) -> HostileAnswer {
        if let Some(to) = self.redirect_to.clone().filter(|_| self.redirect_next > 0) {
            self.redirect_next -= 1;
            return HostileAnswer::Redirect(to);
        }
        if self.big_next > 0 {
            self.big_next -= 1;
            return HostileAnswer::Big(self.big_mib);
        }
        if self.drip_next > 0 {
            self.drip_next -= 1;
            let ms = if self.drip_ms == 0 {
                1000
            } else {
                self.drip_ms
            };
            return HostileAnswer::Drip(Duration::from_millis(ms));
        }
        HostileAnswer::Plain
    }
}

/// The body of `POST /__emu/faults`: every key is optional and replaces only that setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    statuses: Option<BTreeMap<u16, f64>>,
    retry_after_s: Option<Option<u64>>,
    latency_ms: Option<u64>,
    commit_then_500: Option<f64>,
    job_fail: Option<f64>,
    job_fail_next: Option<u32>,
    job_unknown: Option<f64>,
    status_path_relative: Option<bool>,
    next: Option<Vec<Scripted>>,
    /// The old single-rate knob: `2` is `2/s`; `null` removes the write limits.
    rate_limit_per_s: Option<Option<f64>>,
    job_rate_limit_per_s: Option<Option<f64>>,
    /// Write limits in the flag's syntax, e.g. `"6/min,2000/day:5"` (not time-scaled).
    quota: Option<String>,
    concurrency: Option<Option<usize>>,
    latency_per_record_us: Option<u64>,
    processing_per_record_us: Option<u64>,
    reset: Option<f64>,
    hang: Option<f64>,
    hang_ms: Option<u64>,
    errors_limit: Option<Option<usize>>,
    queued_ms: Option<u64>,
    processing_ms: Option<u64>,
    apply_to: Option<Vec<Class>>,
    job_order: Option<JobOrder>,
    job_jitter_ms: Option<u64>,
    job_fail_once: Option<f64>,
    job_slow: Option<f64>,
    job_slow_ms: Option<u64>,
    job_lost: Option<f64>,
    odd_reports: Option<bool>,
    hostile: Option<Hostile>,
}

fn scaled(limits: &[Limit], factor: f64) -> Vec<Limit> {
    limits.iter().map(|limit| limit.scaled(factor)).collect()
}

/// What one request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Status(u16),
    Reset,
    Hang(Duration),
}

impl Faults {
    pub fn from_config(config: &EmulatorConfig) -> Self {
        Self {
            statuses: config.faults.iter().copied().collect(),
            retry_after_s: config.retry_after,
            latency_ms: config.latency.map_or(0, |d| d.as_millis() as u64),
            commit_then_500: config.commit_then_500,
            job_fail: config.job_fail,
            job_fail_next: 0,
            job_unknown: 0.0,
            status_path_relative: false,
            next: VecDeque::new(),
            quota: scaled(&config.rate_limit.0, config.time_scale),
            job_quota: scaled(&config.job_rate_limit.0, config.time_scale),
            concurrency: config.concurrency,
            latency_per_record_us: config
                .latency_per_record
                .map_or(0, |d| d.as_micros() as u64),
            processing_per_record_us: config
                .processing_per_record
                .map_or(0, |d| d.as_micros() as u64),
            reset: 0.0,
            hang: 0.0,
            hang_ms: 30_000,
            errors_limit: None,
            queued_ms: config.queued.as_millis() as u64,
            processing_ms: config.processing.as_millis() as u64,
            apply_to: vec![Class::Single, Class::Batch],
            job_order: JobOrder::Concurrent,
            job_jitter_ms: 1000,
            job_fail_once: 0.0,
            job_slow: 0.0,
            job_slow_ms: 0,
            job_lost: 0.0,
            odd_reports: false,
            hostile: Hostile::default(),
        }
    }

    pub fn apply(&mut self, patch: FaultsPatch, time_scale: f64) -> Result<(), String> {
        check(&patch)?;
        // Parsed before anything changes, so that a bad patch changes nothing.
        let quota = patch.quota.as_deref().map(parse_limits).transpose()?;
        let per_second = |rate: Option<f64>| {
            rate.map_or_else(Vec::new, |calls| {
                vec![Limit {
                    calls,
                    period: Duration::from_secs(1),
                    burst: None,
                }]
            })
        };
        if let Some(rate) = patch.rate_limit_per_s {
            self.quota = per_second(rate);
        }
        if let Some(rate) = patch.job_rate_limit_per_s {
            self.job_quota = per_second(rate);
        }
        if let Some(quota) = quota {
            self.quota = scaled(&quota, time_scale);
        }
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(value) = patch.$field { self.$field = value.into(); })* };
        }
        set!(
            statuses,
            retry_after_s,
            latency_ms,
            commit_then_500,
            job_fail,
            job_fail_next,
            job_unknown,
            status_path_relative,
            next,
            concurrency,
            latency_per_record_us,
            processing_per_record_us,
            reset,
            hang,
            hang_ms,
            errors_limit,
            queued_ms,
            processing_ms,
            apply_to,
            job_order,
            job_jitter_ms,
            job_fail_once,
            job_slow,
            job_slow_ms,
            job_lost,
            odd_reports,
            hostile
        );
        Ok(())
    }

    /// Scripted faults first, in order; then the probabilities, rolled from the seeded generator.
    pub fn decide(&mut self, class: Class, rng: &mut StdRng) -> Decision {
        if !self.apply_to.contains(&class) {
            return Decision::Pass;
        }
        if let Some(front) = self.next.front_mut() {
            let decision = match (front.fault, front.status) {
                (Some(Kind::Reset), _) => Decision::Reset,
                (Some(Kind::Hang), _) => Decision::Hang(Duration::from_millis(self.hang_ms)),
                (None, Some(status)) => Decision::Status(status),
                (None, None) => Decision::Pass,
            };
            front.count = front.count.saturating_sub(1);
            if front.count == 0 {
                self.next.pop_front();
            }
            return decision;
        }
        if self.reset > 0.0 && rng.random_bool(self.reset) {
            return Decision::Reset;
        }
        if self.hang > 0.0 && rng.random_bool(self.hang) {
            return Decision::Hang(Duration::from_millis(self.hang_ms));
        }
        for (&status, &probability) in &self.statuses {
            if probability > 0.0 && rng.random_bool(probability) {
                return Decision::Status(status);
            }
        }
        Decision::Pass
    }

    pub fn latency(&self, class: Class) -> Duration {
        if self.apply_to.contains(&class) {
            Duration::from_millis(self.latency_ms)
        } else {
            Duration::ZERO
        }
    }

    pub fn limits_for(&self, class: Class) -> &[Limit] {
        match class {
            Class::Single | Class::Batch => &self.quota,
            Class::Jobs => &self.job_quota,
            Class::Metadata => &[],
        }
    }
}

/// A patch's values within their ranges: probabilities, error statuses, rates, concurrency.
fn check(patch: &FaultsPatch) -> Result<(), String> {
    let probabilities = patch
        .statuses
        .iter()
        .flat_map(|s| s.values())
        .chain(&patch.commit_then_500)
        .chain(&patch.job_fail)
        .chain(&patch.job_unknown)
        .chain(&patch.reset)
        .chain(&patch.hang)
        .chain(&patch.job_fail_once)
        .chain(&patch.job_slow)
        .chain(&patch.job_lost);
    if let Some(p) = probabilities
        .into_iter()
        .find(|p| !(0.0..=1.0).contains(*p))
    {
        return Err(format!("probability {p} is outside 0..=1"));
    }
    if let Some(status) = patch
        .statuses
        .iter()
        .flat_map(|s| s.keys())
        .chain(
            patch
                .next
                .iter()
                .flatten()
                .filter_map(|s| s.status.as_ref()),
        )
        .find(|s| !(400..=599).contains(*s))
    {
        return Err(format!(
            "status {status} is not an HTTP error status (400-599)"
        ));
    }
    let rates = [patch.rate_limit_per_s, patch.job_rate_limit_per_s];
    if rates
        .iter()
        .flatten()
        .flatten()
        .any(|r| !(SLOWEST_PER_S..=FASTEST_PER_S).contains(r))
    {
        return Err("rate limits must be from 1 a week to 1000000 a second".into());
    }
    if patch.concurrency == Some(Some(0)) {
        return Err("concurrency must be at least 1 (or null for none)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn faults() -> Faults {
        Faults::from_config(&EmulatorConfig::for_tests("t"))
    }

    #[test]
    fn scripted_faults_run_in_order_then_pass() {
        let mut f = faults();
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"next":[{"status":503,"count":2},{"fault":"reset"}]}"#)
                .unwrap();
        f.apply(patch, 1.0).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(f.decide(Class::Jobs, &mut rng), Decision::Pass);
        assert_eq!(f.decide(Class::Batch, &mut rng), Decision::Status(503));
        assert_eq!(f.decide(Class::Batch, &mut rng), Decision::Status(503));
        assert_eq!(f.decide(Class::Batch, &mut rng), Decision::Reset);
        assert_eq!(f.decide(Class::Batch, &mut rng), Decision::Pass);
    }

    #[test]
    fn patches_are_checked() {
        let mut f = faults();
        let bad: FaultsPatch = serde_json::from_str(r#"{"statuses":{"503":1.5}}"#).unwrap();
        assert!(f.apply(bad, 1.0).is_err());
        let bad: FaultsPatch = serde_json::from_str(r#"{"statuses":{"200":0.5}}"#).unwrap();
        assert!(f.apply(bad, 1.0).is_err());
        assert!(serde_json::from_str::<FaultsPatch>(r#"{"nonsense":1}"#).is_err());
    }

    #[test]
    fn same_seed_same_faults() {
        let roll = || {
            let mut f = faults();
            f.statuses.insert(503, 0.5);
            let mut rng = StdRng::seed_from_u64(7);
            (0..50)
                .map(|_| f.decide(Class::Batch, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(roll(), roll());
    }
}
