//! The one table of `run` settings. Each row gives a setting once: its field and type, flag,
//! environment variable, default, help, and how its text becomes the value (with the fix an
//! operator reads when it cannot). From the table come the clap arguments (`RunArgs`, with the
//! choices of every enumerated setting), the TOML file's keys (`FileSettings`), the merged raw
//! texts (`Raw`) and the typed `Settings` with its parser. Every flag value is optional here, so
//! that precedence (flag, then environment, then TOML, then default) is decided in one place
//! rather than by clap. Rules between settings live in `Settings::validate` (`mod.rs`).
//!
//! Adding a setting is one row here plus its use. The one setting that is a list rather than a
//! scalar, the field mapping (`--field`, repeated; TOML `[fields]`), is written into the macro
//! beside the rows: the flags replace the TOML table as a whole.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use records_contract::quota::{Limit, parse_limits};
use records_contract::units::parse_duration;
use records_contract::{MAX_BATCH_RECORDS, MAX_BODY_BYTES};
use serde::Deserialize;

use super::setting::{Setting, count, duration_up_to, one_of, size_within};
use super::{
    ACK_ON, AckOn, BOOLEANS, CONCURRENCY, Concurrency, ConfigError, DAY, HOUR, LOG_FORMATS,
    LogFormat, MAX_HELD_BYTES, OPERATIONS, Operation, QUEUE_URL_FIX, UnknownFields, token,
};
use crate::secret::ApiToken;
use crate::source::envelope::{ENVELOPES, Envelope};
use crate::source::mapping::{Mapping, parse_entry};

macro_rules! settings_table {
    ($(
        $(#[$arg:meta])*
        $field:ident: $ty:ty = $flag:literal $env:literal [$($default:tt)*] $help:literal $parse:tt;
    )*) => {
        /// The `run` and `check` flags. Each value is also read from its environment variable.
        /// `Debug` is written by hand: it never prints the token.
        #[derive(Clone, Default, Args)]
        pub struct RunArgs {
            /// TOML file with any of the settings below (keys are the flag names with `_`).
            #[arg(long, env = "WORKER_CONFIG")]
            pub config: Option<PathBuf>,
            /// A record field and where its value comes from: NAME=/json/pointer (RFC 6901, into
            /// the body after --envelope) or NAME=attribute:NAME (a message attribute). Repeat it
            /// for each field (in the environment, separate them with commas; in TOML, a
            /// [fields] table). With a mapping the record is exactly the mapped fields.
            #[arg(
                long = "field",
                env = "RECORDS_FIELDS",
                value_name = "NAME=SOURCE",
                value_delimiter = ',',
            )]
            pub field: Vec<String>,
            $(
                #[arg(
                    long = &$flag[2..],
                    env = $env,
                    help = settings_table!(@help $help [$($default)*]),
                    value_parser = settings_table!(@choices $parse),
                )]
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
            /// The `[fields]` table: field = "source", as `--field` takes them.
            pub fields: Option<toml::Table>,
        }

        impl FileSettings {
            /// The keys a settings file may hold.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field),)* "fields"];
        }

        impl std::fmt::Debug for RunArgs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("RunArgs");
                out.field("config", &self.config);
                out.field("field", &self.field);
                $( out.field(stringify!($field), &redacted(stringify!($field), &self.$field)); )*
                out.finish()
            }
        }

        impl std::fmt::Debug for FileSettings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("FileSettings");
                $( out.field(stringify!($field), &redacted(stringify!($field), &self.$field)); )*
                out.field("fields", &self.fields);
                out.finish()
            }
        }

        /// Each setting's text after precedence, with its names and its default.
        pub struct Raw {
            $( pub $field: Setting, )*
            /// The field mapping, one `NAME=SOURCE` a line: the flags' (or the environment's)
            /// if any were given, else the TOML `[fields]` table's.
            pub fields: Setting,
        }

        impl Raw {
            pub fn merge(args: RunArgs, file: FileSettings) -> Self {
                let fields = if args.field.is_empty() {
                    file.fields.map(|table| {
                        table
                            .into_iter()
                            .map(|(name, source)| format!("{name}={}", scalar(Some(source)).unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                } else {
                    Some(args.field.join("\n"))
                };
                Self {
                    $( $field: Setting {
                        flag: $flag,
                        env: $env,
                        key: stringify!($field),
                        default: settings_table!(@default [$($default)*]),
                        text: args.$field.or_else(|| scalar(file.$field)),
                    }, )*
                    fields: Setting {
                        flag: "--field",
                        env: "RECORDS_FIELDS",
                        key: "fields",
                        default: None,
                        text: fields,
                    },
                }
            }
        }

        /// The resolved settings of `run`, one field a row of the table. `Debug` never shows the
        /// token (`ApiToken` redacts itself).
        #[derive(Clone, Debug)]
        pub struct Settings {
            $( #[doc = $help] pub $field: $ty, )*
            /// `--field`: where each record field comes from; empty, the body is the record.
            pub fields: Mapping,
        }

        impl Settings {
            /// Each row's value in table order (a row may read the rows above it), then the rules
            /// between settings.
            pub(super) fn parse(raw: &Raw) -> Result<Self, ConfigError> {
                $( let $field: $ty = settings_table!(@parse (&raw.$field) $parse)?; )*
                let fields = field_mapping(&raw.fields)?;
                let settings = Self { $($field,)* fields };
                settings.validate(raw)?;
                Ok(settings)
            }
        }
    };
    (@help $help:literal [value $default:literal]) => { concat!($help, " [default: ", $default, "]") };
    (@help $help:literal [shown $default:literal]) => { concat!($help, " [default: ", $default, "]") };
    (@help $help:literal [required]) => { $help };
    (@default [value $default:literal]) => { Some($default) };
    (@default [shown $default:literal]) => { None };
    (@default [required]) => { None };
    (@choices [choice $table:ident $fix:literal]) => { Choices::of($table) };
    (@choices [choice { $($name:literal => $value:expr),+ $(,)? } $fix:literal]) => {
        Choices::of(&[$(($name, $value)),+])
    };
    (@choices ($($parse:tt)*)) => { Choices::free() };
    (@parse ($setting:expr) [choice $table:ident $fix:literal]) => {
        $setting.parse(one_of($table), $fix)
    };
    (@parse ($setting:expr) [choice { $($name:literal => $value:expr),+ $(,)? } $fix:literal]) => {
        $setting.parse(one_of(&[$(($name, $value)),+]), $fix)
    };
    (@parse ($setting:expr) (|$s:ident| $body:expr)) => {{
        let $s: &Setting = $setting;
        $body
    }};
}

/// The `--field` entries (one a line in the raw text) as a mapping; an error names the entry.
fn field_mapping(setting: &Setting) -> Result<Mapping, ConfigError> {
    let Some(text) = setting.given() else {
        return Ok(Mapping::default());
    };
    let entries = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| parse_entry(line).map_err(|problem| setting.invalid(line, problem, FIELD_FIX)))
        .collect::<Result<Vec<_>, _>>()?;
    Mapping::new(entries).map_err(|problem| setting.invalid(&text, problem, FIELD_FIX))
}

const FIELD_FIX: &str = "write each as NAME=SOURCE, where SOURCE is a JSON Pointer such as \
                         /user/email or attribute:NAME, e.g. --field email=/user/email";

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
pub struct Choices(Option<Vec<&'static str>>);

impl Choices {
    pub fn of<T>(table: &'static [(&'static str, T)]) -> Self {
        Self(Some(table.iter().map(|(name, _)| *name).collect()))
    }

    /// A setting of free text: no choices to list.
    pub fn free() -> Self {
        Self(None)
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
        let names = self.0.as_ref()?;
        Some(Box::new(names.iter().map(|name| PossibleValue::new(*name))))
    }
}

fn scalar(value: Option<toml::Value>) -> Option<String> {
    value.map(|value| match value {
        toml::Value::String(text) => text,
        other => other.to_string(),
    })
}

// `value D`: D is parsed when nothing is set. `shown D`: the default is computed or absent, and
// D says what it is. `required`: there is none. The last part turns the text into the value:
// `[choice TABLE "fix"]` or `[choice {"name" => VALUE, …} "fix"]` for an enumerated setting (its
// choices are listed in `--help`), or
// `(|setting| …)`, which may read the values of the rows above it.
settings_table! {
    queue_url: String = "--queue-url" "SQS_QUEUE_URL" [required]
        "Source queue URL (standard or FIFO)."
        (|s| s.url("set it to the source queue's URL", QUEUE_URL_FIX));
    dlq_url: String = "--dlq-url" "SQS_DLQ_URL" [required]
        "Where rejected rows and poison messages go."
        (|s| s.url("set it to the URL of the queue that takes rejected messages", QUEUE_URL_FIX));
    api_url: String = "--api-url" "RECORDS_API_URL" [required]
        "Records API base URL, e.g. http://127.0.0.1:8080/public/v1."
        (|s| s.url(
            "set it to the Records API base, e.g. http://127.0.0.1:8080/public/v1",
            "write it like https://api.example.com/public/v1",
        ));
    api_token_file: Option<PathBuf> = "--api-token-file" "RECORDS_API_TOKEN_FILE" [required]
        "File holding the bearer token."
        (|s| Ok::<_, ConfigError>(s.given().map(PathBuf::from)));
    #[arg(hide_env_values = true)]
    api_token: ApiToken = "--api-token" "RECORDS_API_TOKEN" [required]
        "Bearer token for the Records API (never logged). Prefer --api-token-file."
        (|s| token(s.text.clone(), api_token_file.clone()));
    object: String = "--object" "RECORDS_OBJECT" [required]
        "Object to write, e.g. profiles."
        (|s| s.required("name the object to write, e.g. profiles"));
    operation: Operation = "--operation" "RECORDS_OPERATION" [value "upsert"]
        "upsert or append."
        [choice OPERATIONS "use upsert or append"];
    envelope: Envelope = "--envelope" "RECORDS_ENVELOPE" [value "none"]
        "What wraps the record in a message body: none (the body is the record), sns (an SNS \
         notification without raw delivery: the record is its Message) or eventbridge (an \
         EventBridge event: the record is its detail). A body that is not the envelope goes to \
         the DLQ as not_an_envelope."
        [choice ENVELOPES "use none, sns (a subscription without raw delivery) or eventbridge"];
    message_attributes: Vec<String> = "--message-attributes" "SQS_MESSAGE_ATTRIBUTES"
        [value "All"]
        "The message attributes each receive asks for: All, or a comma-separated list of \
         names (a name may end in .* for a prefix). They are kept on DLQ copies, which redrive \
         restores, and --field can map them."
        (|s| s.parse(
            |text| {
                let names: Vec<String> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect();
                match names.len() {
                    0 => Err("names no attribute".to_owned()),
                    1..=100 => Ok(names),
                    _ => Err("names more than 100 attributes".to_owned()),
                }
            },
            "use All, or attribute names separated by commas, e.g. tenant,trace.*",
        ));
    unknown_fields: UnknownFields = "--unknown-fields" "RECORDS_UNKNOWN_FIELDS" [value "reject"]
        "A body's field that the object's schema does not know: reject sends the message to the \
         DLQ as unknown_field; drop leaves the field out of the record and counts it \
         (sbw_unknown_fields_dropped_total). It applies to mapped records too."
        [choice {"reject" => UnknownFields::Reject, "drop" => UnknownFields::Drop}
            "use reject (to the DLQ) or drop (leave the field out)"];
    match_key: String = "--match-key" "RECORDS_MATCH_KEY" [value "email"]
        "matchKey for upserts."
        (|s| s.parse(
            |text| match text.trim() {
                "" => Err("is empty".to_owned()),
                key => Ok(key.to_owned()),
            },
            "name the object's match key, e.g. email",
        ));
    batch_max_records: usize = "--batch-max-records" "BATCH_MAX_RECORDS" [value "1000"]
        "Flush at this many records, 1 to 10000."
        (|s| s.parse(count(1, MAX_BATCH_RECORDS), "use a number from 1 to 10000"));
    batch_max_bytes: usize = "--batch-max-bytes" "BATCH_MAX_BYTES" [value "5MiB"]
        "Flush before the encoded body passes this, at most 10MB."
        (|s| s.parse(
            size_within(1024, MAX_BODY_BYTES),
            "use a size from 1KiB to 10MB (10485760 bytes), e.g. 5MiB",
        ));
    batch_max_wait: Duration = "--batch-max-wait" "BATCH_MAX_WAIT" [value "5s"]
        "Send a batch once its oldest message is this old, as soon as it has a slot (a free \
         in-flight place and a --rate-limit token); until the slot comes it keeps filling."
        (|s| s.parse(duration_up_to(HOUR), "use a duration from 1ms to 1h, such as 500ms or 5s"));
    pollers: usize = "--pollers" "SQS_POLLERS" [value "4"]
        "Concurrent long-poll loops."
        (|s| s.parse(count(1, 256), "use a number from 1 to 256"));
    worker_threads: usize = "--worker-threads" "WORKER_THREADS" [value "1"]
        "Threads that run the worker's tasks. At about 6 CPU-seconds per 100,000 messages one \
         thread has room for some 15,000 a second; a second thread costs CPU in hand-offs and \
         only helps past that."
        (|s| s.parse(
            count(1, 64),
            "use a number from 1 to 64 (1 carries about 15,000 messages a second)",
        ));
    max_in_flight: usize = "--max-in-flight" "MAX_IN_FLIGHT_BATCHES" [value "4"]
        "Batches submitted or being polled at once; with --concurrency adaptive, the ceiling of \
         the adaptive limit."
        (|s| s.parse(count(1, 1024), "use a number from 1 to 1024"));
    rate_limit: Vec<Limit> = "--rate-limit" "RECORDS_RATE_LIMIT" [value "none"]
        "The API's quota for batch calls: one limit or several, comma-separated, each N/PERIOD \
         (s, min, h, day, or a duration such as 15min) with an optional :BURST of banked calls, \
         e.g. 1.5, 100/min or 100/min:5,2000/day. Each is a token bucket, paced 2% under the \
         stated rate."
        (|s| s.parse(
            parse_limits,
            "write one limit or several, comma-separated, such as 1.5, 100/min or \
             100/min,2000/day; add :BURST to bank calls (2000/day:50); from 1/week to 1000000/s",
        ));
    concurrency: Concurrency = "--concurrency" "RECORDS_CONCURRENCY" [value "adaptive"]
        "adaptive: in-flight batches follow the API (AIMD: grow while answers stay fast, halve \
         on 429, 503, 504, timeouts and slow answers), at most --max-in-flight; fixed: always \
         --max-in-flight."
        [choice CONCURRENCY "use adaptive (AIMD up to --max-in-flight) or fixed (always --max-in-flight)"];
    state_dir: Option<PathBuf> = "--state-dir" "STATE_DIR" [shown "none, buckets start full"]
        "Directory where the local --rate-limit budget is saved as each call is paid for, so \
         that a restart does not start with a full bucket. One worker per directory (a second \
         exits 2); not used with --budget-queue."
        (|s| Ok::<_, ConfigError>(s.given().map(PathBuf::from)));
    budget_queue: Option<String> = "--budget-queue" "BUDGET_QUEUE_URL"
        [shown "none, each replica spends its own"]
        "SQS FIFO queue that holds a --rate-limit budget shared by every replica (no new \
         service; --budget-table is the recommended store)."
        (|s| Ok::<_, ConfigError>(s.given()));
    budget_table: Option<String> = "--budget-table" "BUDGET_TABLE"
        [shown "none, each replica spends its own"]
        "DynamoDB table (partition key `limit`, a string) that holds a --rate-limit budget \
         shared by every replica: one item per limit, spent with conditional writes. Its \
         endpoint comes from the AWS chain (AWS_ENDPOINT_URL_DYNAMODB)."
        (|s| Ok::<_, ConfigError>(s.given()));
    ack_on: AckOn = "--ack-on" "ACK_ON" [value "accepted"]
        "accepted (delete after the 202) or completed (delete after the job ends)."
        [choice ACK_ON "use accepted or completed"];
    job_timeout: Duration = "--job-timeout" "JOB_TIMEOUT" [value "10m"]
        "How long to poll a job before its rows go to the DLQ as job_timeout. On a FIFO queue \
         the worker keeps following the job past it, with a warning, and its groups wait."
        (|s| s.parse(duration_up_to(7 * DAY), "use a duration from 1s to 7 days, such as 10m"));
    visibility_timeout: Option<Duration> = "--visibility-timeout" "SQS_VISIBILITY_TIMEOUT"
        [shown "the queue's"]
        "Visibility given on receive."
        (|s| s.optional(
            |text| {
                let visibility = parse_duration(text)?;
                match visibility.as_secs() {
                    1..=43_200 => Ok(visibility),
                    _ => Err("SQS takes 1 s to 12 h".into()),
                }
            },
            "use whole seconds from 1s to 12h, or leave it unset to use the queue's",
        ));
    drain_timeout: Duration = "--drain-timeout" "DRAIN_TIMEOUT" [value "25s"]
        "On SIGTERM/SIGINT: how long to flush and finish before exiting."
        (|s| s.parse(
            |text| match parse_duration(text)? {
                drain if drain <= 12 * HOUR => Ok(drain),
                _ => Err("must be at most 12h".into()),
            },
            "use a duration from 0s to 12h, such as 25s",
        ));
    listen: SocketAddr = "--listen" "WORKER_LISTEN" [value "127.0.0.1:9090"]
        "Address for /healthz, /readyz and /metrics (see docs/security.md before binding it \
         beyond loopback)."
        (|s| s.parse(
            |text| text.trim().parse::<SocketAddr>().map_err(|e| e.to_string()),
            "write it as IP:PORT, e.g. 127.0.0.1:9090 (port 0 picks a free one)",
        ));
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    allow_insecure_http: bool = "--allow-insecure-http" "RECORDS_ALLOW_INSECURE_HTTP"
        [value "false"]
        "Accept an http:// --api-url on a host outside loopback (localhost, 127.0.0.0/8, ::1); \
         the token then crosses the network in clear text. Without it such a URL is refused."
        [choice BOOLEANS "use true or false (the flag alone means true)"];
    log_format: LogFormat = "--log-format" "LOG_FORMAT" [value "auto"]
        "json, text, or auto: json when stderr is not a terminal, else text."
        [choice LOG_FORMATS "use json, text or auto"];
    request_timeout: Duration = "--request-timeout" "RECORDS_REQUEST_TIMEOUT" [value "30s"]
        "Timeout of one Records API request."
        (|s| s.parse(duration_up_to(HOUR), "use a duration from 1ms to 1h, such as 30s"));
    retry_attempts: usize = "--retry-attempts" "RECORDS_RETRY_ATTEMPTS" [value "8"]
        "Attempts per batch request before its messages are released to SQS (a FIFO batch is \
         held and sent again, see --release-backoff)."
        (|s| s.parse(count(1, 100), "use a number from 1 to 100"));
    auth_retry: Duration = "--auth-retry" "RECORDS_AUTH_RETRY" [value "30s"]
        "Pause after a 401, 403, 404 or 405 before the held batch is sent again; receiving \
         pauses as long (and sending too, on 401/403)."
        (|s| s.parse(duration_up_to(HOUR), "use a duration from 1ms to 1h, such as 30s"));
    max_held_bytes: usize = "--max-held-bytes" "MAX_HELD_BYTES"
        [shown "(max-in-flight + 1) x batch-max-bytes, at least 4MiB"]
        "Message bodies held at most (buffered and in flight) before receiving waits."
        (|s| s.parse_or(
            &((max_in_flight + 1) * batch_max_bytes)
                .clamp(4 << 20, MAX_HELD_BYTES)
                .to_string(),
            size_within(1024 * 1024, MAX_HELD_BYTES),
            "use a size from 1MiB to 4GiB, e.g. 64MiB",
        ));
    release_backoff: Duration = "--release-backoff" "RELEASE_BACKOFF" [value "10s"]
        "Visibility of a message released for a retry, doubled per receive up to 15m; receiving \
         pauses as long while the API is out. A FIFO batch is held instead, with the same \
         pauses, and released after 8 of them."
        (|s| s.parse(duration_up_to(HOUR), "use a duration from 1s to 1h, such as 10s"));
    receive_wait: Duration = "--receive-wait" "SQS_RECEIVE_WAIT" [value "20s"]
        "Long-poll wait of one receive, 1s to 20s (whole seconds). Keep 20s on AWS; moto's \
         server keeps a FIFO group locked for a whole long poll that began while the group was \
         in flight, so use 1s against it."
        (|s| s.parse(
            |text| {
                let wait = duration_up_to(Duration::from_secs(20))(text)?;
                Ok(Duration::from_secs(wait.as_secs().max(1)))
            },
            "use a duration from 1s to 20s, such as 20s",
        ));
}
