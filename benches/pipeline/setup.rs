//! The bench's fixed parts: LocalStack (started if it is not running), an SQS client, fresh queues,
//! the same ~300-byte profile messages for every run, and the in-process emulator.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;
use records_emulator::{EmulatorConfig, RunningEmulator};

pub const TOKEN: &str = "bench-token";
pub const LOCALSTACK: &str = "http://127.0.0.1:4566";
/// moto's server (moto/start.sh): the shared budget's DynamoDB table in the quota bench.
pub const MOTO: &str = "http://127.0.0.1:5000";

/// Starts LocalStack with the repo's script unless it already answers.
pub async fn ensure_localstack() {
    if healthy().await {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/localstack/start.sh");
    eprintln!("pipeline: LocalStack is not running; starting it with {script}");
    let status = Command::new(script)
        .status()
        .expect("run localstack/start.sh");
    assert!(
        status.success() && healthy().await,
        "LocalStack did not start: run localstack/install.sh (the README's first command does), then retry"
    );
}

async fn healthy() -> bool {
    reqwest::Client::new()
        .get(format!("{LOCALSTACK}/_localstack/health"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

pub fn sqs() -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(LOCALSTACK)
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        // An open-loop producer opens many connections at once while LocalStack is busy: the
        // SDK's 3.1 s connect timeout failed a steady run's send.
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

pub async fn emulator() -> RunningEmulator {
    let config = EmulatorConfig::for_tests(TOKEN);
    records_emulator::start(EmulatorConfig {
        // The contract's default job timeline, not the tests' fast one.
        queued: Duration::from_millis(50),
        processing: Duration::from_millis(200),
        // The steady mode reads each message's job back for its latency.
        keep_job_records: true,
        ..config
    })
    .await
    .expect("the emulator starts")
}

/// A source queue and its reject DLQ, deleted again when dropped.
pub struct Queues {
    pub sqs: Client,
    pub source: String,
    pub dlq: String,
}

impl Queues {
    pub async fn create(sqs: &Client, label: &str) -> Self {
        let stamp = uuid::Uuid::new_v4().simple().to_string();
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("bench-{label}-{}", &stamp[..8]);
        let create = |name: String| async move {
            sqs.create_queue()
                .queue_name(name)
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "60",
                )
                .send()
                .await
                .expect("create a queue on LocalStack")
                .queue_url
                .expect("queue url")
        };
        Self {
            sqs: sqs.clone(),
            source: create(name.clone()).await,
            dlq: create(format!("{name}-dlq")).await,
        }
    }

    pub async fn delete(self) {
        for url in [self.source, self.dlq] {
            let _ = self.sqs.delete_queue().queue_url(url).send().await;
        }
    }
}

/// `binary run` against the queues and the API, with LocalStack's endpoint and credentials, its
/// log in `log`; killed when dropped.
pub fn worker_command(
    binary: &str,
    queues: &Queues,
    api_url: &str,
    listen: &str,
    extra: &[impl AsRef<std::ffi::OsStr>],
    log: &str,
) -> tokio::process::Command {
    let log = std::fs::File::create(log).expect("create the worker log");
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("run")
        .args(["--queue-url", &queues.source, "--dlq-url", &queues.dlq])
        .args(["--api-url", api_url, "--object", "profiles"])
        .args(["--listen", listen, "--log-format", "json"])
        .args(extra)
        .env("RECORDS_API_TOKEN", TOKEN)
        .env("AWS_ENDPOINT_URL", LOCALSTACK)
        // The shared budget's table lives on moto's DynamoDB server (moto/start.sh).
        .env("AWS_ENDPOINT_URL_DYNAMODB", MOTO)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true);
    command
}

/// Message `i`: a profile of about 300 bytes with a unique email.
pub fn body(i: usize) -> String {
    let mut body = format!(
        r#"{{"email":"bench-user-{i:07}@example.com","first_name":"Ada","last_name":"Lovelace","tier":"gold","plan":"enterprise-annual","country":"NZ","score":{i},"last_seen_at":"2026-11-23T10:00:00Z"}}"#
    );
    // Pad `last_name` so every body is the same ~300 bytes.
    let pad = 300usize.saturating_sub(body.len());
    body = body.replacen("Lovelace", &format!("Lovelace{}", "-".repeat(pad)), 1);
    body
}

/// Sends `n` messages made by `body`, 10 per call, 32 calls at a time.
pub async fn fill(sqs: &Client, url: &str, n: usize, body: fn(usize) -> String) {
    let bodies: Arc<Vec<String>> = Arc::new((0..n).map(body).collect());
    let chunks: Vec<(usize, usize)> = (0..n).step_by(10).map(|s| (s, (s + 10).min(n))).collect();
    futures::stream::iter(chunks)
        .map(|(start, end)| {
            let bodies = bodies.clone();
            async move {
                let mut request = sqs.send_message_batch().queue_url(url);
                for (id, body) in bodies[start..end].iter().enumerate() {
                    request = request.entries(
                        SendMessageBatchRequestEntry::builder()
                            .id(id.to_string())
                            .message_body(body)
                            .build()
                            .expect("id and body"),
                    );
                }
                let output = request.send().await.expect("SendMessageBatch");
                assert!(
                    output.failed.is_empty(),
                    "fill failures: {:?}",
                    output.failed
                );
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}
