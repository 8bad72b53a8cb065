//! Emulator throughput: batches of 1,000 small records over loopback, from concurrent clients.
//! Run: `cargo bench --bench emulator_load -- [--seconds 10] [--clients 4] [--records 1000]`.
//! Prints one line: `emulator: batch_req_per_s=N records_per_s=N clients=N records_per_batch=N`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use records_emulator::EmulatorConfig;
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 10);
    let clients = arg("--clients", 4);
    let records = arg("--records", 1000) as usize;
    let emu = records_emulator::start(EmulatorConfig::for_tests("bench"))
        .await
        .expect("emulator");
    let url = format!("{}/records/profiles/upsert-batch", emu.api_url());
    let batch: Vec<_> = (0..records)
        .map(|i| json!({"email": format!("user{i}@example.com"), "tier": "gold", "score": i}))
        .collect();
    let body = bytes::Bytes::from(json!({"records": batch, "matchKey": "email"}).to_string());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, body, done) = (url.clone(), body.clone(), done.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while Instant::now() < deadline {
                    let response = http
                        .post(&url)
                        .bearer_auth("bench")
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 202);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = done.load(Ordering::Relaxed) as f64;
    println!(
        "emulator: batch_req_per_s={:.0} records_per_s={:.0} clients={clients} records_per_batch={records} body_bytes={}",
        requests / elapsed,
        requests * records as f64 / elapsed,
        body.len()
    );
    let _ = emu.stop().await;
}
