//! The rig of the integration tests (`tests/it`) and of the benches that run the worker for real
//! (`chaos`, `limits`): a LocalStack SQS client (never a mock) and fresh, uniquely named queues,
//! the worker in-process or as its binary (`rig`), typed views of the outcomes, and the one check
//! of the product's promise, `Rig::assert_accounted`. A LocalStack that cannot be reached fails
//! the test; it is never skipped.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

pub mod chaos;
pub mod rig;
pub mod samples;
pub mod sns;
pub mod sqs_proxy;
pub mod views;

/// The SQS the tests use: LocalStack (`LOCALSTACK_URL`, default 127.0.0.1:4566), or another
/// implementation named by `SBW_TEST_SQS_URL` (moto's server, for the chaos suite's second round).
pub fn localstack_url() -> String {
    std::env::var("SBW_TEST_SQS_URL")
        .or_else(|_| std::env::var("LOCALSTACK_URL"))
        .unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// An SQS client for LocalStack. Panics with the fix when LocalStack does not answer.
pub async fn sqs() -> Client {
    let url = localstack_url();
    sqs_via(&url).await
}

fn client_for(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// An SQS client that sends its calls to `endpoint` (LocalStack, or a proxy in front of it).
/// The SQS itself must answer a ListQueues: a real one, never a mock, and never a skip.
pub async fn sqs_via(endpoint: &str) -> Client {
    let url = localstack_url();
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        client_for(&url).list_queues().max_results(1).send(),
    )
    .await;
    assert!(
        matches!(probe, Ok(Ok(_))),
        "no SQS answers at {url}. These tests need a real SQS: run localstack/start.sh (or the \
         README's test command, which starts it; moto/start.sh for SBW_TEST_SQS_URL). CI={}",
        std::env::var("CI").unwrap_or_default()
    );
    client_for(endpoint)
}

/// The DynamoDB the shared-budget tests use: moto's server (`SBW_TEST_DYNAMODB_URL`, default
/// 127.0.0.1:5000). The worker binary reaches it through `AWS_ENDPOINT_URL_DYNAMODB`, which aims
/// its DynamoDB client alone there; SQS stays on LocalStack.
pub fn dynamodb_url() -> String {
    std::env::var("SBW_TEST_DYNAMODB_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

/// A DynamoDB client for moto's server. Panics with the fix when it does not answer: a real
/// DynamoDB server, never a mock, and never a skip.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let url = dynamodb_url();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&url)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    let probe =
        tokio::time::timeout(Duration::from_secs(5), client.list_tables().limit(1).send()).await;
    assert!(
        matches!(probe, Ok(Ok(_))),
        "no DynamoDB answers at {url}. The shared-budget tests need moto's server: run \
         moto/start.sh (the README's test command starts it). CI={}",
        std::env::var("CI").unwrap_or_default()
    );
    client
}

/// Creates the budget table `name` (partition key `limit`, a string) as deploy/ makes it.
pub async fn create_budget_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("limit")
                .key_type(KeyType::Hash)
                .build()
                .expect("a key schema"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("limit")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute"),
        )
        .send()
        .await
        .expect("create the budget table");
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

/// Cargo's target directory for this profile (`target/debug` or `target/release`): the test or
/// bench executable runs from its `deps/`, and cargo builds the worker's binary beside it.
fn profile_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the executable's directory");
    match deps.file_name() {
        Some(name) if name == "deps" => deps.parent().unwrap_or(deps).to_path_buf(),
        _ => deps.to_path_buf(),
    }
}

/// The `sqs-batch-worker` binary cargo built for these tests (`SBW_WORKER_BINARY` overrides).
pub fn worker_binary_path() -> String {
    let path = std::env::var("SBW_WORKER_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| profile_dir().join("sqs-batch-worker"));
    assert!(
        path.is_file(),
        "the worker binary is not at {}. Fix: run the tests with cargo test (it builds the binary), \
         or set SBW_WORKER_BINARY",
        path.display()
    );
    path.display().to_string()
}

/// The real `sqs-batch-worker` binary with the AWS chain aimed at LocalStack.
pub fn worker_binary() -> tokio::process::Command {
    aimed_at_localstack(tokio::process::Command::new(worker_binary_path()))
}

/// The binary as `worker_binary`, started with at most `nofile` open files (systemd's default
/// soft limit is 1024).
pub fn worker_binary_with_fd_limit(nofile: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(worker_binary_path());
    aimed_at_localstack(command)
}

fn aimed_at_localstack(mut command: tokio::process::Command) -> tokio::process::Command {
    command
        .env("AWS_ENDPOINT_URL", localstack_url())
        .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SQS_QUEUE_URL")
        .env_remove("SQS_DLQ_URL")
        .env_remove("RECORDS_API_TOKEN")
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end (within 60 s): its exit code, and its stdout followed by its stderr.
pub async fn output_text(mut command: tokio::process::Command) -> (Option<i32>, String) {
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("exits within 60 s")
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// A log file path under the target directory's scratch space.
pub fn log_path(name: &str) -> String {
    let dir = profile_dir().join("..").join("tmp");
    std::fs::create_dir_all(&dir).expect("the target directory's tmp");
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

/// A wall clock the tests can step: Debian's `libfaketime`, preloaded into the worker binary with
/// an offset read from a file (re-read every second), the monotonic clock left alone.
/// `scripts/install-faketime.sh` installs it; the README's test command runs that first.
pub struct SteppedClock {
    file: std::path::PathBuf,
    library: String,
}

impl SteppedClock {
    /// Panics with the fix when libfaketime is missing: never a skip.
    pub fn new() -> Self {
        let library = [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        ]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())
        .expect(
            "libfaketime is missing. Fix: scripts/install-faketime.sh (apt-get install faketime); \
             the README's test command runs it",
        )
        .to_owned();
        let file = std::env::temp_dir().join(format!("{}.faketime", unique("clock")));
        let clock = Self { file, library };
        clock.step("+0");
        clock
    }

    /// Sets the offset from the real clock, in libfaketime's words: `-10m`, `+600s`, `+0`.
    pub fn step(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).expect("write the faketime file");
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.library.clone()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    }
}

impl Default for SteppedClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SteppedClock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
