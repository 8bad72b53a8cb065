//! Issue 22: FIFO without head-of-line blocking, on LocalStack's FIFO queue and the emulator. A
//! batch of a hot group waits for that group's job while batches of other groups go past it; the
//! assertions read the emulator's own job records (when each job was created and completed).

use crate::common;

use std::time::Duration;

use crate::common::rig::{Rig, RigOptions, TOKEN, profile, wait_for};
use records_emulator::config::EmulatorConfig;

/// Three messages of a hot group and four of other groups, one record a batch, jobs of 2 s. The
/// hot group's batches go one at a time, in order; the other groups' batches are all created
/// before the hot group's first job completes. On 8f017ce the dispatcher awaited the hot group's
/// gate in its own loop, so every batch behind the hot group's second waited out its first job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h01_other_groups_pass_a_hot_group_whose_job_is_running() {
    let rig = Rig::with(RigOptions {
        fifo: true,
        emulator: EmulatorConfig::with_flags(
            TOKEN,
            &[
                "--queued",
                "10ms",
                "--processing",
                "2s",
                "--keep-job-records",
            ],
        ),
        ..RigOptions::default()
    })
    .await;
    let bodies: Vec<String> = (0..7).map(profile).collect();
    let url = rig.queue_url.clone();
    let group = |i: usize| {
        if i < 3 {
            "hot".to_owned()
        } else {
            format!("cold-{i}")
        }
    };
    rig.send_to(&url, &bodies, group).await;
    // The binary, so that the same test runs against an older build (SBW_WORKER_BINARY).
    let mut worker = rig.spawn_binary(
        &[
            ("--batch-max-records", "1"),
            ("--batch-max-wait", "100ms"),
            ("--max-in-flight", "8"),
            ("--concurrency", "fixed"),
        ],
        &common::log_path("head-of-line"),
    );
    wait_for("seven rows", Duration::from_secs(60), || async {
        rig.rows("profiles").await.len() >= 7
    })
    .await;
    wait_for("every job to end", Duration::from_secs(30), || async {
        rig.jobs_with_records()
            .await
            .iter()
            .all(|job| job.completed_at_ms.is_some())
    })
    .await;
    common::signal(&worker, libc::SIGTERM);
    assert_eq!(
        worker.wait().await.expect("wait").code(),
        Some(0),
        "a clean exit"
    );
    // Each job holds one record: its index in `bodies`, from the email.
    let mut by_index = std::collections::BTreeMap::new();
    for job in rig.jobs_with_records().await {
        let records = job.records.clone().unwrap_or_default();
        let email = records[0]["email"].as_str().unwrap_or_default().to_owned();
        let index: usize = email
            .trim_start_matches("user")
            .trim_end_matches("@example.com")
            .parse()
            .expect("an index");
        let created = job.created_at_ms.expect("created");
        let completed = job.completed_at_ms.expect("completed");
        by_index.insert(index, (created, completed));
    }
    assert_eq!(by_index.len(), 7, "a job a message: {by_index:?}");
    let (hot, cold): (Vec<_>, Vec<_>) = by_index.iter().partition(|(index, _)| **index < 3);
    for pair in hot.windows(2) {
        assert!(
            pair[0].1.1 <= pair[1].1.0,
            "the hot group keeps its order, one job at a time: {hot:?}"
        );
    }
    let first_hot_completed = hot[0].1.1;
    for (index, (created, _)) in &cold {
        assert!(
            *created < first_hot_completed,
            "cold-{index} passed the hot group: created {created}, hot's first job completed \
             {first_hot_completed}; {by_index:?}"
        );
    }
    assert!(rig.dlq().await.is_empty());
}
