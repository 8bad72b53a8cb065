//! Test helpers shared by the integration tests: a LocalStack SQS client (never a mock) and fresh,
//! uniquely named queues. A LocalStack that cannot be reached fails the test; it is never skipped.

#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

pub mod chaos;
pub mod rig;
pub mod sqs_proxy;

pub fn localstack_url() -> String {
    std::env::var("LOCALSTACK_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// An SQS client for LocalStack. Panics with the fix when LocalStack does not answer.
pub async fn sqs() -> Client {
    let url = localstack_url();
    sqs_via(&url).await
}

/// An SQS client that sends its calls to `endpoint` (LocalStack, or a proxy in front of it).
pub async fn sqs_via(endpoint: &str) -> Client {
    let url = localstack_url();
    let health = format!("{url}/_localstack/health");
    let reachable = reqwest::Client::new()
        .get(&health)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        reachable,
        "LocalStack is not reachable at {health}. These tests need a real SQS: run localstack/start.sh \
         (or the README's test command, which starts it). CI={}",
        std::env::var("CI").unwrap_or_default()
    );
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Creates a queue with the given attributes and returns its URL.
pub async fn create_queue(sqs: &Client, name: &str, attributes: &[(&str, &str)]) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    for (key, value) in attributes {
        request = request.attributes((*key).into(), (*value).to_owned());
    }
    request
        .send()
        .await
        .expect("create queue on LocalStack")
        .queue_url
        .expect("queue url")
}

/// The real `sqs-batch-worker` binary with the AWS chain aimed at LocalStack.
pub fn worker_binary() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqs-batch-worker"));
    command
        .env("AWS_ENDPOINT_URL", localstack_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SQS_QUEUE_URL")
        .env_remove("SQS_DLQ_URL")
        .env_remove("RECORDS_API_TOKEN")
        .kill_on_drop(true);
    command
}

/// A log file path under the target directory's scratch space.
pub fn log_path(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{name}-{}.log", unique("w")))
        .display()
        .to_string()
}

/// Sends a signal to a child process.
pub fn signal(child: &tokio::process::Child, signal: i32) {
    let pid = child.id().expect("the child is running") as i32;
    // SAFETY: kill(2) on a child we own; no memory is touched.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
