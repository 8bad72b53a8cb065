//! A worker test rig: fresh LocalStack queues (source, reject DLQ), an emulator on port 0, the
//! worker run in-process with its own shutdown future (or as the real binary), and readers for the
//! outcomes the tests assert: rows in the emulator, messages left in the queues, DLQ attributes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use clap::Parser;
use records_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

use records_contract::JobReport;

use crate::views::{Accounted, Job, Request, Stats};
use sqs_batch_worker::config::Settings;
use sqs_batch_worker::config::cli::{Cli, Command};
use sqs_batch_worker::run::{Running, Summary, start};
use sqs_batch_worker::telemetry::Telemetry;

pub const TOKEN: &str = "rig-token-7f3a";

pub struct RigOptions {
    /// Use these (source, DLQ) queue URLs instead of creating fresh ones.
    pub queues: Option<(String, String)>,
    pub fifo: bool,
    /// The source queue's visibility timeout, in seconds.
    pub visibility_s: u32,
    pub emulator: EmulatorConfig,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            queues: None,
            fifo: false,
            visibility_s: 30,
            emulator: EmulatorConfig::for_tests(TOKEN),
        }
    }
}

pub struct Rig {
    pub sqs: Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub emulator: RunningEmulator,
    pub fifo: bool,
    http: reqwest::Client,
}

/// One message read back from the DLQ.
#[derive(Debug, Clone)]
pub struct DlqEntry {
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub group_id: Option<String>,
}

impl DlqEntry {
    /// A received message's body, String attributes and group.
    pub fn of(message: &aws_sdk_sqs::types::Message) -> Self {
        Self {
            body: message.body.clone().unwrap_or_default(),
            attributes: message
                .message_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, value)| value.string_value.map(|v| (name, v)))
                .collect(),
            group_id: message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned(),
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    pub fn reason(&self) -> &str {
        self.attr("dlq-reason").unwrap_or("")
    }
}

/// A worker running in this process.
pub struct Worker {
    running: Running,
    pub listen: SocketAddr,
    pub telemetry: Arc<Telemetry>,
}

impl Worker {
    /// Shuts the worker down and waits for the drain (its `--drain-timeout`).
    pub async fn stop(self) -> Summary {
        let deadline = Instant::now() + self.drain_timeout();
        tokio::time::timeout(Duration::from_secs(60), self.running.shutdown(deadline))
            .await
            .expect("the worker drains within 60 s")
    }

    fn drain_timeout(&self) -> Duration {
        self.running.drain_timeout()
    }

    /// A metric's value from /metrics (`name` may include its labels), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find(|line| line.starts_with(&format!("{name} ")) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .expect("the worker's telemetry server answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

pub fn init_logs() {
    records_contract::process::Logs {
        json: false,
        default_level: "warn",
        test_writer: true,
    }
    .init();
}

impl Rig {
    pub async fn new() -> Self {
        Self::with(RigOptions::default()).await
    }

    pub async fn with(options: RigOptions) -> Self {
        init_logs();
        let sqs = super::sqs().await;
        let emulator = records_emulator::start(options.emulator)
            .await
            .expect("the emulator starts");
        if let Some((queue_url, dlq_url)) = options.queues {
            return Self {
                sqs,
                fifo: queue_url.ends_with(".fifo"),
                queue_url,
                dlq_url,
                emulator,
                http: reqwest::Client::new(),
            };
        }
        let suffix = if options.fifo { ".fifo" } else { "" };
        let base = super::unique("rig");
        let visibility = options.visibility_s.to_string();
        let mut attributes = vec![("VisibilityTimeout", visibility.as_str())];
        if options.fifo {
            attributes.push(("FifoQueue", "true"));
        }
        let queue_url =
            super::create_queue(&sqs, &format!("{base}-src{suffix}"), &attributes).await;
        let dlq_attributes: &[(&str, &str)] = if options.fifo {
            &[("FifoQueue", "true")]
        } else {
            &[]
        };
        let dlq_url =
            super::create_queue(&sqs, &format!("{base}-dlq{suffix}"), dlq_attributes).await;
        Self {
            sqs,
            queue_url,
            dlq_url,
            emulator,
            fifo: options.fifo,
            http: reqwest::Client::new(),
        }
    }

    /// The `run` flags that point at this rig; `extra` overrides or adds (flag, value) pairs.
    pub fn args(&self, extra: &[(&str, &str)]) -> Vec<String> {
        let api_url = self.emulator.api_url();
        let mut flags: Vec<(&str, &str)> = vec![
            ("--queue-url", &self.queue_url),
            ("--dlq-url", &self.dlq_url),
            ("--api-url", &api_url),
            ("--api-token", TOKEN),
            ("--object", "profiles"),
            ("--listen", "127.0.0.1:0"),
            ("--log-format", "json"),
            ("--batch-max-wait", "300ms"),
            ("--drain-timeout", "20s"),
        ];
        for (flag, value) in extra {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        flags
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value.to_owned()])
            .collect()
    }

    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let argv = ["sqs-batch-worker", "run"]
            .into_iter()
            .map(str::to_owned)
            .chain(self.args(extra));
        let Command::Run(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
            unreachable!("the argv names `run`")
        };
        Settings::resolve(args).expect("valid settings")
    }

    /// Starts the worker in-process and waits until its telemetry server listens.
    pub async fn start(&self, extra: &[(&str, &str)]) -> Worker {
        self.start_settings(self.settings(extra)).await
    }

    pub async fn start_settings(&self, settings: Settings) -> Worker {
        self.start_with_client(settings, self.sqs.clone()).await
    }

    /// Starts the worker with its own SQS client (e.g. one that goes through a proxy).
    pub async fn start_with_client(&self, settings: Settings, client: Client) -> Worker {
        let running = tokio::time::timeout(Duration::from_secs(30), start(settings, client))
            .await
            .expect("the worker starts within 30 s")
            .expect("the worker starts");
        Worker {
            listen: running.listen,
            telemetry: running.telemetry.clone(),
            running,
        }
    }

    /// Starts the worker in-process with its SQS calls going through `endpoint` (a proxy).
    pub async fn start_via(&self, endpoint: &str, extra: &[(&str, &str)]) -> Worker {
        let client = super::sqs_via(endpoint).await;
        self.start_with_client(self.settings(extra), client).await
    }

    /// Waits until the source queue is empty, then stops the worker and returns its summary.
    pub async fn finish(&self, worker: Worker, within: Duration) -> Summary {
        wait_for("the source queue to empty", within, || self.source_empty()).await;
        worker.stop().await
    }

    /// Starts the real binary against this rig, logging to `log`.
    pub fn spawn_binary(&self, extra: &[(&str, &str)], log: &str) -> tokio::process::Child {
        self.spawn_binary_with_env(extra, &[], log)
    }

    /// `spawn_binary` with more environment (a preloaded `libfaketime`, say).
    pub fn spawn_binary_with_env(
        &self,
        extra: &[(&str, &str)],
        env: &[(&str, &str)],
        log: &str,
    ) -> tokio::process::Child {
        let log = std::fs::File::create(log).expect("create the log file");
        super::worker_binary()
            .arg("run")
            .args(self.args(extra))
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .expect("the worker binary starts")
    }

    /// Sends bodies to the source queue, 10 per SendMessageBatch, and returns their message IDs
    /// in the order of `bodies`.
    pub async fn send(&self, bodies: &[String]) -> Vec<String> {
        self.send_to(&self.queue_url, bodies, |_| "g".to_owned())
            .await
    }

    /// Sends to any queue. FIFO messages get the group from `group_of` and a deduplication ID
    /// from their index.
    pub async fn send_to(
        &self,
        url: &str,
        bodies: &[String],
        group_of: impl Fn(usize) -> String,
    ) -> Vec<String> {
        self.send_grouped(url, bodies, false, group_of).await
    }

    /// `send_to`, and with `tenants` a standard queue's messages carry their group too (a fair
    /// queue's tenant).
    pub async fn send_grouped(
        &self,
        url: &str,
        bodies: &[String],
        tenants: bool,
        group_of: impl Fn(usize) -> String,
    ) -> Vec<String> {
        let run = super::unique("d");
        let mut ids = vec![String::new(); bodies.len()];
        let mut calls = Vec::new();
        for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
            let mut request = self.sqs.send_message_batch().queue_url(url);
            for (i, body) in chunk.iter().enumerate() {
                let index = chunk_index * 10 + i;
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                if url.ends_with(".fifo") {
                    entry = entry
                        .message_group_id(group_of(index))
                        .message_deduplication_id(format!("{run}-{index}"));
                } else if tenants {
                    entry = entry.message_group_id(group_of(index));
                }
                request = request.entries(entry.build().expect("id and body are set"));
            }
            calls.push(async move { (chunk_index * 10, request.send().await) });
            // FIFO order within a group follows the order of the sends: keep them sequential.
            if url.ends_with(".fifo") || calls.len() == 16 {
                record_ids(futures::future::join_all(calls.drain(..)).await, &mut ids);
            }
        }
        record_ids(futures::future::join_all(calls).await, &mut ids);
        ids
    }

    /// (visible, in flight) on a queue.
    pub async fn depth(&self, url: &str) -> (u64, u64) {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes succeeds");
        let attributes = output.attributes.unwrap_or_default();
        let read = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            read(QueueAttributeName::ApproximateNumberOfMessages),
            read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    pub async fn source_empty(&self) -> bool {
        self.depth(&self.queue_url).await == (0, 0)
    }

    /// Receives and deletes everything in a queue, with attributes.
    pub async fn drain(&self, url: &str) -> Vec<DlqEntry> {
        let mut entries = Vec::new();
        let mut empty_receives = 0;
        while empty_receives < 2 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(60)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .send()
                .await
                .expect("ReceiveMessage succeeds");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_receives += 1;
                continue;
            }
            empty_receives = 0;
            for message in messages {
                let entry = DlqEntry::of(&message);
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .expect("DeleteMessage succeeds");
                entries.push(entry);
            }
        }
        entries
    }

    /// Attaches a redrive DLQ to the source queue, as the CloudFormation stack does, and returns
    /// its URL.
    pub async fn attach_redrive(&self, max_receive_count: u32) -> String {
        let url = if self.fifo {
            let name = format!("{}.fifo", super::unique("redrive"));
            super::create_queue(&self.sqs, &name, &[("FifoQueue", "true")]).await
        } else {
            super::create_queue(&self.sqs, &super::unique("redrive"), &[]).await
        };
        let arn = super::sns::queue_arn(&self.sqs, &url).await;
        self.sqs
            .set_queue_attributes()
            .queue_url(&self.queue_url)
            .attributes(
                QueueAttributeName::RedrivePolicy,
                format!(
                    r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#
                ),
            )
            .send()
            .await
            .expect("SetQueueAttributes");
        url
    }

    pub async fn dlq(&self) -> Vec<DlqEntry> {
        self.drain(&self.dlq_url.clone()).await
    }

    async fn control(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/__emu/{path}", self.emulator.base_url()))
            .send()
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("the emulator answers JSON")
    }

    pub async fn stats(&self) -> Stats {
        serde_json::from_value(self.control("stats").await).expect("the emulator's stats")
    }

    pub async fn rows(&self, object: &str) -> Vec<Value> {
        match self.control(&format!("records/{object}")).await {
            Value::Array(rows) => rows,
            other => panic!("rows: {other}"),
        }
    }

    /// Every job's report, as the API's job route gives it.
    pub async fn jobs(&self) -> Vec<JobReport> {
        serde_json::from_value(self.control("jobs").await).expect("the emulator's jobs")
    }

    /// Every job with its state, idempotency key and records.
    pub async fn jobs_with_records(&self) -> Vec<Job> {
        serde_json::from_value(self.control("jobs/records").await).expect("the emulator's jobs")
    }

    /// The emulator's request log, batch writes only.
    pub async fn batch_requests(&self) -> Vec<Request> {
        let requests: Vec<Request> =
            serde_json::from_value(self.control("requests").await).expect("the request log");
        requests
            .into_iter()
            .filter(|r| r.route.ends_with("-batch"))
            .collect()
    }

    /// Where every message of `sent` (bodies whose `key` field identifies them) ended: rows of
    /// `object`, DLQ copies, and the source queue's depth; panics unless each is accounted for
    /// (`Accounted::check`, the product's promise). Call it after the worker stopped. It drains
    /// the DLQ: read the DLQ's attributes before it, or from what it returns.
    pub async fn assert_accounted(&self, object: &str, key: &str, sent: &[String]) -> Accounted {
        let key_of = |value: &Value| value[key].as_str().map(str::to_owned);
        let committed = self.rows(object).await.iter().filter_map(key_of).collect();
        let dead_lettered = self
            .dlq()
            .await
            .iter()
            .filter_map(|entry| serde_json::from_str::<Value>(&entry.body).ok())
            .filter_map(|body| key_of(&body))
            .collect();
        let (visible, in_flight) = self.depth(&self.queue_url).await;
        let accounted = Accounted {
            committed,
            dead_lettered,
            queued: visible + in_flight,
        };
        let sent: std::collections::BTreeSet<String> = sent
            .iter()
            .filter_map(|body| serde_json::from_str::<Value>(body).ok())
            .filter_map(|body| key_of(&body))
            .collect();
        accounted.check(&sent);
        accounted
    }

    /// Waits until the worker has sent its first batch request.
    pub async fn first_batch_request(&self) {
        wait_for(
            "the first batch request",
            Duration::from_secs(30),
            || async { !self.batch_requests().await.is_empty() },
        )
        .await;
    }

    pub async fn faults(&self, patch: Value) {
        self.control_write(reqwest::Method::POST, "faults", patch)
            .await;
    }

    pub async fn set_schemas(&self, schemas: Value) {
        self.control_write(reqwest::Method::PUT, "schemas", schemas)
            .await;
    }

    /// A change through the emulator's control endpoints, which answer 204 when they take it.
    async fn control_write(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = self
            .http
            .request(method, format!("{}/__emu/{path}", self.emulator.base_url()))
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        assert_eq!(response.status().as_u16(), 204, "{path} {body} accepted");
    }

    pub async fn metadata(&self, object: &str) -> Value {
        let value: Value = self
            .http
            .get(format!(
                "{}/metadata/objects/{object}",
                self.emulator.api_url()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("JSON");
        value["data"].clone()
    }
}

type SendResult = Result<
    aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput,
    aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError>,
>;

fn record_ids(outputs: Vec<(usize, SendResult)>, ids: &mut [String]) {
    for (offset, output) in outputs {
        let output = output.expect("SendMessageBatch succeeds");
        assert!(
            output.failed.is_empty(),
            "send failures: {:?}",
            output.failed
        );
        for entry in output.successful {
            let index: usize = entry.id.parse().expect("our entry IDs are indexes");
            ids[offset + index] = entry.message_id;
        }
    }
}

/// Polls `check` every 100 ms until it holds, or panics naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A valid profile body for index `i`.
pub fn profile(i: usize) -> String {
    format!(
        r#"{{"email":"user{i}@example.com","first_name":"Ada{i}","tier":"gold","score":{i},"country":"NZ"}}"#
    )
}
