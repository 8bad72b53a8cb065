//! A held message's outcomes, as the lease's one home (`src/lease/`) settles them: a delete that
//! fails on every attempt is an outcome of its own. The message is still in the queue, so it is
//! released at once and delivered again; it is not an orphan, which counts only real bugs.

use std::time::Duration;

use crate::common::rig::{Rig, profile, wait_for};
use crate::common::sqs_proxy::{SqsFaults, SqsProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_fails_releases_the_message_and_is_no_orphan() {
    let rig = Rig::new().await;
    let proxy = SqsProxy::start(24).await;
    proxy.set(SqsFaults {
        fail_entries: 1.0,
        fail_entries_ops: vec!["DeleteMessageBatch"],
        ..SqsFaults::default()
    });
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start_via(&proxy.url, &[("--release-backoff", "1s")])
        .await;
    wait_for("20 committed rows", Duration::from_secs(30), || async {
        rig.rows("profiles").await.len() == 20
    })
    .await;
    wait_for(
        "the 20 undeleted messages released",
        Duration::from_secs(30),
        || async { worker.telemetry.counts().released >= 20 },
    )
    .await;
    let orphans = worker.metric("sbw_orphans_released_total").await;
    proxy.set(SqsFaults::default());
    let summary = rig.finish(worker, Duration::from_secs(60)).await;
    assert_eq!(
        orphans, 0.0,
        "a failed delete is released as such, not as the orphan of a dropped claim (a bug)"
    );
    assert!(
        summary.counts.received >= 40,
        "each message came back after its release: received {}",
        summary.counts.received
    );
    assert_eq!(rig.rows("profiles").await.len(), 20, "committed once each");
    assert!(
        rig.source_empty().await,
        "deleted once the deletes went through"
    );
}
