//! The command line: the subcommands and their arguments. The `run` flags come from the settings
//! table (`config/table.rs`).

use clap::{Args, Parser, Subcommand};

pub use super::RunArgs;

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
    Check(CheckArgs),
    /// Move DLQ messages back to a queue after a fix: send, then delete, entry by entry.
    Redrive(RedriveArgs),
    /// Print a shell completion script, e.g. `completions bash > /etc/bash_completion.d/sqs-batch-worker`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `man > /usr/local/share/man/man1/sqs-batch-worker.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A message body to put through --envelope and --field: prints the record it makes, or the
    /// DLQ reason it would get.
    #[arg(long, value_name = "FILE")]
    pub sample: Option<std::path::PathBuf>,
    /// A String message attribute the sample arrives with, for --field NAME=attribute:NAME;
    /// repeat it for each.
    #[arg(long, value_name = "NAME=VALUE", requires = "sample")]
    pub sample_attribute: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
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
