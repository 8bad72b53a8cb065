//! The loops the worker is measured against, run in the bench process with the same pollers:
//! the ceiling (receive and delete, nothing else), and the two baselines of seed 000 and 003 (one
//! single upsert per message; one 10-record upsert-batch per receive).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::setup::TOKEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Receive, then DeleteMessageBatch: nothing that reads the queue can go faster.
    Ceiling,
    /// Each message: one single-record upsert, then one DeleteMessage.
    PerMessage,
    /// Each receive of up to 10: one upsert-batch, wait for the 202, then DeleteMessageBatch.
    PerReceive,
}

/// When a run ends: after `n` messages, or when a window that opens at the first receive closes
/// (the rate-limited runs).
#[derive(Clone, Copy, Debug)]
pub enum Until {
    Count(usize),
    Window(Duration),
}

pub struct Outcome {
    pub messages: usize,
    pub seconds: f64,
    /// SentTimestamp to the API's acceptance, per message, in ms.
    pub latencies_ms: Vec<f64>,
}

struct Shared {
    sqs: Client,
    http: reqwest::Client,
    url: String,
    api_url: String,
    mode: Mode,
    done: AtomicUsize,
    latencies: Mutex<Vec<f64>>,
    stop: CancellationToken,
    until: Until,
    first_receive: std::sync::Mutex<Option<Instant>>,
}

pub async fn run(
    sqs: &Client,
    url: &str,
    api_url: &str,
    mode: Mode,
    pollers: usize,
    until: Until,
) -> Outcome {
    let shared = Arc::new(Shared {
        sqs: sqs.clone(),
        http: reqwest::Client::new(),
        url: url.to_owned(),
        api_url: api_url.to_owned(),
        mode,
        done: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
        stop: CancellationToken::new(),
        until,
        first_receive: std::sync::Mutex::new(None),
    });
    let window_end = match until {
        Until::Window(window) => {
            let at = Instant::now() + window;
            let stop = shared.stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                stop.cancel();
            });
            Some(at)
        }
        Until::Count(_) => None,
    };
    let loops: Vec<_> = (0..pollers)
        .map(|_| tokio::spawn(poll_loop(shared.clone())))
        .collect();
    for task in loops {
        task.await.expect("a poll loop does not panic");
    }
    let end = Instant::now();
    let start = shared.first_receive.lock().unwrap().unwrap_or(end);
    let end = window_end.map_or(end, |at| at.min(end));
    Outcome {
        messages: shared.done.load(Ordering::Relaxed),
        seconds: (end - start).as_secs_f64(),
        latencies_ms: std::mem::take(&mut *shared.latencies.lock().await),
    }
}

async fn poll_loop(shared: Arc<Shared>) {
    loop {
        let receive = shared
            .sqs
            .receive_message()
            .queue_url(&shared.url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send();
        let started = Instant::now();
        let output = tokio::select! {
            output = receive => output,
            _ = shared.stop.cancelled() => return,
        };
        shared.first_receive.lock().unwrap().get_or_insert(started);
        let messages = match output {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                eprintln!("pipeline: receive failed: {error}");
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let handled = match shared.mode {
            Mode::Ceiling => delete_batch(&shared, &messages).await,
            Mode::PerMessage => per_message(&shared, &messages).await,
            Mode::PerReceive => per_receive(&shared, &messages).await,
        };
        let done = shared.done.fetch_add(handled, Ordering::Relaxed) + handled;
        if let Until::Count(n) = shared.until
            && done >= n
        {
            shared.stop.cancel();
        }
        if shared.stop.is_cancelled() {
            return;
        }
    }
}

async fn delete_batch(shared: &Shared, messages: &[Message]) -> usize {
    let mut request = shared.sqs.delete_message_batch().queue_url(&shared.url);
    for (i, message) in messages.iter().enumerate() {
        request = request.entries(
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                .build()
                .expect("id and receipt"),
        );
    }
    match request.send().await {
        Ok(output) => messages.len() - output.failed.len(),
        Err(error) => {
            eprintln!("pipeline: delete failed: {error}");
            0
        }
    }
}

fn sent_ms(message: &Message) -> Option<f64> {
    message
        .attributes
        .as_ref()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

/// POSTs until the API accepts, honouring `Retry-After` on 429, as a polite client would.
/// Returns false if the run's window closed first.
async fn post_accepted(shared: &Shared, path: &str, body: Value, key: Option<String>) -> bool {
    loop {
        let mut request = shared
            .http
            .post(format!("{}{path}", shared.api_url))
            .bearer_auth(TOKEN)
            .json(&body);
        if let Some(key) = &key {
            request = request.header("Idempotency-Key", key);
        }
        let wait = match request.send().await {
            Ok(response) if response.status().is_success() => return true,
            Ok(response) if response.status().as_u16() == 429 => response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs),
            Ok(response) => {
                eprintln!("pipeline: the API answered {}", response.status());
                Duration::from_millis(100)
            }
            Err(error) => {
                eprintln!("pipeline: request failed: {error}");
                Duration::from_millis(100)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.stop.cancelled() => return false,
        }
    }
}

fn record(message: &Message) -> Value {
    serde_json::from_str(message.body.as_deref().unwrap_or("{}")).unwrap_or(json!({}))
}

async fn per_message(shared: &Shared, messages: &[Message]) -> usize {
    let mut handled = 0;
    for message in messages {
        let body = json!({"record": record(message), "matchKey": "email"});
        if !post_accepted(shared, "/records/profiles/upsert", body, None).await {
            break;
        }
        if let Some(sent) = sent_ms(message) {
            shared.latencies.lock().await.push(now_ms() - sent);
        }
        let deleted = shared
            .sqs
            .delete_message()
            .queue_url(&shared.url)
            .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
            .send()
            .await;
        handled += usize::from(deleted.is_ok());
    }
    handled
}

async fn per_receive(shared: &Shared, messages: &[Message]) -> usize {
    let records: Vec<Value> = messages.iter().map(record).collect();
    let key = sqs_batch_worker::batch::key::batch_key(
        messages.iter().filter_map(|m| m.message_id.as_deref()),
    );
    let body = json!({"records": records, "matchKey": "email"});
    if !post_accepted(shared, "/records/profiles/upsert-batch", body, Some(key)).await {
        return 0;
    }
    let now = now_ms();
    let mut latencies = shared.latencies.lock().await;
    latencies.extend(messages.iter().filter_map(sent_ms).map(|sent| now - sent));
    drop(latencies);
    delete_batch(shared, messages).await
}
