//! The worker's life on LocalStack: visibility kept alive through a long job, a SIGTERM drain of the
//! real binary, kill -9 and restart with nothing lost, and FIFO order within a message group.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::rig::{Rig, RigOptions, profile, wait_for};
use serde_json::{Value, json};
use tokio::process::Child;

fn spawn_binary(rig: &Rig, extra: &[(&str, &str)], log: &str) -> Child {
    rig.spawn_binary(extra, log)
}

fn signal(child: &Child, signal: i32) {
    common::signal(child, signal)
}

fn emails_of(bodies: impl IntoIterator<Item = String>) -> HashSet<String> {
    bodies
        .into_iter()
        .filter_map(|b| serde_json::from_str::<Value>(&b).ok())
        .filter_map(|v| v["email"].as_str().map(str::to_owned))
        .collect()
}

async fn committed(rig: &Rig) -> HashSet<String> {
    rig.rows("profiles")
        .await
        .iter()
        .filter_map(|r| r["email"].as_str().map(str::to_owned))
        .collect()
}

fn log_path(name: &str) -> String {
    common::log_path(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_through_a_long_job_is_never_received_twice() {
    let rig = Rig::with(RigOptions {
        visibility_s: 5,
        ..RigOptions::default()
    })
    .await;
    rig.faults(json!({"processing_ms": 12_000})).await;
    rig.send(&(0..40).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start(&[("--batch-max-wait", "500ms"), ("--ack-on", "completed")])
        .await;
    wait_for("the source queue to empty", Duration::from_secs(60), || {
        rig.source_empty()
    })
    .await;
    let extended = worker.get("/metrics").await.1;
    let summary = worker.stop().await;

    assert_eq!(summary.counts.received, 40, "no message was received twice");
    assert_eq!(summary.counts.deleted, 40);
    let heartbeats = extended
        .lines()
        .find(|l| l.starts_with("sbw_visibility_extensions_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        heartbeats >= 40.0,
        "the heartbeat extended visibility: {heartbeats}"
    );
    assert_eq!(committed(&rig).await.len(), 40);
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0_leaving_nothing_in_flight() {
    let rig = Rig::new().await;
    rig.faults(json!({"processing_ms": 2_000})).await;
    let bodies: Vec<String> = (0..3_000).map(profile).collect();
    rig.send(&bodies).await;
    let log = log_path("sigterm");
    let mut child = spawn_binary(
        &rig,
        &[("--ack-on", "completed"), ("--batch-max-wait", "1s")],
        &log,
    );
    wait_for("the first batch", Duration::from_secs(60), || async {
        rig.stats().await.batches >= 1
    })
    .await;
    signal(&child, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the drain ends within --drain-timeout")
        .expect("wait for the child");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 after a drain; log:\n{log_text}"
    );
    assert!(log_text.contains("worker stopped"), "the exit is logged");

    let (_, in_flight) = rig.depth(&rig.queue_url).await;
    assert_eq!(in_flight, 0, "every open message was released or deleted");
    let left = rig.drain(&rig.queue_url.clone()).await;
    let left_emails = emails_of(left.into_iter().map(|e| e.body));
    let done = committed(&rig).await;
    assert!(
        !done.is_empty(),
        "in-flight batches were finished, not dropped"
    );
    let all: HashSet<String> = done.union(&left_emails).cloned().collect();
    assert_eq!(
        all,
        emails_of(bodies),
        "each message is committed or back in the queue"
    );
    assert!(
        done.is_disjoint(&left_emails),
        "a committed message was deleted, not left behind"
    );
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_in_completed_mode_loses_nothing() {
    let rig = Rig::with(RigOptions {
        visibility_s: 4,
        ..RigOptions::default()
    })
    .await;
    rig.faults(json!({"processing_ms": 1_500})).await;
    let bodies: Vec<String> = (0..3_000).map(profile).collect();
    rig.send(&bodies).await;
    let flags = [
        ("--ack-on", "completed"),
        ("--batch-max-records", "500"),
        ("--batch-max-wait", "1s"),
    ];
    for round in 0..2 {
        let mut child = spawn_binary(&rig, &flags, &log_path("kill9"));
        let target = (round + 1) as usize;
        wait_for("a job to be under way", Duration::from_secs(60), || async {
            rig.jobs().await.len() >= target
        })
        .await;
        signal(&child, libc::SIGKILL);
        let _ = child.wait().await;
    }
    let log = log_path("kill9-final");
    let mut child = spawn_binary(&rig, &flags, &log);
    wait_for(
        "the source queue to empty",
        Duration::from_secs(120),
        || rig.source_empty(),
    )
    .await;
    signal(&child, libc::SIGTERM);
    let status = child.wait().await.expect("wait for the child");
    assert_eq!(status.code(), Some(0));

    assert_eq!(
        committed(&rig).await,
        emails_of(bodies),
        "every row is committed"
    );
    assert!(
        rig.dlq().await.is_empty(),
        "a crash sends nothing to the DLQ"
    );
    let jobs = rig.jobs().await;
    assert!(jobs.len() >= 6, "{} jobs", jobs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_within_a_group_is_kept_across_batches() {
    let rig = Rig::with(RigOptions {
        fifo: true,
        ..RigOptions::default()
    })
    .await;
    let groups = 5;
    let per_group = 40;
    let bodies: Vec<String> = (0..groups * per_group)
        .map(|i| {
            let (group, seq) = (i % groups, i / groups);
            format!(
                r#"{{"session_id":"s{group}","event":"click","occurred_at":"2026-11-23T10:00:00Z","value":{seq}}}"#
            )
        })
        .collect();
    let url = rig.queue_url.clone();
    rig.send_to(&url, &bodies, |i| format!("s{}", i % groups))
        .await;
    let worker = rig
        .start(&[
            ("--object", "events"),
            ("--operation", "append"),
            ("--batch-max-records", "15"),
            ("--batch-max-wait", "200ms"),
        ])
        .await;
    rig.finish(worker, Duration::from_secs(120)).await;

    let rows = rig.rows("events").await;
    assert_eq!(rows.len(), groups * per_group);
    let mut by_group: HashMap<String, Vec<u64>> = HashMap::new();
    for row in &rows {
        by_group
            .entry(row["session_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(row["value"].as_u64().unwrap());
    }
    for (group, values) in by_group {
        let expected: Vec<u64> = (0..per_group as u64).collect();
        assert_eq!(values, expected, "group {group} was committed in order");
    }
    assert!(rig.stats().await.batches > 1);
    assert!(rig.dlq().await.is_empty());
}
