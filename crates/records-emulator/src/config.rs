//! The emulator's command line and environment (docs/emulator.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use records_contract::quota::{Quota, parse_quota};
use records_contract::units::parse_duration;

/// A local, in-memory Records API with seeded fault injection.
#[derive(Clone, Debug, Parser)]
#[command(name = "records-emulator", version)]
pub struct EmulatorConfig {
    /// Address to serve on; port 0 picks a free one (the chosen address is logged).
    #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Bearer token the API accepts.
    #[arg(long, env = "EMULATOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// A second token that authenticates but lacks write scope (answers 403 on writes).
    #[arg(long, env = "EMULATOR_FORBIDDEN_TOKEN", hide_env_values = true)]
    pub forbidden_token: Option<String>,
    /// JSON file with object schemas, in the shape of the metadata endpoint's `data` (an array).
    #[arg(long, env = "EMULATOR_SCHEMAS")]
    pub schemas: Option<PathBuf>,
    /// Seed for every random fault, so a run can be repeated.
    #[arg(long, env = "EMULATOR_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Time a job spends in `queued`.
    #[arg(long, env = "EMULATOR_QUEUED", default_value = "50ms", value_parser = parse_duration)]
    pub queued: Duration,
    /// Time a job spends in `processing`.
    #[arg(long, env = "EMULATOR_PROCESSING", default_value = "200ms", value_parser = parse_duration)]
    pub processing: Duration,
    /// Token-bucket limits per write class (single writes, batch writes), one or several, in the
    /// worker's syntax: `2/s`, `100/min`, `100/min,2000/day`, `6/min:3` (burst 3). A limit without
    /// `:BURST` holds one second of traffic, at least one request.
    #[arg(long, env = "EMULATOR_RATE_LIMIT", value_parser = parse_quota, default_value = "none")]
    pub rate_limit: Quota,
    /// Token-bucket limits for job reads.
    #[arg(long, env = "EMULATOR_JOB_RATE_LIMIT", value_parser = parse_quota, default_value = "none")]
    pub job_rate_limit: Quota,
    /// Runs every quota period this many times faster: with 96, `2000/day` refills in 15 minutes.
    #[arg(long, env = "EMULATOR_TIME_SCALE", default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
    /// Answers 503 to a write while this many writes are already in progress (an API with
    /// reserved concurrency).
    #[arg(long, env = "EMULATOR_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Time a batch write takes per record, on top of --latency (answers slow down with size).
    #[arg(long, env = "EMULATOR_LATENCY_PER_RECORD", value_parser = parse_duration)]
    pub latency_per_record: Option<Duration>,
    /// Time a job spends in `processing` per record, on top of --processing.
    #[arg(long, env = "EMULATOR_PROCESSING_PER_RECORD", value_parser = parse_duration)]
    pub processing_per_record: Option<Duration>,
    /// Probability of an injected status on writes, `STATUS=P`; repeatable (`--fault 503=0.1`).
    #[arg(long = "fault", env = "EMULATOR_FAULTS", value_delimiter = ',', value_parser = parse_fault)]
    pub faults: Vec<(u16, f64)>,
    /// `Retry-After` seconds on injected 429s (rate-limit 429s compute their own).
    #[arg(long, env = "EMULATOR_RETRY_AFTER")]
    pub retry_after: Option<u64>,
    /// Extra latency added to every faulted-class request.
    #[arg(long, env = "EMULATOR_LATENCY", value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// Probability that a batch is committed and then answered with a 500.
    #[arg(long, env = "EMULATOR_COMMIT_THEN_500", default_value_t = 0.0, value_parser = parse_probability)]
    pub commit_then_500: f64,
    /// Keep a finished job's records for `GET /__emu/jobs/records` (latency benchmarks); by
    /// default they are dropped when the job ends, so long runs stay lean.
    #[arg(long, env = "EMULATOR_KEEP_JOB_RECORDS")]
    pub keep_job_records: bool,
    /// Probability that a job ends `failed`, committing nothing.
    #[arg(long, env = "EMULATOR_JOB_FAIL", default_value_t = 0.0, value_parser = parse_probability)]
    pub job_fail: f64,
}

fn parse_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.001..=1e6).contains(&f) => Ok(f),
        _ => Err(format!(
            "'{text}' is not a time scale from 0.001 to 1000000"
        )),
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{text}' is not a probability between 0 and 1")),
    }
}

fn parse_fault(text: &str) -> Result<(u16, f64), String> {
    let (status, probability) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not STATUS=PROBABILITY, e.g. 503=0.1"))?;
    let status: u16 = status
        .trim()
        .parse()
        .ok()
        .filter(|s| (400..=599).contains(s))
        .ok_or_else(|| format!("'{status}' is not an HTTP error status (400-599)"))?;
    Ok((status, parse_probability(probability)?))
}

impl EmulatorConfig {
    /// A config for tests and benchmarks: no faults, fast jobs.
    pub fn for_tests(token: &str) -> Self {
        Self::with_flags(token, &["--queued", "10ms", "--processing", "20ms"])
    }

    /// A config on a free loopback port with `token` and any other `flags`, as the binary would
    /// parse them.
    pub fn with_flags(token: &str, flags: &[&str]) -> Self {
        let base = [
            "records-emulator",
            "--listen",
            "127.0.0.1:0",
            "--token",
            token,
        ];
        Self::parse_from(base.iter().chain(flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(parse_fault("503=0.1"), Ok((503, 0.1)));
        assert!(parse_fault("200=0.1").is_err());
        assert!(parse_fault("503=2").is_err());
        assert!(parse_fault("503").is_err());
    }
}
