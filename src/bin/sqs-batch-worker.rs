//! `sqs-batch-worker`: parse the config, start telemetry, `run(config, shutdown)`.

use std::process::ExitCode;

// glibc malloc was the largest single cost in the worker's profile (~18% of its CPU: every SQS
// response and every record is a burst of small allocations); mimalloc handles that pattern far
// more cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use sqs_batch_worker::cli::{check, enqueue, healthcheck, redrive};
use sqs_batch_worker::config::Settings;
use sqs_batch_worker::config::cli::{Cli, Command, RunArgs};
use sqs_batch_worker::telemetry::logging;
use sqs_batch_worker::{RunError, run};

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => {
            let settings = match resolve(args, "sqs-batch-worker") {
                Ok(settings) => settings,
                Err(code) => return code,
            };
            logging::init(settings.log_format);
            match run(settings, shutdown_signal()).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(RunError::Config(problem)) => {
                    tracing::error!(problem, "configuration error");
                    eprintln!("sqs-batch-worker: configuration error: {problem}");
                    ExitCode::from(2)
                }
                Err(RunError::Fatal(problem)) => {
                    tracing::error!(problem, "fatal error");
                    eprintln!("sqs-batch-worker: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enqueue(args) => {
            let client = sqs_batch_worker::sqs::connect().await;
            match enqueue::enqueue(&args, client).await {
                Ok(sent) => {
                    eprintln!("enqueue: sent {sent} messages to {}", args.queue_url);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("enqueue: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(args) => {
            let settings = match resolve(args, "check") {
                Ok(settings) => settings,
                Err(code) => return code,
            };
            let client = sqs_batch_worker::sqs::connect().await;
            let report = check::check(&settings, client).await;
            for line in &report.lines {
                println!("check: {line}");
            }
            for warning in &report.warnings {
                println!("check: WARNING: {warning}");
            }
            for problem in &report.problems {
                println!("check: PROBLEM: {problem}");
            }
            println!(
                "check: {} problem(s), {} warning(s)",
                report.problems.len(),
                report.warnings.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Redrive(args) => {
            let client = sqs_batch_worker::sqs::connect().await;
            match redrive::redrive(&args, client).await {
                Ok(done) => {
                    eprintln!(
                        "redrive: moved {} messages from {} to {}; {} left in the DLQ (other reasons)",
                        done.moved, args.from, args.to, done.skipped
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("redrive: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck(args) => match healthcheck::healthcheck(&args.listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(problem) => {
                eprintln!("healthcheck: {problem}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The settings, or exit code 2 after saying which setting is wrong and how to fix it.
fn resolve(args: RunArgs, who: &str) -> Result<Settings, ExitCode> {
    Settings::resolve(args).map_err(|error| {
        eprintln!("{who}: configuration error: {error}");
        ExitCode::from(2)
    })
}

/// Resolves on the first SIGTERM or SIGINT.
/// SIGTERM or SIGINT. The handlers are installed now, not when the future is first polled (after
/// start-up), so a signal during start-up ends the run with a clean drain instead of killing the
/// process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
            match stream {
                Some(mut stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {}
            () = wait(interrupt) => {}
        }
    }
}
