//! Settings for `sqs-batch-worker run`: precedence (flag, then environment, then TOML file, then
//! default) and validation. Every error names the setting in all three spellings and the fix.

pub mod cli;
mod file;
mod setting;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use records_contract::{MAX_BATCH_RECORDS, MAX_BODY_BYTES};

use records_contract::process::Logs;
use records_contract::quota::{Limit, parse_limits};
use records_contract::units::{parse_duration, parse_size};

use crate::secret::ApiToken;
use setting::{count, duration_up_to, one_of, within};
use table::Raw;
pub use table::{FileSettings, RunArgs};

/// The largest `--max-held-bytes`: what one semaphore acquisition can count.
const MAX_HELD_BYTES: usize = u32::MAX as usize;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

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
    /// `--allow-insecure-http`: an http:// `api_url` outside loopback was accepted knowingly.
    pub allow_insecure_http: bool,
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
    /// Long-poll wait of a receive, in whole seconds (0 to 20).
    pub receive_wait_s: i32,
}

/// The settings that say where things are and what to write.
struct Endpoints {
    queue_url: String,
    dlq_url: String,
    api_url: String,
    api_token: ApiToken,
    allow_insecure_http: bool,
    object: String,
    operation: Operation,
    match_key: String,
    listen: SocketAddr,
}

/// The settings that shape the flow: batches, concurrency, memory and the quota.
struct Flow {
    batch_max_records: usize,
    batch_max_bytes: usize,
    batch_max_wait: Duration,
    pollers: usize,
    worker_threads: usize,
    max_in_flight: usize,
    max_held_bytes: usize,
    rate_limit: Vec<Limit>,
    concurrency: Concurrency,
    state_dir: Option<PathBuf>,
    budget_queue: Option<String>,
}

/// The settings of time: acks, jobs, visibility, drains, retries and logs.
struct Timing {
    ack_on: AckOn,
    job_timeout: Duration,
    visibility_timeout: Option<Duration>,
    drain_timeout: Duration,
    log_format: LogFormat,
    request_timeout: Duration,
    retry_attempts: usize,
    auth_retry: Duration,
    release_backoff: Duration,
    receive_wait_s: i32,
}

const QUEUE_URL_FIX: &str = "give the queue URL that CreateQueue or the console shows";
const OPERATIONS: &[(&str, Operation)] =
    &[("upsert", Operation::Upsert), ("append", Operation::Append)];
const ACK_ON: &[(&str, AckOn)] = &[
    ("accepted", AckOn::Accepted),
    ("completed", AckOn::Completed),
];
const CONCURRENCY: &[(&str, Concurrency)] = &[
    ("adaptive", Concurrency::Adaptive),
    ("fixed", Concurrency::Fixed),
];
const BOOLEANS: &[(&str, bool)] = &[("true", true), ("false", false)];
const LOG_FORMATS: &[(&str, LogFormat)] = &[("json", LogFormat::Json), ("text", LogFormat::Text)];

impl Settings {
    /// Resolves the settings: a flag or environment variable (clap has merged those) beats the
    /// TOML file, which beats the table's default.
    pub fn resolve(args: RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        Self::from_parts(args, file)
    }

    fn from_parts(args: RunArgs, file: FileSettings) -> Result<Self, ConfigError> {
        let raw = Raw::merge(args, file);
        let (e, f, t) = (endpoints(&raw)?, flow(&raw)?, timing(&raw)?);
        Ok(Self {
            queue_url: e.queue_url,
            dlq_url: e.dlq_url,
            api_url: e.api_url,
            api_token: e.api_token,
            allow_insecure_http: e.allow_insecure_http,
            object: e.object,
            operation: e.operation,
            match_key: e.match_key,
            batch_max_records: f.batch_max_records,
            batch_max_bytes: f.batch_max_bytes,
            batch_max_wait: f.batch_max_wait,
            pollers: f.pollers,
            worker_threads: f.worker_threads,
            max_in_flight: f.max_in_flight,
            rate_limit: f.rate_limit,
            concurrency: f.concurrency,
            state_dir: f.state_dir,
            budget_queue: f.budget_queue,
            ack_on: t.ack_on,
            job_timeout: t.job_timeout,
            visibility_timeout: t.visibility_timeout,
            drain_timeout: t.drain_timeout,
            listen: e.listen,
            log_format: t.log_format,
            request_timeout: t.request_timeout,
            retry_attempts: t.retry_attempts,
            auth_retry: t.auth_retry,
            max_held_bytes: f.max_held_bytes,
            release_backoff: t.release_backoff,
            receive_wait_s: t.receive_wait_s,
        })
    }

    /// How this run's log lines are written.
    pub fn logs(&self) -> Logs {
        Logs {
            json: self.log_format == LogFormat::Json,
            ..Logs::TEXT
        }
    }

    pub fn source_is_fifo(&self) -> bool {
        is_fifo(&self.queue_url)
    }

    pub fn dlq_is_fifo(&self) -> bool {
        is_fifo(&self.dlq_url)
    }
}

/// An `http://` URL whose host is not loopback (`localhost`, 127.0.0.0/8, `::1`): a token sent
/// there can be read on the way.
pub fn sends_token_in_clear(api_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(api_url) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    url.scheme() == "http" && !loopback
}

/// SQS names every FIFO queue, and so its URL, with `.fifo` at the end.
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
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
    // Visible ASCII without quotes or backslashes: what an `Authorization` header carries, and
    // what redaction finds in text that escapes quotes and backslashes (JSON, serde's errors).
    let usable = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
    if token.is_empty() || !token.chars().all(usable) {
        return Err(ConfigError::Invalid {
            setting: "--api-token / --api-token-file".into(),
            value: "***".into(),
            problem: "the token is empty or holds spaces, control characters, quotes, \
                      backslashes or non-ASCII characters"
                .into(),
            fix: "store only the token itself".into(),
        });
    }
    Ok(ApiToken::new(token.to_owned()))
}

fn endpoints(raw: &Raw) -> Result<Endpoints, ConfigError> {
    let queue_url = raw
        .queue_url
        .url("set it to the source queue's URL", QUEUE_URL_FIX)?;
    let dlq_url = raw.dlq_url.url(
        "set it to the URL of the queue that takes rejected messages",
        QUEUE_URL_FIX,
    )?;
    if dlq_url == queue_url {
        return Err(raw.dlq_url.invalid(
            &dlq_url,
            "it is the source queue itself",
            "use a separate queue for rejects",
        ));
    }
    let match_key = raw.match_key.parse(
        |text| match text.trim() {
            "" => Err("is empty".to_owned()),
            key => Ok(key.to_owned()),
        },
        "name the object's match key, e.g. email",
    )?;
    let api_url = raw.api_url.url(
        "set it to the Records API base, e.g. http://127.0.0.1:8080/public/v1",
        "write it like https://api.example.com/public/v1",
    )?;
    let allow_insecure_http = raw.allow_insecure_http.parse(
        one_of(BOOLEANS, "must be true or false"),
        "use true or false (the flag alone means true)",
    )?;
    if sends_token_in_clear(&api_url) && !allow_insecure_http {
        return Err(raw.api_url.invalid(
            &api_url,
            "it is plain http:// to a host outside loopback, so the bearer token would cross \
             the network in clear text",
            "use https://, or add --allow-insecure-http (env RECORDS_ALLOW_INSECURE_HTTP) if the \
             network between them is trusted",
        ));
    }
    Ok(Endpoints {
        queue_url,
        dlq_url,
        api_url,
        allow_insecure_http,
        api_token: token(
            raw.api_token.text.clone(),
            raw.api_token_file.given().map(PathBuf::from),
        )?,
        object: raw
            .object
            .required("name the object to write, e.g. profiles")?,
        operation: raw.operation.parse(
            one_of(OPERATIONS, "must be upsert or append"),
            "use upsert or append",
        )?,
        match_key,
        listen: raw.listen.parse(
            |text| text.trim().parse::<SocketAddr>().map_err(|e| e.to_string()),
            "write it as IP:PORT, e.g. 127.0.0.1:9090 (port 0 picks a free one)",
        )?,
    })
}

fn flow(raw: &Raw) -> Result<Flow, ConfigError> {
    let batch_max_bytes = raw.batch_max_bytes.parse(
        |text| {
            within(
                1024,
                MAX_BODY_BYTES,
                parse_size(text)?.min(u64::MAX >> 1) as usize,
            )
        },
        "use a size from 1KiB to 10MB (10485760 bytes), e.g. 5MiB",
    )?;
    let max_in_flight = raw
        .max_in_flight
        .parse(count(1, 1024), "use a number from 1 to 1024")?;
    let default_held = ((max_in_flight + 1) * batch_max_bytes).clamp(4 << 20, MAX_HELD_BYTES);
    let rate_limit = raw.rate_limit.parse(
        parse_limits,
        "write one limit or several, comma-separated, such as 1.5, 100/min or \
         100/min,2000/day; add :BURST to bank calls (2000/day:50); from 1/week to 1000000/s",
    )?;
    Ok(Flow {
        batch_max_records: raw
            .batch_max_records
            .parse(count(1, MAX_BATCH_RECORDS), "use a number from 1 to 10000")?,
        batch_max_bytes,
        batch_max_wait: raw.batch_max_wait.parse(
            duration_up_to(HOUR),
            "use a duration from 1ms to 1h, such as 500ms or 5s",
        )?,
        pollers: raw
            .pollers
            .parse(count(1, 256), "use a number from 1 to 256")?,
        worker_threads: raw.worker_threads.parse(
            count(1, 64),
            "use a number from 1 to 64 (1 carries about 15,000 messages a second)",
        )?,
        max_in_flight,
        max_held_bytes: raw.max_held_bytes.parse_or(
            &default_held.to_string(),
            |text| {
                within(
                    1024 * 1024,
                    MAX_HELD_BYTES,
                    parse_size(text)?.min(u64::MAX >> 1) as usize,
                )
            },
            "use a size from 1MiB to 4GiB, e.g. 64MiB",
        )?,
        concurrency: raw.concurrency.parse(
            one_of(CONCURRENCY, "must be adaptive or fixed"),
            "use adaptive (AIMD up to --max-in-flight) or fixed (always --max-in-flight)",
        )?,
        state_dir: raw.state_dir.given().map(PathBuf::from),
        budget_queue: budget_queue(raw, &rate_limit)?,
        rate_limit,
    })
}

/// The shared budget's queue: FIFO, and only with limits whose tokens live long enough to share.
fn budget_queue(raw: &Raw, rate_limit: &[Limit]) -> Result<Option<String>, ConfigError> {
    let Some(url) = raw.budget_queue.given() else {
        return Ok(None);
    };
    if !is_fifo(&url) {
        return Err(raw.budget_queue.invalid(
            &url,
            "the shared budget needs a FIFO queue (its deduplication mints each token once)",
            "create a FIFO queue for the tokens (deploy/cloudformation/queues.yaml makes one with SharedBudget=true) and give its URL",
        ));
    }
    if rate_limit.is_empty() {
        return Err(raw.budget_queue.invalid(
            &url,
            "a shared budget needs something to share",
            "set --rate-limit too, e.g. 100/min:5",
        ));
    }
    if let Some(limit) = rate_limit.iter().find(|l| l.burst.unwrap_or(1) < 2) {
        return Err(raw.rate_limit.invalid(
            &limit.to_string(),
            "with --budget-queue each limit needs a burst of at least 2: with 1, a \
             token is good for too short a time to pass between replicas",
            format!("add :2 or more, e.g. {limit}:2, if the API's own bucket allows it"),
        ));
    }
    Ok(Some(url))
}

fn timing(raw: &Raw) -> Result<Timing, ConfigError> {
    let default_format = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        "text"
    } else {
        "json"
    };
    Ok(Timing {
        ack_on: raw.ack_on.parse(
            one_of(ACK_ON, "must be accepted or completed"),
            "use accepted or completed",
        )?,
        job_timeout: raw.job_timeout.parse(
            duration_up_to(7 * DAY),
            "use a duration from 1s to 7 days, such as 10m",
        )?,
        visibility_timeout: raw.visibility_timeout.optional(
            |text| {
                let visibility = parse_duration(text)?;
                match visibility.as_secs() {
                    1..=43_200 => Ok(visibility),
                    _ => Err("SQS takes 1 s to 12 h".into()),
                }
            },
            "use whole seconds from 1s to 12h, or leave it unset to use the queue's",
        )?,
        drain_timeout: raw.drain_timeout.parse(
            |text| match parse_duration(text)? {
                drain if drain <= 12 * HOUR => Ok(drain),
                _ => Err("must be at most 12h".into()),
            },
            "use a duration from 0s to 12h, such as 25s",
        )?,
        log_format: raw.log_format.parse_or(
            default_format,
            one_of(LOG_FORMATS, "must be json or text"),
            "use json or text",
        )?,
        request_timeout: raw.request_timeout.parse(
            duration_up_to(HOUR),
            "use a duration from 1ms to 1h, such as 30s",
        )?,
        retry_attempts: raw
            .retry_attempts
            .parse(count(1, 100), "use a number from 1 to 100")?,
        auth_retry: raw.auth_retry.parse(
            duration_up_to(HOUR),
            "use a duration from 1ms to 1h, such as 30s",
        )?,
        release_backoff: raw.release_backoff.parse(
            duration_up_to(HOUR),
            "use a duration from 1s to 1h, such as 10s",
        )?,
        receive_wait_s: raw
            .receive_wait
            .parse(
                duration_up_to(Duration::from_secs(20)),
                "use a duration from 1s to 20s, such as 20s",
            )?
            .as_secs()
            .max(1) as i32,
    })
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

    /// Every enumerated setting lists its choices in `--help` (and so in the completions and the
    /// man page), from the table it is parsed with; a wrong value is still refused by `resolve`
    /// with the setting's three names, as from a TOML file.
    #[test]
    fn help_lists_the_choices_of_every_enumerated_setting() {
        use clap::{CommandFactory, Parser};
        let mut cli = super::cli::Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .expect("the run subcommand")
            .render_long_help()
            .to_string();
        for (flag, table) in [
            ("--operation", names(OPERATIONS)),
            ("--ack-on", names(ACK_ON)),
            ("--concurrency", names(CONCURRENCY)),
            ("--log-format", names(LOG_FORMATS)),
            ("--allow-insecure-http", names(BOOLEANS)),
        ] {
            let shown = help
                .split("\n      --")
                .find(|entry| entry.starts_with(&flag[2..]))
                .unwrap_or_else(|| panic!("{flag} is in --help"));
            let listed = shown
                .split("[possible values: ")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .unwrap_or_else(|| panic!("{flag} lists no possible values: {shown}"));
            assert_eq!(listed, table.join(", "), "{flag}");
        }
        let argv = ["sqs-batch-worker", "run", "--operation", "replace"];
        let parsed = super::cli::Cli::try_parse_from(argv).expect("clap keeps the text as it came");
        let super::cli::Command::Run(parsed) = parsed.command else {
            unreachable!("the argv names `run`")
        };
        let args = RunArgs {
            operation: parsed.operation,
            ..base()
        };
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--operation") && error.contains("RECORDS_OPERATION"),
            "{error}"
        );
    }

    fn names<T>(table: &[(&'static str, T)]) -> Vec<&'static str> {
        table.iter().map(|(name, _)| *name).collect()
    }

    /// On 8f017ce plain http to any host was accepted without a word.
    #[test]
    fn plain_http_outside_loopback_needs_consent() {
        for (url, clear) in [
            ("http://127.0.0.1:8080/x", false),
            ("http://127.8.9.10/x", false),
            ("http://LOCALHOST:80/x", false),
            ("http://[::1]:8080/x", false),
            ("https://api.example.com/x", false),
            ("http://api.example.com/x", true),
            ("http://10.0.0.5:8080/x", true),
            ("http://127.0.0.1.nip.io/x", true),
            ("http://localhost.example.com/x", true),
        ] {
            assert_eq!(sends_token_in_clear(url), clear, "{url}");
        }
        let mut args = base();
        args.api_url = Some("http://records.internal:8080/public/v1".into());
        let error = Settings::from_parts(args.clone(), FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--api-url") && error.contains("--allow-insecure-http"),
            "{error}"
        );
        args.allow_insecure_http = Some("true".into());
        let s = Settings::from_parts(args, FileSettings::default()).unwrap();
        assert!(s.allow_insecure_http);
    }

    /// The review of issue 20: a token with a quote or a backslash is escaped in JSON and in
    /// serde's errors, where redaction cannot find it; one outside ASCII is no header value.
    #[test]
    fn a_token_is_visible_ascii_without_quotes() {
        for (token, usable) in [
            ("eyJhbGciOi.J9-_~+/=", true),
            ("tok\"en", false),
            ("tok\\en", false),
            ("tokén", false),
            ("tok en", false),
        ] {
            let mut args = base();
            args.api_token = Some(token.into());
            let resolved = Settings::from_parts(args, FileSettings::default());
            assert_eq!(resolved.is_ok(), usable, "{token}");
            if let Err(error) = resolved {
                assert!(!error.to_string().contains(token), "{error}");
            }
        }
    }

    /// `RunArgs` derived `Debug` and printed the raw token.
    #[test]
    fn debug_output_never_holds_the_token() {
        let mut args = base();
        args.api_token = Some("tok-5ecret".into());
        let file: FileSettings = toml::from_str("api_token = \"tok-5ecret\"").unwrap();
        let shown = format!("{args:?} {file:?}");
        assert!(!shown.contains("5ecret"), "{shown}");
        assert!(
            shown.contains("api_token") && shown.contains("***"),
            "{shown}"
        );
        let settings = Settings::from_parts(args, file).unwrap();
        assert!(!format!("{settings:?}").contains("5ecret"));
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
