//! A fault proxy in front of LocalStack's SQS: it relays every call and, as its knobs say, adds
//! latency, black-holes calls (accepts them and never answers), drops connections, marks random
//! entries of the batch calls `Failed` without sending them on, and hands a received message out
//! twice, or corrupts `MD5OfBody` (as a damaged transfer would: the Rust SDK does not check it).
//! Real SQS does each of these on a bad day; the worker must survive all of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// What the proxy does to the calls it relays. Operation names are SQS's (`ReceiveMessage`); an
/// empty list means every operation.
#[derive(Clone, Debug, Default)]
pub struct SqsFaults {
    pub latency: Duration,
    pub latency_ops: Vec<&'static str>,
    pub blackhole: bool,
    pub blackhole_ops: Vec<&'static str>,
    /// Probability that a call's connection is dropped without an answer.
    pub reset: f64,
    /// Probability that each entry of DeleteMessageBatch, ChangeMessageVisibilityBatch and
    /// SendMessageBatch is refused with `InternalError` and never reaches SQS.
    pub fail_entries: f64,
    /// The batch operations `fail_entries` applies to; empty means all three.
    pub fail_entries_ops: Vec<&'static str>,
    /// Probability that a received message appears twice in its ReceiveMessage answer.
    pub duplicate: f64,
    /// Received messages whose body holds this marker get a wrong `MD5OfBody`.
    pub corrupt_md5_marker: Option<&'static str>,
}

#[derive(Default)]
struct State {
    faults: SqsFaults,
    calls: std::collections::HashMap<String, u64>,
    duplicated: u64,
    failed_entries: u64,
}

#[derive(Clone)]
pub struct SqsProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn applies(ops: &[&'static str], op: &str) -> bool {
    ops.is_empty() || ops.contains(&op)
}

impl SqsProxy {
    /// Starts the proxy on a free loopback port, relaying to LocalStack, with no faults set.
    pub async fn start(seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let upstream = super::localstack_url();
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |request: Request<Body>| {
                let (http, upstream, state, rng) =
                    (http.clone(), upstream.clone(), state.clone(), rng.clone());
                async move { forward(http, &upstream, state, rng, request).await }
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    pub fn set(&self, faults: SqsFaults) {
        self.state.lock().unwrap().faults = faults;
    }

    pub fn update(&self, change: impl FnOnce(&mut SqsFaults)) {
        change(&mut self.state.lock().unwrap().faults);
    }

    /// How many calls of this operation reached the proxy.
    pub fn calls(&self, op: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// (messages handed out twice, batch entries refused).
    pub fn injected(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap();
        (state.duplicated, state.failed_entries)
    }
}

fn operation(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned()
}

async fn forward(
    http: reqwest::Client,
    upstream: &str,
    state: Arc<Mutex<State>>,
    rng: Arc<Mutex<StdRng>>,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let op = operation(&parts.headers);
    let faults = {
        let mut state = state.lock().unwrap();
        *state.calls.entry(op.clone()).or_default() += 1;
        state.faults.clone()
    };
    delay_or_reset(&faults, &op, &rng).await;
    let is_batch = matches!(
        op.as_str(),
        "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" | "SendMessageBatch"
    );
    let (body, refused) =
        if is_batch && faults.fail_entries > 0.0 && applies(&faults.fail_entries_ops, &op) {
            refuse_entries(&body, faults.fail_entries, &rng)
        } else {
            (body, Vec::new())
        };
    if !refused.is_empty() {
        state.lock().unwrap().failed_entries += refused.len() as u64;
    }
    let everything_refused = is_batch
        && !refused.is_empty()
        && serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["Entries"].as_array().map(Vec::is_empty))
            .unwrap_or(false);
    let (status, headers, bytes) = if everything_refused {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/x-amz-json-1.0".parse().unwrap(),
        );
        (
            StatusCode::OK,
            headers,
            Bytes::from(json!({"Successful": [], "Failed": []}).to_string()),
        )
    } else {
        match relay(&http, upstream, &parts, body).await {
            Ok(reply) => reply,
            Err(problem) => return (StatusCode::BAD_GATEWAY, problem).into_response(),
        }
    };
    let bytes = if status.is_success() {
        tamper(bytes, &op, &faults, &refused, &state, &rng)
    } else {
        bytes
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The black hole, the latency and the reset the faults ask for, before the call goes upstream.
async fn delay_or_reset(faults: &SqsFaults, op: &str, rng: &Mutex<StdRng>) {
    if faults.blackhole && applies(&faults.blackhole_ops, op) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if !faults.latency.is_zero() && applies(&faults.latency_ops, op) {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.reset > 0.0 && rng.lock().unwrap().random_bool(faults.reset) {
        // Unwinding out of the handler drops the connection without an answer, which the client
        // sees as a reset. resume_unwind skips the panic hook, so nothing is printed.
        std::panic::resume_unwind(Box::new("injected connection reset"));
    }
}

/// A successful reply with the refused entries added, and a receive's MD5s corrupted or its
/// messages duplicated, as the faults ask.
fn tamper(
    mut bytes: Bytes,
    op: &str,
    faults: &SqsFaults,
    refused: &[String],
    state: &Mutex<State>,
    rng: &Mutex<StdRng>,
) -> Bytes {
    if !refused.is_empty() {
        bytes = add_failures(&bytes, refused).unwrap_or(bytes);
    }
    if op == "ReceiveMessage"
        && let Some(marker) = faults.corrupt_md5_marker
    {
        bytes = corrupt_md5(&bytes, marker).unwrap_or(bytes);
    }
    if op == "ReceiveMessage" && faults.duplicate > 0.0 {
        let (doubled, count) = duplicate(&bytes, faults.duplicate, rng);
        state.lock().unwrap().duplicated += count;
        bytes = doubled;
    }
    bytes
}

async fn relay(
    http: &reqwest::Client,
    upstream: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http
        .request(parts.method.clone(), format!("{upstream}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, headers, bytes))
}

/// Takes entries out of a batch request at random; returns the request to relay and their IDs.
fn refuse_entries(body: &Bytes, probability: f64, rng: &Mutex<StdRng>) -> (Bytes, Vec<String>) {
    let Ok(mut request) = serde_json::from_slice::<Value>(body) else {
        return (body.clone(), Vec::new());
    };
    let Some(entries) = request["Entries"].as_array_mut() else {
        return (body.clone(), Vec::new());
    };
    let mut refused = Vec::new();
    let mut rng = rng.lock().unwrap();
    entries.retain(|entry| {
        if rng.random_bool(probability) {
            refused.push(entry["Id"].as_str().unwrap_or_default().to_owned());
            false
        } else {
            true
        }
    });
    (Bytes::from(request.to_string()), refused)
}

fn add_failures(bytes: &Bytes, refused: &[String]) -> Option<Bytes> {
    let mut answer: Value = serde_json::from_slice(bytes).ok()?;
    let object = answer.as_object_mut()?;
    let failed = object
        .entry("Failed")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()?;
    for id in refused {
        failed.push(json!({
            "Id": id,
            "SenderFault": false,
            "Code": "InternalError",
            "Message": "injected by the test proxy",
        }));
    }
    Some(Bytes::from(answer.to_string()))
}

/// Rewrites `MD5OfBody` of every message whose body holds the marker; None if nothing matched.
fn corrupt_md5(bytes: &[u8], marker: &str) -> Option<Bytes> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    let mut changed = false;
    for message in value.get_mut("Messages")?.as_array_mut()? {
        if message["Body"].as_str().is_some_and(|b| b.contains(marker)) {
            message["MD5OfBody"] = Value::String("0".repeat(32));
            changed = true;
        }
    }
    changed.then(|| Bytes::from(value.to_string()))
}

fn duplicate(bytes: &Bytes, probability: f64, rng: &Mutex<StdRng>) -> (Bytes, u64) {
    let Ok(mut answer) = serde_json::from_slice::<Value>(bytes) else {
        return (bytes.clone(), 0);
    };
    let Some(messages) = answer["Messages"].as_array_mut() else {
        return (bytes.clone(), 0);
    };
    let mut rng = rng.lock().unwrap();
    let copies: Vec<Value> = messages
        .iter()
        .filter(|_| rng.random_bool(probability))
        .cloned()
        .collect();
    let count = copies.len() as u64;
    messages.extend(copies);
    (Bytes::from(answer.to_string()), count)
}
