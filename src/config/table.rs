//! The one table of `run` settings: each row gives a setting's flag, environment variable,
//! default and help once. From it come the clap arguments (`RunArgs`), the TOML file's keys
//! (`FileSettings`, the field names) and the merged raw values (`Raw`) that `Settings::resolve`
//! parses. Every flag value is optional here, so that precedence (flag, then environment, then
//! TOML, then default) is decided in one place rather than by clap.

use std::path::PathBuf;

use clap::Args;
use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use serde::Deserialize;

use super::setting::Setting;

macro_rules! settings_table {
    ($( $(#[$arg:meta])* $field:ident $flag:literal $env:literal [$($default:tt)*] $help:literal; )*) => {
        /// The `run` and `check` flags. Each value is also read from its environment variable.
        /// `Debug` is written by hand: it never prints the token.
        #[derive(Clone, Default, Args)]
        pub struct RunArgs {
            /// TOML file with any of the settings below (keys are the flag names with `_`).
            #[arg(long, env = "WORKER_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                #[arg(long = &$flag[2..], env = $env, help = settings_table!(@help $help [$($default)*]))]
                $(#[$arg])*
                pub $field: Option<String>,
            )*
        }

        /// The TOML settings file (`--config FILE`): every key is optional, and an unknown key is
        /// an error so that a typo does not go unnoticed. A scalar of any type reads as the text
        /// a flag would carry: `1000`, `"5MiB"` and `2.5` all work.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileSettings {
            $( pub $field: Option<toml::Value>, )*
        }

        impl FileSettings {
            /// The keys a settings file may hold.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl std::fmt::Debug for RunArgs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("RunArgs");
                out.field("config", &self.config);
                $( out.field(stringify!($field), &redacted(stringify!($field), &self.$field)); )*
                out.finish()
            }
        }

        impl std::fmt::Debug for FileSettings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("FileSettings");
                $( out.field(stringify!($field), &redacted(stringify!($field), &self.$field)); )*
                out.finish()
            }
        }

        /// Each setting's text after precedence, with its names and its default.
        pub struct Raw {
            $( pub $field: Setting, )*
        }

        impl Raw {
            pub fn merge(args: RunArgs, file: FileSettings) -> Self {
                Self {
                    $( $field: Setting {
                        flag: $flag,
                        env: $env,
                        default: settings_table!(@default [$($default)*]),
                        text: args.$field.or_else(|| scalar(file.$field)),
                    }, )*
                }
            }
        }
    };
    (@help $help:literal [value $default:literal]) => { concat!($help, " [default: ", $default, "]") };
    (@help $help:literal [shown $default:literal]) => { concat!($help, " [default: ", $default, "]") };
    (@help $help:literal [required]) => { $help };
    (@default [value $default:literal]) => { Some($default) };
    (@default [shown $default:literal]) => { None };
    (@default [required]) => { None };
}

/// A setting's value for `Debug`: the token's is never shown.
fn redacted<'a, T: std::fmt::Debug>(field: &str, value: &'a Option<T>) -> &'a dyn std::fmt::Debug {
    match value {
        Some(_) if field == "api_token" => &"***",
        _ => value,
    }
}

/// The value parser of an enumerated setting: `--help`, the completions and the man page list
/// its choices, taken from the same table `Settings::resolve` parses with. The text itself is
/// kept as it came, so that a wrong one is refused there, like a wrong TOML value, with the
/// setting's three names and the fix.
#[derive(Clone)]
pub struct Choices(Vec<&'static str>);

impl Choices {
    pub fn of<T>(table: &'static [(&'static str, T)]) -> Self {
        Self(table.iter().map(|(name, _)| *name).collect())
    }
}

impl TypedValueParser for Choices {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(command, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            self.0.iter().map(|name| PossibleValue::new(*name)),
        ))
    }
}

fn scalar(value: Option<toml::Value>) -> Option<String> {
    value.map(|value| match value {
        toml::Value::String(text) => text,
        other => other.to_string(),
    })
}

// `value D`: D is parsed when nothing is set. `shown D`: the default is computed or absent, and
// D says what it is. `required`: there is none.
settings_table! {
    queue_url "--queue-url" "SQS_QUEUE_URL" [required]
        "Source queue URL (standard or FIFO).";
    dlq_url "--dlq-url" "SQS_DLQ_URL" [required]
        "Where rejected rows and poison messages go.";
    api_url "--api-url" "RECORDS_API_URL" [required]
        "Records API base URL, e.g. http://127.0.0.1:8080/public/v1.";
    #[arg(hide_env_values = true)]
    api_token "--api-token" "RECORDS_API_TOKEN" [required]
        "Bearer token for the Records API (never logged). Prefer --api-token-file.";
    api_token_file "--api-token-file" "RECORDS_API_TOKEN_FILE" [required]
        "File holding the bearer token.";
    object "--object" "RECORDS_OBJECT" [required]
        "Object to write, e.g. profiles.";
    #[arg(value_parser = Choices::of(super::OPERATIONS))]
    operation "--operation" "RECORDS_OPERATION" [value "upsert"]
        "upsert or append.";
    match_key "--match-key" "RECORDS_MATCH_KEY" [value "email"]
        "matchKey for upserts.";
    batch_max_records "--batch-max-records" "BATCH_MAX_RECORDS" [value "1000"]
        "Flush at this many records, 1 to 10000.";
    batch_max_bytes "--batch-max-bytes" "BATCH_MAX_BYTES" [value "5MiB"]
        "Flush before the encoded body passes this, at most 10MB.";
    batch_max_wait "--batch-max-wait" "BATCH_MAX_WAIT" [value "5s"]
        "Send a batch once its oldest message is this old, as soon as it has a slot (a free \
         in-flight place and a --rate-limit token); until the slot comes it keeps filling.";
    pollers "--pollers" "SQS_POLLERS" [value "4"]
        "Concurrent long-poll loops.";
    worker_threads "--worker-threads" "WORKER_THREADS" [value "1"]
        "Threads that run the worker's tasks. At about 6 CPU-seconds per 100,000 messages one \
         thread has room for some 15,000 a second; a second thread costs CPU in hand-offs and \
         only helps past that.";
    max_in_flight "--max-in-flight" "MAX_IN_FLIGHT_BATCHES" [value "4"]
        "Batches submitted or being polled at once; with --concurrency adaptive, the ceiling of \
         the adaptive limit.";
    rate_limit "--rate-limit" "RECORDS_RATE_LIMIT" [value "none"]
        "The API's quota for batch calls: one limit or several, comma-separated, each N/PERIOD \
         (s, min, h, day, or a duration such as 15min) with an optional :BURST of banked calls, \
         e.g. 1.5, 100/min or 100/min:5,2000/day. Each is a token bucket, paced 2% under the \
         stated rate.";
    #[arg(value_parser = Choices::of(super::CONCURRENCY))]
    concurrency "--concurrency" "RECORDS_CONCURRENCY" [value "adaptive"]
        "adaptive: in-flight batches follow the API (AIMD: grow while answers stay fast, halve \
         on 429, 503, 504, timeouts and slow answers), at most --max-in-flight; fixed: always \
         --max-in-flight.";
    state_dir "--state-dir" "STATE_DIR" [shown "none, buckets start full"]
        "Directory where the local --rate-limit budget is saved as each call is paid for, so \
         that a restart does not start with a full bucket. One worker per directory (a second \
         exits 2); not used with --budget-queue.";
    budget_queue "--budget-queue" "BUDGET_QUEUE_URL" [shown "none, each replica spends its own"]
        "SQS FIFO queue that holds a --rate-limit budget shared by every replica.";
    #[arg(value_parser = Choices::of(super::ACK_ON))]
    ack_on "--ack-on" "ACK_ON" [value "accepted"]
        "accepted (delete after the 202) or completed (delete after the job ends).";
    job_timeout "--job-timeout" "JOB_TIMEOUT" [value "10m"]
        "How long to poll a job before its rows go to the DLQ as job_timeout. On a FIFO queue \
         the worker keeps following the job past it, with a warning, and its groups wait.";
    visibility_timeout "--visibility-timeout" "SQS_VISIBILITY_TIMEOUT" [shown "the queue's"]
        "Visibility given on receive.";
    drain_timeout "--drain-timeout" "DRAIN_TIMEOUT" [value "25s"]
        "On SIGTERM/SIGINT: how long to flush and finish before exiting.";
    listen "--listen" "WORKER_LISTEN" [value "127.0.0.1:9090"]
        "Address for /healthz, /readyz and /metrics (see docs/security.md before binding it \
         beyond loopback).";
    #[arg(num_args = 0..=1, default_missing_value = "true", value_parser = Choices::of(super::BOOLEANS))]
    allow_insecure_http "--allow-insecure-http" "RECORDS_ALLOW_INSECURE_HTTP" [value "false"]
        "Accept an http:// --api-url on a host outside loopback (localhost, 127.0.0.0/8, ::1); \
         the token then crosses the network in clear text. Without it such a URL is refused.";
    #[arg(value_parser = Choices::of(super::LOG_FORMATS))]
    log_format "--log-format" "LOG_FORMAT" [shown "json when stderr is not a TTY, else text"]
        "json or text.";
    request_timeout "--request-timeout" "RECORDS_REQUEST_TIMEOUT" [value "30s"]
        "Timeout of one Records API request.";
    retry_attempts "--retry-attempts" "RECORDS_RETRY_ATTEMPTS" [value "8"]
        "Attempts per batch request before its messages are released to SQS (a FIFO batch is \
         held and sent again, see --release-backoff).";
    auth_retry "--auth-retry" "RECORDS_AUTH_RETRY" [value "30s"]
        "Pause after a 401, 403, 404 or 405 before the held batch is sent again; receiving \
         pauses as long (and sending too, on 401/403).";
    max_held_bytes "--max-held-bytes" "MAX_HELD_BYTES"
        [shown "(max-in-flight + 1) x batch-max-bytes, at least 4MiB"]
        "Message bodies held at most (buffered and in flight) before receiving waits.";
    release_backoff "--release-backoff" "RELEASE_BACKOFF" [value "10s"]
        "Visibility of a message released for a retry, doubled per receive up to 15m; receiving \
         pauses as long while the API is out. A FIFO batch is held instead, with the same \
         pauses, and released after 8 of them.";
    receive_wait "--receive-wait" "SQS_RECEIVE_WAIT" [value "20s"]
        "Long-poll wait of one receive, 1s to 20s (whole seconds). Keep 20s on AWS; moto's \
         server keeps a FIFO group locked for a whole long poll that began while the group was \
         in flight, so use 1s against it.";
}
