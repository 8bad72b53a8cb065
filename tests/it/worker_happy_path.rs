//! The happy path on LocalStack and the emulator: 10,000 valid messages become about ten batch
//! calls, every row is committed, and the queues end empty.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::rig::{Rig, profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_become_about_ten_batch_calls() {
    let rig = Rig::new().await;
    let bodies: Vec<String> = (0..10_000).map(profile).collect();
    rig.send(&bodies).await;
    assert_eq!(rig.depth(&rig.queue_url).await, (10_000, 0));

    let worker = rig.start(&[("--batch-max-wait", "2s")]).await;
    let summary = rig.finish(worker, Duration::from_secs(120)).await;

    let rows = rig.rows("profiles").await;
    let emails: HashSet<&str> = rows.iter().filter_map(|r| r["email"].as_str()).collect();
    assert_eq!(emails.len(), 10_000, "every message's row is committed");
    let row = rows
        .iter()
        .find(|r| r["email"] == "user42@example.com")
        .expect("row 42");
    assert_eq!(row["first_name"], "Ada42");
    assert_eq!(row["score"], 42);

    let stats = rig.stats().await;
    let batches = stats.batches;
    assert!(
        (10..=13).contains(&batches),
        "about 10 batch calls for 10,000 messages at 1,000 per batch, got {batches}"
    );
    assert_eq!(stats.replays, 0);
    assert_eq!(summary.counts.received, 10_000);
    assert_eq!(summary.counts.deleted, 10_000);
    assert_eq!(summary.released_at_exit, 0);
    assert!(rig.dlq().await.is_empty(), "nothing is dead-lettered");
    assert_eq!(rig.depth(&rig.queue_url).await, (0, 0));
}
