//! One regression test per defect of issue 10 ("lose nothing, provably"), each on LocalStack and the
//! emulator over real HTTP. Every test asserts outcomes from the outside: rows in the emulator,
//! messages left in or absent from the queues, DLQ entries. Each one failed on the code it fixes.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::rig::{Rig, RigOptions, profile, wait_for};
use crate::common::sqs_proxy::{SqsFaults, SqsProxy};
use serde_json::{Value, json};

fn event(session: &str, seq: usize) -> String {
    format!(
        r#"{{"session_id":"{session}","event":"e","occurred_at":"2026-11-23T10:00:00Z","value":{seq}}}"#
    )
}

fn events(count: usize) -> Vec<String> {
    (0..count).map(|seq| event("s", seq)).collect()
}

/// The `value` of every `events` row, in commit order.
async fn event_values(rig: &Rig) -> Vec<u64> {
    rig.rows("events")
        .await
        .iter()
        .filter_map(|row| row["value"].as_u64())
        .collect()
}

/// Appends every queued event with the APPEND flags and `flags`, and checks each was written
/// exactly once.
async fn append_each_once(rig: &Rig, flags: &[(&str, &str)], events: u64) {
    let mut all = APPEND.to_vec();
    all.extend_from_slice(flags);
    let worker = rig.start(&all).await;
    rig.finish(worker, Duration::from_secs(60)).await;
    assert_each_event_once(rig, events).await;
}

/// Every event 0..count committed exactly once, and nothing dead-lettered.
async fn assert_each_event_once(rig: &Rig, count: u64) {
    let mut values = event_values(rig).await;
    values.sort_unstable();
    assert_eq!(values, (0..count).collect::<Vec<u64>>(), "each record once");
    assert!(rig.dlq().await.is_empty(), "nothing dead-lettered");
}

const APPEND: [(&str, &str); 2] = [("--object", "events"), ("--operation", "append")];

/// Defect 1: in accepted mode the messages are deleted after the first 202. When that job fails,
/// and its resubmission is split (413) and then refused (404), the halves must not be "released":
/// their receipts are spent, so the rows would reach neither the API nor the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d01_accepted_mode_never_releases_messages_it_already_deleted() {
    let rig = Rig::new().await;
    rig.faults(json!({"job_fail_next": 1, "processing_ms": 1500}))
        .await;
    let bodies: Vec<String> = (0..20).map(profile).collect();
    rig.send(&bodies).await;
    let worker = rig
        .start(&[
            ("--batch-max-records", "20"),
            ("--batch-max-wait", "2s"),
            ("--ack-on", "accepted"),
        ])
        .await;
    rig.first_batch_request().await;
    rig.faults(json!({"next": [{"status": 413}, {"status": 404, "count": 2}]}))
        .await;
    wait_for(
        "the resubmission's two halves",
        Duration::from_secs(60),
        || async { rig.batch_requests().await.len() >= 4 },
    )
    .await;
    worker.stop().await;

    // The product's promise: every message committed, dead-lettered or still queued.
    rig.assert_accounted("profiles", "email", &bodies).await;
}

/// Defect 2: one receive of a FIFO group spans two batches. When the first is released (a 404
/// here), the second must not commit the group's later messages ahead of the earlier ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d02_fifo_a_released_batch_takes_its_groups_later_messages_with_it() {
    let rig = Rig::with(RigOptions {
        fifo: true,
        ..RigOptions::default()
    })
    .await;
    rig.faults(json!({"next": [{"status": 404}]})).await;
    let url = rig.queue_url.clone();
    rig.send_to(&url, &events(10), |_| "g".to_owned()).await;
    let worker = rig
        .start(&[
            APPEND[0],
            APPEND[1],
            ("--batch-max-records", "5"),
            ("--batch-max-wait", "1s"),
        ])
        .await;
    wait_for("ten rows", Duration::from_secs(120), || async {
        rig.rows("events").await.len() >= 10
    })
    .await;
    worker.stop().await;
    assert_eq!(
        event_values(&rig).await,
        (0..10).collect::<Vec<u64>>(),
        "the group is committed in order"
    );
}

/// Defect 3: the same message IDs in another receive order give the same key. A KEY_REUSED answer
/// says a job already holds exactly these messages (sent here by an earlier version, in its own
/// order), so resubmitting would write them twice; whether that job committed is unknown to the
/// worker, so since issue 19 (path 1) the messages go to the DLQ as `key_reused` instead of being
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d03_key_reused_for_the_same_messages_is_not_written_twice() {
    let rig = Rig::new().await;
    let bodies = events(10);
    let ids = rig.send(&bodies).await;
    let key = sqs_batch_worker::batch::key::batch_key(ids.iter().map(String::as_str));
    // An earlier worker sent these ten messages in its own order (IDs descending), then died.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|a, b| ids[*b].cmp(&ids[*a]));
    let records: Vec<Value> = order
        .iter()
        .map(|i| serde_json::from_str(&bodies[*i]).unwrap())
        .collect();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/records/events/append-batch",
            rig.emulator.api_url()
        ))
        .bearer_auth(common::rig::TOKEN)
        .header("Idempotency-Key", &key)
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    wait_for("the earlier job", Duration::from_secs(30), || async {
        rig.rows("events").await.len() == 10
    })
    .await;

    let mut flags = APPEND.to_vec();
    flags.extend([("--batch-max-records", "10"), ("--batch-max-wait", "20s")]);
    let worker = rig.start(&flags).await;
    rig.finish(worker, Duration::from_secs(60)).await;
    let mut values = event_values(&rig).await;
    values.sort_unstable();
    assert_eq!(values, (0..10).collect::<Vec<u64>>(), "each record once");
    let dlq = rig.dlq().await;
    assert_eq!(dlq.len(), 10, "kept, not deleted");
    assert!(dlq.iter().all(|e| e.reason() == "key_reused"), "{dlq:?}");
}

/// Defect 4: the heartbeat sent one ChangeMessageVisibilityBatch at a time. Behind an SQS that takes
/// 50 ms a call, 1,500 held messages at a 4 s visibility need 7.5 s a round, so they reappeared in
/// the middle of their job and were received twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d04_the_heartbeat_keeps_a_large_held_set_invisible_behind_a_slow_sqs() {
    let rig = Rig::with(RigOptions {
        visibility_s: 4,
        ..RigOptions::default()
    })
    .await;
    let proxy = SqsProxy::start(4).await;
    proxy.set(SqsFaults {
        latency: Duration::from_millis(50),
        latency_ops: vec!["ChangeMessageVisibilityBatch"],
        ..SqsFaults::default()
    });
    rig.faults(json!({"processing_ms": 8_000})).await;
    rig.send(&(0..1_500).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start_via(
            &proxy.url,
            &[
                ("--batch-max-records", "1000"),
                ("--batch-max-wait", "1s"),
                ("--max-in-flight", "2"),
                ("--ack-on", "completed"),
            ],
        )
        .await;
    let summary = rig.finish(worker, Duration::from_secs(120)).await;
    assert_eq!(
        summary.counts.received, 1_500,
        "no message reappeared while it was held"
    );
    assert_eq!(rig.rows("profiles").await.len(), 1_500);
}

/// Defect 5: SQS calls had no timeout, so a black-holed connection held the drain far past
/// `--drain-timeout`. Nothing may be lost either: the held messages come back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d05_a_black_holed_sqs_cannot_stretch_the_drain_past_its_deadline() {
    let rig = Rig::with(RigOptions {
        visibility_s: 5,
        ..RigOptions::default()
    })
    .await;
    let proxy = SqsProxy::start(5).await;
    rig.faults(json!({"processing_ms": 60_000})).await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start_via(
            &proxy.url,
            &[
                ("--batch-max-wait", "300ms"),
                ("--ack-on", "completed"),
                ("--drain-timeout", "3s"),
            ],
        )
        .await;
    rig.first_batch_request().await;
    proxy.update(|f| f.blackhole = true);
    let started = Instant::now();
    worker.stop().await;
    let drain = started.elapsed();
    assert!(
        drain < Duration::from_secs(15),
        "the drain kept its 3 s deadline (plus the SQS call timeouts): {drain:?}"
    );
    wait_for(
        "the held messages to come back",
        Duration::from_secs(60),
        || async { rig.depth(&rig.queue_url).await.0 == 20 },
    )
    .await;
}

/// Defect 6: backpressure counted messages, so big bodies filled memory. The worker must hold no
/// more than its byte budget plus what its one poller has in hand. The default budget here is
/// (1 in flight + 1) x 1 MiB, raised to its 4 MiB floor: 34 bodies of 120 KB, plus 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d06_held_bytes_are_bounded_not_only_held_messages() {
    let rig = Rig::new().await;
    rig.faults(json!({"processing_ms": 1_000})).await;
    let padding = "x".repeat(120 * 1024);
    let bodies: Vec<String> = (0..150)
        .map(|i| {
            format!(r#"{{"email":"big{i}@example.com","first_name":"{padding}","score":{i}}}"#)
        })
        .collect();
    for chunk in bodies.chunks(2) {
        rig.send(chunk).await;
    }
    let worker = rig
        .start(&[
            ("--batch-max-bytes", "1MiB"),
            ("--batch-max-records", "1000"),
            ("--max-in-flight", "1"),
            ("--pollers", "1"),
            ("--batch-max-wait", "500ms"),
            ("--ack-on", "completed"),
        ])
        .await;
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        peak = peak.max(rig.depth(&rig.queue_url).await.1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.finish(worker, Duration::from_secs(300)).await;
    assert!(
        peak <= 34 + 10,
        "at most the byte budget plus the poller's receive was held: peak {peak}"
    );
    assert_eq!(rig.rows("profiles").await.len(), 150);
}

/// Defect 7: SQS hands out a message the worker still holds. It must be submitted once: an append
/// must not carry the record twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d07_a_message_received_twice_is_submitted_once() {
    let rig = Rig::new().await;
    let proxy = SqsProxy::start(7).await;
    proxy.set(SqsFaults {
        duplicate: 1.0,
        ..SqsFaults::default()
    });
    rig.send(&events(30)).await;
    let worker = rig
        .start_via(
            &proxy.url,
            &[APPEND[0], APPEND[1], ("--batch-max-wait", "500ms")],
        )
        .await;
    rig.finish(worker, Duration::from_secs(60)).await;
    assert!(proxy.injected().0 >= 30, "the proxy duplicated messages");
    assert_each_event_once(&rig, 30).await;
}

/// Defect 8: a 404 on the first job poll meant "the job does not exist" and the batch was sent
/// again under a new key. The job did exist, so the append was written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d08_a_404_on_the_first_job_poll_does_not_resubmit() {
    let rig = Rig::new().await;
    rig.faults(json!({"apply_to": ["jobs"], "next": [{"status": 404}]}))
        .await;
    rig.send(&events(20)).await;
    append_each_once(
        &rig,
        &[
            ("--batch-max-records", "20"),
            ("--batch-max-wait", "2s"),
            ("--ack-on", "completed"),
        ],
        20,
    )
    .await;
}

/// Defect 8, the second half: `statusPath` is relative to the base URL, with or without its
/// leading slash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d08_a_status_path_without_its_slash_is_joined_to_the_base() {
    let rig = Rig::new().await;
    rig.faults(json!({"status_path_relative": true})).await;
    rig.send(&events(10)).await;
    let worker = rig
        .start(&[APPEND[0], APPEND[1], ("--ack-on", "completed")])
        .await;
    rig.finish(worker, Duration::from_secs(60)).await;
    assert_each_event_once(&rig, 10).await;
}

/// Defect 9: every transient failure released at visibility 0, so an API outage spent receive
/// counts and SQS moved healthy messages to the redrive DLQ. A 30 s outage with
/// `maxReceiveCount` 5 must cost time, not messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d09_an_api_outage_spends_time_not_receive_counts() {
    let rig = Rig::new().await;
    let redrive = rig.attach_redrive(5).await;
    rig.faults(json!({"statuses": {"503": 1.0}})).await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start(&[("--retry-attempts", "2"), ("--batch-max-wait", "300ms")])
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    rig.faults(json!({"statuses": {}})).await;
    wait_for("twenty rows", Duration::from_secs(180), || async {
        rig.rows("profiles").await.len() == 20 || rig.depth(&redrive).await != (0, 0)
    })
    .await;
    worker.stop().await;
    let moved = rig.drain(&redrive).await;
    assert!(
        moved.is_empty(),
        "{} healthy messages reached the redrive DLQ",
        moved.len()
    );
    assert_eq!(rig.rows("profiles").await.len(), 20);
}

/// Defect 10: extreme settings panicked (exit 101) at parse or later at `Instant` arithmetic. Each
/// must exit 2 and name the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d10_absurd_settings_exit_2_naming_the_setting() {
    let cases: &[(&str, &str)] = &[
        ("--batch-max-wait", "1.9e19"),
        ("--batch-max-wait", "1e19s"),
        ("--job-timeout", "1e19"),
        ("--drain-timeout", "1e19"),
        ("--request-timeout", "1e19"),
        ("--auth-retry", "1e19"),
        ("--rate-limit", "1e-300"),
        ("--rate-limit", "1e300"),
        ("--batch-max-bytes", "1e30"),
        ("--pollers", "99999999999999999999999"),
        ("--visibility-timeout", "1e19"),
        ("--visibility-timeout", "NaN"),
        ("--batch-max-records", "0"),
        ("--batch-max-records", "-1"),
        ("--max-in-flight", "1e9"),
        ("--retry-attempts", "1e100"),
        ("--job-timeout", "-5"),
        ("--drain-timeout", "inf"),
        ("--max-held-bytes", "1e100"),
        ("--max-held-bytes", "1"),
        ("--release-backoff", "1e19"),
        ("--release-backoff", "0"),
        ("--listen", "999.1.1.1:99999"),
        ("--log-format", "xml"),
        ("--ack-on", "\u{1F4A5}"),
        ("--operation", ""),
        ("--match-key", " "),
        ("--queue-url", "ftp://queue"),
        ("--api-url", "not a url"),
        ("--api-token", "has spaces in it"),
    ];
    let base: [(&str, &str); 6] = [
        ("--queue-url", "http://127.0.0.1:9/000000000000/q"),
        ("--dlq-url", "http://127.0.0.1:9/000000000000/dlq"),
        ("--api-url", "http://127.0.0.1:9/public/v1"),
        ("--api-token", "t"),
        ("--object", "profiles"),
        ("--listen", "127.0.0.1:0"),
    ];
    let mut failures = Vec::new();
    for (flag, value) in cases {
        let mut argv = vec!["run".to_owned()];
        for (name, default) in base.iter().filter(|(name, _)| name != flag) {
            argv.extend([name.to_string(), default.to_string()]);
        }
        argv.push(format!("{flag}={value}"));
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            common::worker_binary().args(&argv).output(),
        )
        .await;
        let outcome = match output {
            Ok(Ok(output)) => {
                let stderr = String::from_utf8_lossy(&output.stderr).to_string();
                if output.status.code() == Some(2) && stderr.contains(flag) {
                    continue;
                }
                format!("exit {:?}: {}", output.status.code(), stderr.trim())
            }
            Ok(Err(error)) => format!("did not run: {error}"),
            Err(_) => "still running after 30 s".to_owned(),
        };
        failures.push(format!("{flag} {value}: {outcome}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
