//! Scale-out without coordination: three worker processes on one queue of 30,000 messages. Every
//! row is committed, nothing is lost, and batches stay large (mean at least half of
//! `--batch-max-records`).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use crate::common::rig::{Rig, profile, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_drain_thirty_thousand_messages_in_large_batches() {
    let rig = Rig::new().await;
    let bodies: Vec<String> = (0..30_000).map(profile).collect();
    rig.send(&bodies).await;
    let started = std::time::Instant::now();
    let mut replicas: Vec<_> = (0..3)
        .map(|i| {
            rig.spawn_binary(
                &[("--batch-max-wait", "5s")],
                &common::log_path(&format!("replica{i}")),
            )
        })
        .collect();
    wait_for("the queue to empty", Duration::from_secs(300), || {
        rig.source_empty()
    })
    .await;
    let drained_s = started.elapsed().as_secs_f64();
    for replica in &replicas {
        common::signal(replica, libc::SIGTERM);
    }
    for replica in &mut replicas {
        let status = replica.wait().await.expect("wait");
        assert_eq!(status.code(), Some(0));
    }

    let rows = rig.rows("profiles").await;
    let emails: HashSet<&str> = rows.iter().filter_map(|r| r["email"].as_str()).collect();
    assert_eq!(emails.len(), 30_000, "every row is committed");
    assert!(rig.dlq().await.is_empty(), "nothing is dead-lettered");
    let stats = rig.stats().await;
    let batches = stats.batches;
    let records = stats.records_accepted;
    let mean = records as f64 / batches as f64;
    eprintln!(
        "scale-out: 3 replicas, 30000 messages in {drained_s:.1} s, {batches} batches, mean batch {mean:.0} records"
    );
    assert!(mean >= 500.0, "mean batch {mean:.0} < 50% of 1,000");
    assert_eq!(records, 30_000, "no message was submitted twice");
}
