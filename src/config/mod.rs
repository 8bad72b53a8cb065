//! Settings for `sqs-batch-worker run`: precedence (flag, then environment, then TOML file, then
//! default) and validation. Every error names the setting in all three spellings and the fix.

pub mod cli;
mod file;
mod setting;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use records_contract::process::Logs;

use crate::secret::ApiToken;
use table::Raw;
pub use table::{FileSettings, RunArgs, Settings};

/// The largest `--max-held-bytes`: what one semaphore acquisition can count.
pub(crate) const MAX_HELD_BYTES: usize = u32::MAX as usize;
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

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
    #[error("--config {path}: cannot read it: {source}. Fix: point it at a readable TOML file")]
    FileUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `problem` says where and what kind of mistake, never the line's text (the file may hold
    /// the token), which is why the TOML error itself is not kept.
    #[error("--config {path}: {problem}. Fix: correct the file (keys are the flag names with '_')")]
    File { path: String, problem: String },
    #[error(
        "--api-token-file {path}: cannot read it: {}. Fix: point it at a readable file holding \
         the token", source.kind()
    )]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
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

/// What becomes of a body's field that the object's schema does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownFields {
    /// The message goes to the DLQ as `unknown_field`.
    Reject,
    /// The field is left out of the record, and counted.
    Drop,
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
    /// JSON when stderr is not a terminal, else text.
    Auto,
}

pub(crate) const QUEUE_URL_FIX: &str = "give the queue URL that CreateQueue or the console shows";
pub(crate) const OPERATIONS: &[(&str, Operation)] =
    &[("upsert", Operation::Upsert), ("append", Operation::Append)];
pub(crate) const ACK_ON: &[(&str, AckOn)] = &[
    ("accepted", AckOn::Accepted),
    ("completed", AckOn::Completed),
];
pub(crate) const CONCURRENCY: &[(&str, Concurrency)] = &[
    ("adaptive", Concurrency::Adaptive),
    ("fixed", Concurrency::Fixed),
];
pub(crate) const BOOLEANS: &[(&str, bool)] = &[("true", true), ("false", false)];
pub(crate) const LOG_FORMATS: &[(&str, LogFormat)] = &[
    ("json", LogFormat::Json),
    ("text", LogFormat::Text),
    ("auto", LogFormat::Auto),
];

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
        Self::parse(&Raw::merge(args, file))
    }

    /// The rules between settings, after every row has its value.
    fn validate(&self, raw: &Raw) -> Result<(), ConfigError> {
        self.validate_attribute_sources(raw)?;
        if self.dlq_url == self.queue_url {
            return Err(raw.dlq_url.invalid(
                &self.dlq_url,
                "it is the source queue itself",
                "use a separate queue for rejects",
            ));
        }
        if sends_token_in_clear(&self.api_url) && !self.allow_insecure_http {
            return Err(raw.api_url.invalid(
                &self.api_url,
                "it is plain http:// to a host outside loopback, so the bearer token would cross \
                 the network in clear text",
                "use https://, or add --allow-insecure-http (env RECORDS_ALLOW_INSECURE_HTTP) if \
                 the network between them is trusted",
            ));
        }
        if let Some(url) = &self.budget_queue {
            self.validate_budget_queue(raw, url)?;
        }
        if let Some(table) = &self.budget_table {
            self.validate_budget_table(raw, table)?;
        }
        Ok(())
    }

    /// The shared budget's table: one store at a time, and something to share.
    fn validate_budget_table(&self, raw: &Raw, table: &str) -> Result<(), ConfigError> {
        if self.budget_queue.is_some() {
            return Err(raw.budget_table.invalid(
                table,
                "a budget is shared through one store, and --budget-queue is set too",
                "keep --budget-table (recommended) and drop --budget-queue, or the other way round",
            ));
        }
        let valid = (3..=255).contains(&table.len())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(raw.budget_table.invalid(
                table,
                "not a DynamoDB table name",
                "give the table's name (3 to 255 of a-z, A-Z, 0-9, _, - and .), not its ARN",
            ));
        }
        if self.rate_limit.is_empty() {
            return Err(raw.budget_table.invalid(
                table,
                "a shared budget needs something to share",
                "set --rate-limit too, e.g. 100/min:5",
            ));
        }
        Ok(())
    }

    /// The shared budget's queue: FIFO, and only with limits whose tokens live long enough to
    /// share.
    fn validate_budget_queue(&self, raw: &Raw, url: &str) -> Result<(), ConfigError> {
        if !is_fifo(url) {
            return Err(raw.budget_queue.invalid(
                url,
                "the shared budget needs a FIFO queue (its deduplication mints each token once)",
                "create a FIFO queue for the tokens (deploy/cloudformation/queues.yaml makes one \
                 with SharedBudget=true) and give its URL",
            ));
        }
        if self.rate_limit.is_empty() {
            return Err(raw.budget_queue.invalid(
                url,
                "a shared budget needs something to share",
                "set --rate-limit too, e.g. 100/min:5",
            ));
        }
        if let Some(limit) = self.rate_limit.iter().find(|l| l.burst.unwrap_or(1) < 2) {
            return Err(raw.rate_limit.invalid(
                &limit.to_string(),
                "with --budget-queue each limit needs a burst of at least 2: with 1, a \
                 token is good for too short a time to pass between replicas",
                format!("add :2 or more, e.g. {limit}:2, if the API's own bucket allows it"),
            ));
        }
        Ok(())
    }

    /// Every `attribute:NAME` of `--field` is asked for on receive; with `--envelope sns` it may
    /// come from the notification instead, so any list goes.
    fn validate_attribute_sources(&self, raw: &Raw) -> Result<(), ConfigError> {
        if self.envelope == crate::source::envelope::Envelope::Sns {
            return Ok(());
        }
        let asked = &self.message_attributes;
        let received = |name: &str| {
            asked.iter().any(|entry| match entry.strip_suffix('*') {
                _ if entry == "All" || entry == ".*" => true,
                Some(prefix) if prefix.ends_with('.') => name.starts_with(prefix),
                _ => entry == name,
            })
        };
        match self.fields.attribute_names().find(|name| !received(name)) {
            Some(name) => Err(raw.message_attributes.invalid(
                &asked.join(","),
                format!("--field reads attribute:{name}, which no receive asks for"),
                format!("add {name} to the list, or use All"),
            )),
            None => Ok(()),
        }
    }

    /// How this run's log lines are written.
    pub fn logs(&self) -> Logs {
        let json = match self.log_format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        Logs { json, ..Logs::TEXT }
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

pub(crate) fn token(
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<ApiToken, ConfigError> {
    let token = match (inline, file) {
        (Some(token), _) => token,
        (None, Some(path)) => {
            std::fs::read_to_string(&path).map_err(|source| ConfigError::TokenFile {
                path: path.display().to_string(),
                source,
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
            ("--unknown-fields", vec!["reject", "drop"]),
            ("--envelope", vec!["none", "sns", "eventbridge"]),
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

    /// `--field` is repeated (the environment separates with commas) and replaces the TOML
    /// `[fields]` table as a whole; a wrong entry names the setting, the entry and the fix.
    #[test]
    fn the_field_mapping_comes_from_flags_or_the_fields_table() {
        use clap::Parser;
        let file: FileSettings = toml::from_str(
            "envelope = \"eventbridge\"\n[fields]\ntier = \"attribute:tier\"\nemail = \"/user/email\"\n",
        )
        .unwrap();
        let from_file = Settings::from_parts(base(), file).unwrap();
        assert_eq!(from_file.envelope.name(), "eventbridge");
        // In the file's order: the record's fields come in the mapping's order.
        assert_eq!(
            from_file.fields.to_string(),
            "tier ← attribute:tier, email ← /user/email"
        );
        let file: FileSettings = toml::from_str("[fields]\nemail = \"/user/email\"\n").unwrap();
        let mut args = base();
        args.field = vec!["email=/u/e".into(), "tier=/p/t".into()];
        let from_flags = Settings::from_parts(args, file).unwrap();
        assert_eq!(from_flags.fields.to_string(), "email ← /u/e, tier ← /p/t");
        assert!(
            Settings::from_parts(base(), FileSettings::default())
                .unwrap()
                .fields
                .is_empty()
        );
        for wrong in ["email", "email=user/email", "a=/x\na=/y"] {
            let mut args = base();
            args.field = vec![wrong.into()];
            let error = Settings::from_parts(args, FileSettings::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--field (env RECORDS_FIELDS, TOML fields)")
                    && error.contains("Fix:"),
                "{error}"
            );
        }
        // An attribute the receives do not ask for could never be mapped.
        let mut args = base();
        args.field = vec!["email=/e".into(), "tier=attribute:plan.tier".into()];
        args.message_attributes = Some("tenant".into());
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--message-attributes") && error.contains("attribute:plan.tier"),
            "{error}"
        );
        for covering in ["All", "tenant,plan.tier", "plan.*"] {
            let mut args = base();
            args.field = vec!["tier=attribute:plan.tier".into()];
            args.message_attributes = Some(covering.into());
            assert!(
                Settings::from_parts(args, FileSettings::default()).is_ok(),
                "{covering}"
            );
        }
        // Flags and the environment separate entries with commas.
        let argv = [
            "sqs-batch-worker",
            "run",
            "--field",
            "email=/u/e,tier=/p/t",
            "--field",
            "score=/s",
        ];
        let cli = super::cli::Cli::try_parse_from(argv).expect("parses");
        let super::cli::Command::Run(parsed) = cli.command else {
            unreachable!("the argv names `run`")
        };
        assert_eq!(parsed.field, ["email=/u/e", "tier=/p/t", "score=/s"]);
        let mut args = base();
        args.envelope = Some("auto".into());
        let error = Settings::from_parts(args, FileSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--envelope") && error.contains("none, sns, eventbridge"),
            "{error}"
        );
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
