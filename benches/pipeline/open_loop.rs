//! An open-loop producer (it sends at a fixed rate whatever the consumer does) and the latencies
//! of what it sent, read back from the emulator's jobs. Shared by the pipeline bench's steady mode
//! and the quota bench.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::Value;

pub fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Sends `rate` messages a second for `seconds`, open loop (a batch of 10 every 10/rate s, not
/// waiting for the last). Returns each message index's send time, in ms since the epoch.
pub async fn produce(sqs: &aws_sdk_sqs::Client, url: &str, rate: f64, seconds: f64) -> Vec<f64> {
    let total = (rate * seconds) as usize;
    let every = Duration::from_secs_f64(10.0 / rate);
    let started = Instant::now();
    let mut sends = Vec::new();
    let mut sent_at = vec![0.0; total];
    for (call, start) in (0..total).step_by(10).enumerate() {
        tokio::time::sleep_until((started + every * call as u32).into()).await;
        let end = (start + 10).min(total);
        let mut request = sqs.send_message_batch().queue_url(url);
        for (id, i) in (start..end).enumerate() {
            request = request.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .message_body(crate::setup::body(i))
                    .build()
                    .expect("id and body"),
            );
        }
        for at in &mut sent_at[start..end] {
            *at = unix_ms();
        }
        sends.push(tokio::spawn(async move { request.send().await }));
    }
    for send in sends {
        let output = send.await.expect("join").expect("SendMessageBatch");
        assert!(output.failed.is_empty(), "send failures");
    }
    sent_at
}

/// The q-th quantile (0..=1) of samples, by nearest rank.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

/// Milliseconds from each message's send to its batch's 202 (the job's creation) and to the end
/// of that job, per message; the first job that carried a message counts. Needs an emulator that
/// keeps job records (`--keep-job-records`).
pub struct Latencies {
    pub to_accepted_ms: Vec<f64>,
    pub to_completed_ms: Vec<f64>,
}

pub async fn latencies(api_base: &str, sent_at: &[f64]) -> Latencies {
    let jobs: Value = reqwest::get(format!("{api_base}/__emu/jobs/records"))
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("JSON");
    let mut first_job: HashMap<usize, (f64, f64)> = HashMap::new();
    for job in jobs.as_array().into_iter().flatten() {
        let created = job["createdAtMs"].as_f64().unwrap_or(0.0);
        let completed = job["completedAtMs"].as_f64().unwrap_or(f64::NAN);
        for record in job["records"].as_array().into_iter().flatten() {
            let Some(index) = record["score"].as_u64().map(|i| i as usize) else {
                continue;
            };
            let first = first_job.entry(index).or_insert((created, completed));
            if created < first.0 {
                *first = (created, completed);
            }
        }
    }
    let mut out = Latencies {
        to_accepted_ms: Vec::new(),
        to_completed_ms: Vec::new(),
    };
    for (index, (created, completed)) in first_job {
        let Some(sent) = sent_at.get(index) else {
            continue;
        };
        out.to_accepted_ms.push(created - sent);
        if completed.is_finite() {
            out.to_completed_ms.push(completed - sent);
        }
    }
    out
}
