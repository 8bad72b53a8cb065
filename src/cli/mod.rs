//! The subcommands: `run` (the worker, `crate::run`) and the operator commands `check`,
//! `enqueue`, `redrive` and `healthcheck`. `Invocation` is a parsed command line with its
//! settings resolved; `execute` runs it and says how the process exits.

pub mod check;
pub mod docs;
pub mod enqueue;
pub mod exposure;
pub mod healthcheck;
pub mod redrive;

use std::process::ExitCode;

use records_contract::process::shutdown_signal;

use crate::config::cli::{Command, CompletionsArgs, EnqueueArgs, HealthcheckArgs, RedriveArgs};
use crate::config::{ConfigError, Settings};

/// A command line ready to run: `run` and `check` carry resolved settings.
pub enum Invocation {
    Run(Box<Settings>),
    Check(Box<Settings>, Option<check::Sample>),
    Enqueue(EnqueueArgs),
    Redrive(RedriveArgs),
    Healthcheck(HealthcheckArgs),
    Completions(CompletionsArgs),
    Man,
}

/// `--sample-attribute NAME=VALUE`, each.
fn sample_attributes(entries: &[String]) -> Result<Vec<(String, String)>, String> {
    entries
        .iter()
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| {
                    format!(
                        "check: --sample-attribute {entry:?} is not NAME=VALUE. Fix: write it \
                         like tenant=acme"
                    )
                })
        })
        .collect()
}

impl Invocation {
    /// Resolves the settings of `run` and `check`; the error names the command and the setting.
    pub fn resolve(command: Command) -> Result<Self, String> {
        let settings = |args, who: &str| {
            Settings::resolve(args)
                .map(Box::new)
                .map_err(|error: ConfigError| format!("{who}: configuration error: {error}"))
        };
        Ok(match command {
            Command::Run(args) => Invocation::Run(settings(args, "sqs-batch-worker")?),
            Command::Check(args) => {
                let sample = match args.sample {
                    Some(path) => Some(check::Sample {
                        path,
                        attributes: sample_attributes(&args.sample_attribute)?,
                    }),
                    None => None,
                };
                Invocation::Check(settings(args.run, "check")?, sample)
            }
            Command::Enqueue(args) => Invocation::Enqueue(args),
            Command::Redrive(args) => Invocation::Redrive(args),
            Command::Healthcheck(args) => Invocation::Healthcheck(args),
            Command::Completions(args) => Invocation::Completions(args),
            Command::Man => Invocation::Man,
        })
    }

    /// The runtime's worker threads: `--worker-threads` for `run`, the machine's cores otherwise.
    pub fn threads(&self) -> Option<usize> {
        match self {
            Invocation::Run(settings) => Some(settings.worker_threads),
            _ => None,
        }
    }

    pub async fn execute(self) -> ExitCode {
        match self {
            Invocation::Run(settings) => run_worker(*settings).await,
            Invocation::Check(settings, sample) => {
                check::check(&settings, sample.as_ref(), crate::sqs::connect().await)
                    .await
                    .print()
            }
            Invocation::Enqueue(args) => {
                let sent = enqueue::enqueue(&args, crate::sqs::connect().await).await;
                finish("enqueue", sent, |sent| {
                    format!("sent {sent} messages to {}", args.queue_url)
                })
            }
            Invocation::Redrive(args) => {
                let done = redrive::redrive(&args, crate::sqs::connect().await).await;
                finish("redrive", done, |done| {
                    format!(
                        "moved {} messages from {} to {}; {} left in the DLQ (other reasons)",
                        done.moved, args.from, args.to, done.skipped
                    )
                })
            }
            Invocation::Completions(args) => docs::completions(args.shell),
            Invocation::Man => docs::man(),
            Invocation::Healthcheck(args) => finish(
                "healthcheck",
                healthcheck::healthcheck(&args.listen).await,
                |()| String::new(),
            ),
        }
    }
}

async fn run_worker(settings: Settings) -> ExitCode {
    settings.logs().init();
    match crate::run(settings, shutdown_signal()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            let kind = if code == 2 {
                "configuration error"
            } else {
                "fatal error"
            };
            tracing::error!(problem = %error, "{kind}");
            match code {
                2 => eprintln!("sqs-batch-worker: {kind}: {error}"),
                _ => eprintln!("sqs-batch-worker: {error}"),
            }
            ExitCode::from(code)
        }
    }
}

/// Reports an operator command's outcome on stderr: its summary, or the error and exit 1.
fn finish<T, E: std::fmt::Display>(
    who: &str,
    outcome: Result<T, E>,
    summary: impl FnOnce(T) -> String,
) -> ExitCode {
    match outcome {
        Ok(done) => {
            let line = summary(done);
            if !line.is_empty() {
                eprintln!("{who}: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{who}: {error}");
            ExitCode::FAILURE
        }
    }
}
