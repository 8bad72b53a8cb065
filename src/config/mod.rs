//! Settings for `sqs-batch-worker run`: precedence (flag, then environment, then TOML file, then
//! default) and validation. Every error names the setting in all three spellings and the fix.

pub mod cli;
mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::contract::{MAX_BATCH_RECORDS, MAX_BODY_BYTES};

/// The largest `--max-held-bytes`: what one semaphore acquisition can count.
const MAX_HELD_BYTES: usize = u32::MAX as usize;
use crate::quota::{Limit, parse_limits};
use crate::secret::ApiToken;
use crate::units::{parse_duration, parse_size};
use cli::RunArgs;
use file::{FileSettings, scalar};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting} is required. Fix: {fix}")]
    Missing { setting: String, fix: &'static str },
    #[error("{setting} = {value:?} is not valid: {problem}. Fix: {fix}")]
    Invalid {
        setting: String,
        value: String,
        problem: String,
        fix: String,
    },
    #[error("--config {path}: {problem}. Fix: correct the file (keys are the flag names with '_')")]
    File { path: String, problem: String },
    #[error(
        "--api-token-file {path}: {problem}. Fix: point it at a readable file holding the token"
    )]
    TokenFile { path: String, problem: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Upsert,
    Append,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert-batch",
            Operation::Append => "append-batch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOn {
    Accepted,
    Completed,
}

/// How many batches may be in flight: adaptive (AIMD, at most `--max-in-flight`) or fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    Adaptive,
    Fixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub queue_url: String,
    pub dlq_url: String,
    pub api_url: String,
    pub api_token: ApiToken,
    pub object: String,
    pub operation: Operation,
    pub match_key: String,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub pollers: usize,
    /// Threads of the tokio runtime the binary builds for `run`.
    pub worker_threads: usize,
    pub max_in_flight: usize,
    /// Every limit a batch call spends a token of; empty is no limit.
    pub rate_limit: Vec<Limit>,
    pub concurrency: Concurrency,
    pub state_dir: Option<PathBuf>,
    pub budget_queue: Option<String>,
    pub ack_on: AckOn,
    pub job_timeout: Duration,
    pub visibility_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub request_timeout: Duration,
    pub retry_attempts: usize,
    pub auth_retry: Duration,
    pub max_held_bytes: usize,
    pub release_backoff: Duration,
}

/// One setting's three names, for messages.
struct Name {
    flag: &'static str,
    env: &'static str,
}

impl Name {
    fn describe(&self) -> String {
        let key = self.flag.trim_start_matches("--").replace('-', "_");
        format!("{} (env {}, TOML {key})", self.flag, self.env)
    }
}

macro_rules! name {
    ($flag:literal, $env:literal) => {
        Name {
            flag: $flag,
            env: $env,
        }
    };
}

fn invalid(
    name: &Name,
    value: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        setting: name.describe(),
        value: value.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn required(name: &Name, value: Option<String>, fix: &'static str) -> Result<String, ConfigError> {
    match value {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing {
            setting: name.describe(),
            fix,
        }),
    }
}

fn parsed<T>(
    name: &Name,
    value: Option<String>,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    check: impl Fn(&T) -> Result<(), String>,
    fix: &str,
) -> Result<T, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let value = parse(&text).map_err(|problem| invalid(name, &text, problem, fix))?;
    check(&value).map_err(|problem| invalid(name, &text, problem, fix))?;
    Ok(value)
}

fn count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("'{text}' is not a whole number"))
}

fn within(low: usize, high: usize) -> impl Fn(&usize) -> Result<(), String> {
    move |value| {
        if (low..=high).contains(value) {
            Ok(())
        } else {
            Err(format!("must be between {low} and {high}"))
        }
    }
}

/// A duration longer than zero and at most `max`. Every duration is bounded, so that no deadline
/// computed from one can overflow.
fn up_to(max: Duration) -> impl Fn(&Duration) -> Result<(), String> {
    move |value| {
        if value.is_zero() {
            Err("must be longer than zero".into())
        } else if *value > max {
            Err(format!(
                "must be at most {}",
                humantime::format_duration(max)
            ))
        } else {
            Ok(())
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn anything<T>(_: &T) -> Result<(), String> {
    Ok(())
}

fn url(name: &Name, value: String, fix: &'static str) -> Result<String, ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(name, &value, "not an http(s) URL", fix))
    }
}

impl Settings {
    /// Resolves the settings: a flag or environment variable (clap has merged those) beats the
    /// TOML file, which beats the default.
    pub fn resolve(args: RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        Self::from_parts(args, file)
    }

    fn from_parts(args: RunArgs, file: FileSettings) -> Result<Self, ConfigError> {
        let queue_url = url(
            &name!("--queue-url", "SQS_QUEUE_URL"),
            required(
                &name!("--queue-url", "SQS_QUEUE_URL"),
                args.queue_url.or(file.queue_url),
                "set it to the source queue's URL",
            )?,
            "give the queue URL that CreateQueue or the console shows",
        )?;
        let dlq_url = url(
            &name!("--dlq-url", "SQS_DLQ_URL"),
            required(
                &name!("--dlq-url", "SQS_DLQ_URL"),
                args.dlq_url.or(file.dlq_url),
                "set it to the URL of the queue that takes rejected messages",
            )?,
            "give the queue URL that CreateQueue or the console shows",
        )?;
        if dlq_url == queue_url {
            let name = name!("--dlq-url", "SQS_DLQ_URL");
            return Err(invalid(
                &name,
                &dlq_url,
                "it is the source queue itself",
                "use a separate queue for rejects",
            ));
        }
        let api_url = url(
            &name!("--api-url", "RECORDS_API_URL"),
            required(
                &name!("--api-url", "RECORDS_API_URL"),
                args.api_url.or(file.api_url),
                "set it to the Records API base, e.g. http://127.0.0.1:8080/public/v1",
            )?,
            "write it like https://api.example.com/public/v1",
        )?;
        let api_token = Self::token(
            args.api_token.or(file.api_token),
            args.api_token_file
                .or(file.api_token_file.map(PathBuf::from)),
        )?;
        let object = required(
            &name!("--object", "RECORDS_OBJECT"),
            args.object.or(file.object),
            "name the object to write, e.g. profiles",
        )?;
        let operation = parsed(
            &name!("--operation", "RECORDS_OPERATION"),
            args.operation.or(file.operation),
            "upsert",
            |text| match text.trim() {
                "upsert" => Ok(Operation::Upsert),
                "append" => Ok(Operation::Append),
                _ => Err("must be upsert or append".into()),
            },
            anything,
            "use upsert or append",
        )?;
        let match_key = args
            .match_key
            .or(file.match_key)
            .map(|key| key.trim().to_owned())
            .unwrap_or_else(|| "email".to_owned());
        if match_key.is_empty() {
            let name = name!("--match-key", "RECORDS_MATCH_KEY");
            return Err(invalid(
                &name,
                "",
                "is empty",
                "name the object's match key, e.g. email",
            ));
        }
        let batch_max_records = parsed(
            &name!("--batch-max-records", "BATCH_MAX_RECORDS"),
            args.batch_max_records.or(scalar(file.batch_max_records)),
            "1000",
            count,
            within(1, MAX_BATCH_RECORDS),
            "use a number from 1 to 10000",
        )?;
        let batch_max_bytes = parsed(
            &name!("--batch-max-bytes", "BATCH_MAX_BYTES"),
            args.batch_max_bytes.or(scalar(file.batch_max_bytes)),
            "5MiB",
            |text| parse_size(text).map(|bytes| bytes as usize),
            within(1024, MAX_BODY_BYTES),
            "use a size from 1KiB to 10MB (10485760 bytes), e.g. 5MiB",
        )?;
        let batch_max_wait = parsed(
            &name!("--batch-max-wait", "BATCH_MAX_WAIT"),
            args.batch_max_wait.or(scalar(file.batch_max_wait)),
            "5s",
            parse_duration,
            up_to(HOUR),
            "use a duration from 1ms to 1h, such as 500ms or 5s",
        )?;
        let pollers = parsed(
            &name!("--pollers", "SQS_POLLERS"),
            args.pollers.or(scalar(file.pollers)),
            "4",
            count,
            within(1, 256),
            "use a number from 1 to 256",
        )?;
        let worker_threads = parsed(
            &name!("--worker-threads", "WORKER_THREADS"),
            args.worker_threads.or(scalar(file.worker_threads)),
            "1",
            count,
            within(1, 64),
            "use a number from 1 to 64 (1 carries about 15,000 messages a second)",
        )?;
        let max_in_flight = parsed(
            &name!("--max-in-flight", "MAX_IN_FLIGHT_BATCHES"),
            args.max_in_flight.or(scalar(file.max_in_flight)),
            "4",
            count,
            within(1, 1024),
            "use a number from 1 to 1024",
        )?;
        let rate_limit = parsed(
            &name!("--rate-limit", "RECORDS_RATE_LIMIT"),
            args.rate_limit.or(scalar(file.rate_limit)),
            "none",
            parse_limits,
            anything,
            "write one limit or several, comma-separated, such as 1.5, 100/min or \
             100/min,2000/day; add :BURST to bank calls (2000/day:50); from 1/week to 1000000/s",
        )?;
        let concurrency = parsed(
            &name!("--concurrency", "RECORDS_CONCURRENCY"),
            args.concurrency.or(file.concurrency),
            "adaptive",
            |text| match text.trim() {
                "adaptive" => Ok(Concurrency::Adaptive),
                "fixed" => Ok(Concurrency::Fixed),
                _ => Err("must be adaptive or fixed".into()),
            },
            anything,
            "use adaptive (AIMD up to --max-in-flight) or fixed (always --max-in-flight)",
        )?;
        let state_dir = args
            .state_dir
            .or(file.state_dir.map(PathBuf::from))
            .filter(|dir| !dir.as_os_str().is_empty());
        let budget_queue = args
            .budget_queue
            .or(file.budget_queue)
            .filter(|url| !url.trim().is_empty());
        if let Some(url) = &budget_queue {
            if !url.ends_with(".fifo") {
                return Err(invalid(
                    &name!("--budget-queue", "BUDGET_QUEUE_URL"),
                    url,
                    "the shared budget needs a FIFO queue (its deduplication mints each token once)",
                    "create a FIFO queue for the tokens (deploy/cloudformation.yaml has one) and give its URL",
                ));
            }
            if rate_limit.is_empty() {
                return Err(invalid(
                    &name!("--budget-queue", "BUDGET_QUEUE_URL"),
                    url,
                    "a shared budget needs something to share",
                    "set --rate-limit too, e.g. 100/min:5",
                ));
            }
            if let Some(limit) = rate_limit.iter().find(|l| l.burst.unwrap_or(1) < 2) {
                return Err(invalid(
                    &name!("--rate-limit", "RECORDS_RATE_LIMIT"),
                    &limit.to_string(),
                    "with --budget-queue each limit needs a burst of at least 2: with 1, a \
                     token is good for too short a time to pass between replicas",
                    format!("add :2 or more, e.g. {limit}:2, if the API's own bucket allows it"),
                ));
            }
        }
        let ack_on = parsed(
            &name!("--ack-on", "ACK_ON"),
            args.ack_on.or(file.ack_on),
            "accepted",
            |text| match text.trim() {
                "accepted" => Ok(AckOn::Accepted),
                "completed" => Ok(AckOn::Completed),
                _ => Err("must be accepted or completed".into()),
            },
            anything,
            "use accepted or completed",
        )?;
        let job_timeout = parsed(
            &name!("--job-timeout", "JOB_TIMEOUT"),
            args.job_timeout.or(scalar(file.job_timeout)),
            "10m",
            parse_duration,
            up_to(7 * DAY),
            "use a duration from 1s to 7 days, such as 10m",
        )?;
        let visibility_timeout = match args.visibility_timeout.or(scalar(file.visibility_timeout)) {
            Some(text) => Some(parsed(
                &name!("--visibility-timeout", "SQS_VISIBILITY_TIMEOUT"),
                Some(text),
                "",
                parse_duration,
                |d: &Duration| {
                    if (1..=43_200).contains(&d.as_secs()) {
                        Ok(())
                    } else {
                        Err("SQS takes 1 s to 12 h".into())
                    }
                },
                "use whole seconds from 1s to 12h, or leave it unset to use the queue's",
            )?),
            None => None,
        };
        let drain_timeout = parsed(
            &name!("--drain-timeout", "DRAIN_TIMEOUT"),
            args.drain_timeout.or(scalar(file.drain_timeout)),
            "25s",
            parse_duration,
            |d: &Duration| {
                if *d <= 12 * HOUR {
                    Ok(())
                } else {
                    Err("must be at most 12h".into())
                }
            },
            "use a duration from 0s to 12h, such as 25s",
        )?;
        let listen = parsed(
            &name!("--listen", "WORKER_LISTEN"),
            args.listen.or(file.listen),
            "127.0.0.1:9090",
            |text| text.trim().parse::<SocketAddr>().map_err(|e| e.to_string()),
            anything,
            "write it as IP:PORT, e.g. 127.0.0.1:9090 (port 0 picks a free one)",
        )?;
        let default_format = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            "text"
        } else {
            "json"
        };
        let log_format = parsed(
            &name!("--log-format", "LOG_FORMAT"),
            args.log_format.or(file.log_format),
            default_format,
            |text| match text.trim() {
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                _ => Err("must be json or text".into()),
            },
            anything,
            "use json or text",
        )?;
        let request_timeout = parsed(
            &name!("--request-timeout", "RECORDS_REQUEST_TIMEOUT"),
            args.request_timeout.or(scalar(file.request_timeout)),
            "30s",
            parse_duration,
            up_to(HOUR),
            "use a duration from 1ms to 1h, such as 30s",
        )?;
        let retry_attempts = parsed(
            &name!("--retry-attempts", "RECORDS_RETRY_ATTEMPTS"),
            args.retry_attempts.or(scalar(file.retry_attempts)),
            "8",
            count,
            within(1, 100),
            "use a number from 1 to 100",
        )?;
        let auth_retry = parsed(
            &name!("--auth-retry", "RECORDS_AUTH_RETRY"),
            args.auth_retry.or(scalar(file.auth_retry)),
            "30s",
            parse_duration,
            up_to(HOUR),
            "use a duration from 1ms to 1h, such as 30s",
        )?;
        let default_held = ((max_in_flight + 1) * batch_max_bytes).clamp(4 << 20, MAX_HELD_BYTES);
        let max_held_bytes = parsed(
            &name!("--max-held-bytes", "MAX_HELD_BYTES"),
            args.max_held_bytes.or(scalar(file.max_held_bytes)),
            &default_held.to_string(),
            |text| parse_size(text).map(|bytes| bytes.min(u64::MAX >> 1) as usize),
            within(1024 * 1024, MAX_HELD_BYTES),
            "use a size from 1MiB to 4GiB, e.g. 64MiB",
        )?;
        let release_backoff = parsed(
            &name!("--release-backoff", "RELEASE_BACKOFF"),
            args.release_backoff.or(scalar(file.release_backoff)),
            "10s",
            parse_duration,
            up_to(HOUR),
            "use a duration from 1s to 1h, such as 10s",
        )?;
        Ok(Self {
            queue_url,
            dlq_url,
            api_url,
            api_token,
            object,
            operation,
            match_key,
            batch_max_records,
            batch_max_bytes,
            batch_max_wait,
            pollers,
            worker_threads,
            max_in_flight,
            rate_limit,
            concurrency,
            state_dir,
            budget_queue,
            ack_on,
            job_timeout,
            visibility_timeout,
            drain_timeout,
            listen,
            log_format,
            request_timeout,
            retry_attempts,
            auth_retry,
            max_held_bytes,
            release_backoff,
        })
    }

    fn token(inline: Option<String>, file: Option<PathBuf>) -> Result<ApiToken, ConfigError> {
        let token = match (inline, file) {
            (Some(token), _) => token,
            (None, Some(path)) => {
                std::fs::read_to_string(&path).map_err(|e| ConfigError::TokenFile {
                    path: path.display().to_string(),
                    problem: format!("cannot read it: {}", e.kind()),
                })?
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    setting: "--api-token or --api-token-file (env RECORDS_API_TOKEN or RECORDS_API_TOKEN_FILE)"
                        .into(),
                    fix: "give the bearer token, preferably through a file",
                });
            }
        };
        let token = token.trim();
        if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ConfigError::Invalid {
                setting: "--api-token / --api-token-file".into(),
                value: "***".into(),
                problem: "the token is empty or holds spaces or control characters".into(),
                fix: "store only the token itself".into(),
            });
        }
        Ok(ApiToken::new(token.to_owned()))
    }

    pub fn source_is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    pub fn dlq_is_fifo(&self) -> bool {
        self.dlq_url.ends_with(".fifo")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunArgs {
        RunArgs {
            queue_url: Some("http://localhost:4566/000000000000/q".into()),
            dlq_url: Some("http://localhost:4566/000000000000/dlq".into()),
            api_url: Some("http://127.0.0.1:8080/public/v1/".into()),
            api_token: Some("tok".into()),
            object: Some("profiles".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = Settings::from_parts(base(), FileSettings::default()).unwrap();
        assert_eq!(s.batch_max_records, 1000);
        assert_eq!(s.batch_max_bytes, 5 * 1024 * 1024);
        assert_eq!(s.batch_max_wait, Duration::from_secs(5));
        assert_eq!((s.pollers, s.max_in_flight), (4, 4));
        assert_eq!(s.worker_threads, 1);
        assert_eq!(s.ack_on, AckOn::Accepted);
        assert_eq!(s.job_timeout, Duration::from_secs(600));
        assert_eq!(s.drain_timeout, Duration::from_secs(25));
        assert_eq!(s.operation, Operation::Upsert);
        assert_eq!(s.match_key, "email");
        assert_eq!(s.api_url, "http://127.0.0.1:8080/public/v1");
        assert!(s.rate_limit.is_empty());
    }

    #[test]
    fn flags_beat_the_file() {
        let file: FileSettings = toml::from_str(
            "batch_max_records = 50\nbatch_max_wait = \"2s\"\nrate_limit = \"100/min\"",
        )
        .unwrap();
        let mut args = base();
        args.batch_max_records = Some("70".into());
        let s = Settings::from_parts(args, file).unwrap();
        assert_eq!(s.batch_max_records, 70);
        assert_eq!(s.batch_max_wait, Duration::from_secs(2));
        assert!((s.rate_limit[0].per_second() - 100.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn errors_name_the_setting_and_the_fix() {
        let mut args = base();
        args.batch_max_records = Some("20000".into());
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("--batch-max-records"), "{error}");
        assert!(error.contains("BATCH_MAX_RECORDS"), "{error}");
        assert!(error.contains("Fix:"), "{error}");
        let mut args = base();
        args.queue_url = None;
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--queue-url") && error.contains("SQS_QUEUE_URL"),
            "{error}"
        );
        let mut args = base();
        args.ack_on = Some("whenever".into());
        assert!(Settings::from_parts(args, FileSettings::default()).is_err());
        assert!(toml::from_str::<FileSettings>("batch_max_recrods = 5").is_err());
        for threads in ["0", "65", "two"] {
            let mut args = base();
            args.worker_threads = Some(threads.into());
            let error = Settings::from_parts(args, FileSettings::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--worker-threads") && error.contains("WORKER_THREADS"),
                "{error}"
            );
        }
        let file: FileSettings = toml::from_str("worker_threads = 2").expect("a TOML key");
        let s = Settings::from_parts(base(), file).expect("valid");
        assert_eq!(s.worker_threads, 2);
    }

    #[test]
    fn token_never_shows_in_errors() {
        let mut args = base();
        args.api_token = Some("bad token with spaces".into());
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(!error.contains("bad token"), "{error}");
    }
}
