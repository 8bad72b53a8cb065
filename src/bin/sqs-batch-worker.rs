//! `sqs-batch-worker`: parse the config, start telemetry, `run(config, shutdown)`.

use std::process::ExitCode;

// glibc malloc was the largest single cost in the worker's profile (~18% of its CPU: every SQS
// response and every record is a burst of small allocations); mimalloc handles that pattern far
// more cheaply. `--features system-allocator` keeps glibc's, which heap profilers such as heaptrack
// can follow (they cannot see inside mimalloc).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use sqs_batch_worker::cli::{check, enqueue, healthcheck, redrive};
use sqs_batch_worker::config::Settings;
use sqs_batch_worker::config::cli::{Cli, Command, EnqueueArgs, RedriveArgs, RunArgs};
use sqs_batch_worker::telemetry::logging;
use sqs_batch_worker::{RunError, run};

fn main() -> ExitCode {
    keep_the_heap_in_small_pages();
    match Cli::parse().command {
        Command::Run(args) => match resolve(args, "sqs-batch-worker") {
            Ok(settings) => {
                let threads = settings.worker_threads;
                block_on(Some(threads), run_worker(settings))
            }
            Err(code) => code,
        },
        Command::Enqueue(args) => block_on(None, enqueue_messages(args)),
        Command::Check(args) => match resolve(args, "check") {
            Ok(settings) => block_on(None, check_settings(settings)),
            Err(code) => code,
        },
        Command::Redrive(args) => block_on(None, redrive_messages(args)),
        Command::Healthcheck(args) => block_on(None, async move {
            match healthcheck::healthcheck(&args.listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("healthcheck: {problem}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

/// Runs `work` on a tokio runtime of `threads` workers (the machine's cores when None).
fn block_on(threads: Option<usize>, work: impl Future<Output = ExitCode>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => {
            eprintln!("sqs-batch-worker: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Transparent huge pages make the allocator's heap resident 2 MiB at a time: the worker's RSS
/// fell from 62 to 37 MiB without them, and its CPU with it (fewer pages to clear). Linux only;
/// elsewhere, and if the kernel refuses, nothing changes.
fn keep_the_heap_in_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes no pointers and only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

async fn run_worker(settings: Settings) -> ExitCode {
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

async fn enqueue_messages(args: EnqueueArgs) -> ExitCode {
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

async fn check_settings(settings: Settings) -> ExitCode {
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

async fn redrive_messages(args: RedriveArgs) -> ExitCode {
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
