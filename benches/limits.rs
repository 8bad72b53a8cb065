//! The lose-nothing limits, measured with the release binary on LocalStack and the emulator:
//!
//! ```text
//! cargo bench --bench limits -- rss [--messages 3000]       # 64 KB bodies, 60 s jobs, defaults
//! cargo bench --bench limits -- held [--messages 40000]     # the held set the heartbeat sustains
//! cargo bench --bench limits -- outage [--seconds 150]      # an API outage, maxReceiveCount 5
//! ```

use test_rig as common;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use common::rig::{Rig, RigOptions, profile};
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .map_or(default, |pair| pair[1].parse().expect("a number"))
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metric(listen: &str, name: &str) -> f64 {
    let body = match reqwest::get(format!("http://{listen}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Sends big bodies a few per call, staying under SendMessageBatch's 256 KiB.
async fn send_big(rig: &Rig, bodies: &[String]) {
    let calls = bodies.chunks(3).map(|chunk| {
        let mut request = rig.sqs.send_message_batch().queue_url(&rig.queue_url);
        for (i, body) in chunk.iter().enumerate() {
            request = request.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("id and body"),
            );
        }
        request.send()
    });
    for result in futures::future::join_all(calls).await {
        result.expect("SendMessageBatch");
    }
}

async fn rss(messages: usize) {
    let rig = Rig::new().await;
    rig.faults(json!({"processing_ms": 60_000})).await;
    let padding = "x".repeat(64 * 1024 - 100);
    let bodies: Vec<String> = (0..messages)
        .map(|i| {
            format!(r#"{{"email":"big{i}@example.com","first_name":"{padding}","score":{i}}}"#)
        })
        .collect();
    for chunk in bodies.chunks(300) {
        send_big(&rig, chunk).await;
    }
    let log = common::log_path("limits-rss");
    let listen = "127.0.0.1:19391";
    let mut child = rig.spawn_binary(&[("--batch-max-wait", "5s"), ("--listen", listen)], &log);
    let pid = child.id().expect("running");
    let started = Instant::now();
    let mut peak_held = 0.0f64;
    let mut peak_invisible = 0;
    while started.elapsed() < Duration::from_secs(150) && !rig.source_empty().await {
        peak_held = peak_held.max(metric(listen, "sbw_held_bytes").await);
        peak_invisible = peak_invisible.max(rig.depth(&rig.queue_url).await.1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let hwm = rss_kib(pid, "VmHWM:");
    common::signal(&child, libc::SIGTERM);
    let _ = child.wait().await;
    println!(
        "limits rss: {messages} x 64 KB bodies, 60 s jobs, defaults (accepted, 4 in flight, 5 MiB \
         batches, --max-held-bytes 25 MiB): peak RSS {:.1} MB, peak held bytes {:.1} MiB, peak \
         invisible messages {peak_invisible}, drained in {:.0} s",
        hwm as f64 / 1024.0,
        peak_held / 1048576.0,
        started.elapsed().as_secs_f64()
    );
}

async fn held(messages: usize) {
    let rig = Rig::with(RigOptions {
        visibility_s: 10,
        ..RigOptions::default()
    })
    .await;
    rig.faults(json!({"processing_ms": 90_000})).await;
    let bodies: Vec<String> = (0..messages).map(profile).collect();
    let sending = Instant::now();
    for chunk in bodies.chunks(5_000) {
        rig.send(chunk).await;
    }
    println!(
        "limits held: sent {messages} in {:.0} s",
        sending.elapsed().as_secs_f64()
    );
    let log = common::log_path("limits-held");
    let listen = "127.0.0.1:19392";
    let in_flight = messages.div_ceil(1000).to_string();
    let mut child = rig.spawn_binary(
        &[
            ("--listen", listen),
            ("--ack-on", "completed"),
            ("--batch-max-records", "1000"),
            ("--batch-max-wait", "2s"),
            ("--max-in-flight", &in_flight),
            ("--max-held-bytes", "1GiB"),
            ("--job-timeout", "5m"),
            ("--pollers", "8"),
        ],
        &log,
    );
    let started = Instant::now();
    let mut peak_invisible = 0;
    // Hold everything through the 90 s job: 9 visibility timeouts.
    while started.elapsed() < Duration::from_secs(80) {
        peak_invisible = peak_invisible.max(rig.depth(&rig.queue_url).await.1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let received = metric(listen, "sbw_messages_received_total").await;
    let duplicates = metric(listen, "sbw_duplicate_receipts_total").await;
    let extended = metric(listen, "sbw_visibility_extensions_total").await;
    let (visible, invisible) = rig.depth(&rig.queue_url).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    println!(
        "limits held: visibility 10 s, {messages} messages held through a 90 s job: peak invisible \
         {peak_invisible}, now visible {visible} / invisible {invisible}, received {received} \
         (a message received twice reappeared), duplicate receipts {duplicates}, extensions \
         {extended} in 80 s ({:.0}/s)",
        extended / 80.0
    );
}

async fn outage(seconds: u64) {
    let rig = Rig::new().await;
    let redrive = rig.attach_redrive(5).await;
    rig.faults(json!({"statuses": {"503": 1.0}})).await;
    rig.send(&(0..200).map(profile).collect::<Vec<_>>()).await;
    let log = common::log_path("limits-outage");
    let mut child = rig.spawn_binary(&[("--batch-max-wait", "5s")], &log);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    rig.faults(json!({"statuses": {}})).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline
        && rig.rows("profiles").await.len() < 200
        && rig.depth(&redrive).await == (0, 0)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let recovered = started.elapsed();
    common::signal(&child, libc::SIGTERM);
    let _ = child.wait().await;
    let moved = rig.drain(&redrive).await.len();
    let rows = rig.rows("profiles").await.len();
    let batch_calls = rig.batch_requests().await.len();
    println!(
        "limits outage: {seconds} s of 503s, maxReceiveCount 5, defaults: {rows}/200 committed \
         after {:.0} s, {moved} in the redrive DLQ, {batch_calls} batch calls in all",
        recovered.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args
        .iter()
        .skip(1)
        .find(|a| matches!(a.as_str(), "rss" | "held" | "outage"))
        .cloned()
        .unwrap_or_default();
    match mode.as_str() {
        "rss" => rss(arg("--messages", 3_000) as usize).await,
        "held" => held(arg("--messages", 40_000) as usize).await,
        "outage" => outage(arg("--seconds", 150)).await,
        _ => println!("limits: name a mode: rss, held or outage (see the file's header)"),
    }
}
