//! The command line: subcommands and the `run` flags of shared/worker-cli.md. Every `run` value is
//! optional here so that precedence (flag, then environment, then TOML, then default) is decided in
//! one place, `Settings::resolve`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sqs-batch-worker",
    version,
    about = "Drains an SQS queue into the Records API in large idempotent batches."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `run` carries many settings and is parsed once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM/SIGINT, then drain and exit 0.
    Run(RunArgs),
    /// Send JSON lines (a file, or stdin with `-`) to a queue as messages, 10 per SendMessageBatch.
    Enqueue(EnqueueArgs),
    /// Exit 0 when the local /healthz answers (the container health check; the image has no curl).
    Healthcheck(HealthcheckArgs),
    /// Validate the `run` settings, reach both queues and the API's metadata; non-zero on a problem.
    Check(RunArgs),
    /// Move DLQ messages back to a queue after a fix: send, then delete, entry by entry.
    Redrive(RedriveArgs),
}

#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// TOML file with any of the settings below (keys are the flag names with `_`).
    #[arg(long, env = "WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Source queue URL (standard or FIFO).
    #[arg(long, env = "SQS_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Where rejected rows and poison messages go.
    #[arg(long, env = "SQS_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Records API base URL, e.g. http://127.0.0.1:8080/public/v1.
    #[arg(long, env = "RECORDS_API_URL")]
    pub api_url: Option<String>,
    /// Bearer token for the Records API (never logged). Prefer --api-token-file.
    #[arg(long, env = "RECORDS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "RECORDS_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Object to write, e.g. profiles.
    #[arg(long, env = "RECORDS_OBJECT")]
    pub object: Option<String>,
    /// upsert or append [default: upsert].
    #[arg(long, env = "RECORDS_OPERATION")]
    pub operation: Option<String>,
    /// matchKey for upserts [default: email].
    #[arg(long, env = "RECORDS_MATCH_KEY")]
    pub match_key: Option<String>,
    /// Flush at this many records, 1 to 10000 [default: 1000].
    #[arg(long, env = "BATCH_MAX_RECORDS")]
    pub batch_max_records: Option<String>,
    /// Flush before the encoded body passes this, at most 10MB [default: 5MiB].
    #[arg(long, env = "BATCH_MAX_BYTES")]
    pub batch_max_bytes: Option<String>,
    /// Send a batch once its oldest message is this old, as soon as it has a slot (a free
    /// in-flight place and a --rate-limit token); until the slot comes it keeps filling
    /// [default: 5s].
    #[arg(long, env = "BATCH_MAX_WAIT")]
    pub batch_max_wait: Option<String>,
    /// Concurrent long-poll loops [default: 4].
    #[arg(long, env = "SQS_POLLERS")]
    pub pollers: Option<String>,
    /// Threads that run the worker's tasks. At about 6 CPU-seconds per 100,000 messages one
    /// thread has room for some 15,000 a second; a second thread costs CPU in hand-offs and only
    /// helps past that [default: 1].
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<String>,
    /// Batches submitted or being polled at once; with --concurrency adaptive, the ceiling of the
    /// adaptive limit [default: 4].
    #[arg(long, env = "MAX_IN_FLIGHT_BATCHES")]
    pub max_in_flight: Option<String>,
    /// The API's quota for batch calls: one limit or several, comma-separated, each N/PERIOD
    /// (s, min, h, day, or a duration such as 15min) with an optional :BURST of banked calls,
    /// e.g. 1.5, 100/min or 100/min:5,2000/day. Each is a token bucket, paced 2% under the stated
    /// rate [default: none].
    #[arg(long, env = "RECORDS_RATE_LIMIT")]
    pub rate_limit: Option<String>,
    /// adaptive: in-flight batches follow the API (AIMD: grow while answers stay fast, halve on
    /// 429, 503, 504, timeouts and slow answers), at most --max-in-flight; fixed: always
    /// --max-in-flight [default: adaptive].
    #[arg(long, env = "RECORDS_CONCURRENCY")]
    pub concurrency: Option<String>,
    /// Directory where the local budget is saved after every call, so that a restart does not
    /// start with a full bucket [default: none, buckets start full].
    #[arg(long, env = "STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// SQS FIFO queue that holds a --rate-limit budget shared by every replica [default: none,
    /// each replica spends its own].
    #[arg(long, env = "BUDGET_QUEUE_URL")]
    pub budget_queue: Option<String>,
    /// accepted (delete after the 202) or completed (delete after the job ends) [default: accepted].
    #[arg(long, env = "ACK_ON")]
    pub ack_on: Option<String>,
    /// How long to poll a job before its rows go to the DLQ as job_timeout [default: 10m].
    #[arg(long, env = "JOB_TIMEOUT")]
    pub job_timeout: Option<String>,
    /// Visibility given on receive [default: the queue's].
    #[arg(long, env = "SQS_VISIBILITY_TIMEOUT")]
    pub visibility_timeout: Option<String>,
    /// On SIGTERM/SIGINT: how long to flush and finish before exiting [default: 25s].
    #[arg(long, env = "DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Address for /healthz, /readyz and /metrics [default: 127.0.0.1:9090].
    #[arg(long, env = "WORKER_LISTEN")]
    pub listen: Option<String>,
    /// json or text [default: json when stderr is not a TTY].
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Timeout of one Records API request [default: 30s].
    #[arg(long, env = "RECORDS_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Attempts per batch request before its messages are released to SQS [default: 8].
    #[arg(long, env = "RECORDS_RETRY_ATTEMPTS")]
    pub retry_attempts: Option<String>,
    /// Pause after a 401/403 before trying again [default: 30s].
    #[arg(long, env = "RECORDS_AUTH_RETRY")]
    pub auth_retry: Option<String>,
    /// Message bodies held at most (buffered and in flight) before receiving waits
    /// [default: (max-in-flight + 1) x batch-max-bytes, at least 4MiB].
    #[arg(long, env = "MAX_HELD_BYTES")]
    pub max_held_bytes: Option<String>,
    /// Visibility of a message released for a retry, doubled per receive up to 15m; receiving
    /// pauses as long while the API is out [default: 10s].
    #[arg(long, env = "RELEASE_BACKOFF")]
    pub release_backoff: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Queue to send to.
    #[arg(long, env = "SQS_QUEUE_URL")]
    pub queue_url: String,
    /// JSON-lines file, or `-` for stdin.
    #[arg(default_value = "-")]
    pub input: String,
    /// MessageGroupId for a FIFO queue; `field:NAME` takes it from each line's JSON field.
    #[arg(long)]
    pub group_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The DLQ to take messages from.
    #[arg(long)]
    pub from: String,
    /// The queue to put them back on (usually the source queue).
    #[arg(long)]
    pub to: String,
    /// Only messages with this `dlq-reason` (e.g. invalid_row); others stay in the DLQ.
    #[arg(long)]
    pub reason: Option<String>,
    /// Move at most this many.
    #[arg(long)]
    pub max: Option<usize>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The worker's --listen address.
    #[arg(long, env = "WORKER_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: String,
}
