//! Transient failures and request errors, end to end: retries reuse one key and one body, a
//! committed-then-500 batch is replayed rather than written twice, `Retry-After` is honoured, and
//! 413, 422 and 401 are each handled their own way. Nothing is lost and nothing transient reaches
//! the DLQ.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use crate::common::rig::{Rig, RigOptions, profile, wait_for};
use crate::common::views::Request;
use records_emulator::EmulatorConfig;
use serde_json::json;

async fn wait_empty(rig: &Rig) {
    wait_for("the source queue to empty", Duration::from_secs(90), || {
        rig.source_empty()
    })
    .await;
}

fn keys(requests: &[Request]) -> Vec<&str> {
    requests
        .iter()
        .filter_map(|r| r.idempotency_key.as_deref())
        .collect()
}

fn statuses(requests: &[Request]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

async fn committed_emails(rig: &Rig) -> HashSet<String> {
    rig.rows("profiles")
        .await
        .iter()
        .filter_map(|r| r["email"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_503s_then_success_give_one_job_under_one_key() {
    let rig = Rig::new().await;
    rig.send(&(0..50).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 503, "count": 3}]}))
        .await;
    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    assert_eq!(statuses(&requests), [503, 503, 503, 202]);
    let keys: HashSet<&str> = keys(&requests).into_iter().collect();
    assert_eq!(keys.len(), 1, "every retry reuses the key");
    let jobs = rig.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].idempotency_key.as_deref(), keys.into_iter().next());
    assert_eq!(rig.stats().await.injected_faults, 3);
    assert_eq!(committed_emails(&rig).await.len(), 50);
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_then_500_is_replayed_not_written_twice() {
    let rig = Rig::new().await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"commit_then_500": 1.0})).await;
    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    assert_eq!(statuses(&requests), [500, 202]);
    let keys = keys(&requests);
    assert_eq!(keys[0], keys[1]);
    let stats = rig.stats().await;
    assert_eq!(
        stats.replays, 1,
        "the retry is answered from the key's stored 202"
    );
    assert_eq!(stats.batches, 1, "one batch was committed");
    assert_eq!(rig.jobs().await.len(), 1, "one job");
    assert_eq!(committed_emails(&rig).await.len(), 20);
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_2_waits_at_least_2_seconds() {
    let rig = Rig::new().await;
    rig.send(&(0..5).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 429, "count": 1}], "retry_after_s": 2}))
        .await;
    let worker = rig.start(&[("--batch-max-wait", "500ms")]).await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    assert_eq!(statuses(&requests), [429, 202]);
    let at = |i: usize| requests[i].at_ms;
    let waited = at(1) - at(0);
    assert!(
        waited >= 2_000,
        "waited only {waited} ms after Retry-After: 2"
    );
    assert_eq!(committed_emails(&rig).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_into_halves_with_their_own_keys() {
    let rig = Rig::new().await;
    let ids = rig.send(&(0..8).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 413, "count": 1}]}))
        .await;
    let worker = rig
        .start(&[("--batch-max-wait", "1s"), ("--max-in-flight", "1")])
        .await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    assert_eq!(statuses(&requests), [413, 202, 202]);
    let keys = keys(&requests);
    assert_eq!(
        keys[0],
        sqs_batch_worker::batch::key::batch_key(ids.iter().map(String::as_str)),
        "the first try carries the key of all eight IDs"
    );
    assert!(keys[1] != keys[0] && keys[2] != keys[0] && keys[1] != keys[2]);
    let jobs = rig.jobs().await;
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.accepted_records == Some(4)));
    assert_eq!(committed_emails(&rig).await.len(), 8);
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_schema_error_dead_letters_the_offender_and_refreshes_the_schema() {
    let rig = Rig::new().await;
    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    // A migration drops `plan` after the worker fetched the schema.
    let mut schema = rig.metadata("profiles").await;
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "plan");
    let events = rig.metadata("events").await;
    rig.set_schemas(json!([schema, events])).await;

    let offender = r#"{"email":"planned@example.com","plan":"pro"}"#.to_owned();
    let mut bodies: Vec<String> = (0..6).map(profile).collect();
    bodies.insert(3, offender.clone());
    let ids = rig.send(&bodies).await;
    wait_empty(&rig).await;
    // After the refresh, the decoder knows: a later `plan` is refused without an API call.
    let later = r#"{"email":"later@example.com","plan":"pro"}"#.to_owned();
    let later_id = rig.send(std::slice::from_ref(&later)).await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    assert_eq!(statuses(&requests), [422, 202]);
    let dlq = rig.dlq().await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let first = dlq
        .iter()
        .find(|e| e.attr("dlq-source-message-id") == Some(ids[3].as_str()))
        .expect("the offender");
    assert_eq!(first.reason(), "unknown_field");
    assert_eq!(first.body, offender);
    assert_eq!(
        first.attr("dlq-error-code"),
        Some("CDP_ETL.VALIDATION.REQUEST_SCHEMA")
    );
    let second = dlq
        .iter()
        .find(|e| e.attr("dlq-source-message-id") == Some(later_id[0].as_str()))
        .expect("the later one");
    assert_eq!(second.reason(), "unknown_field");
    assert_eq!(
        second.attr("dlq-error-code"),
        None,
        "refused by the worker itself"
    );
    assert_eq!(committed_emails(&rig).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_pauses_the_worker_holds_the_batch_and_dead_letters_nothing() {
    let rig = Rig::new().await;
    rig.send(&(0..10).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 401, "count": 1}]}))
        .await;
    let worker = rig
        .start(&[("--batch-max-wait", "500ms"), ("--auth-retry", "3s")])
        .await;
    wait_for(
        "/readyz to say the token was refused",
        Duration::from_secs(30),
        || async {
            let (status, why) = worker.get("/readyz").await;
            status == 503 && why.contains("401")
        },
    )
    .await;
    let (_, why) = worker.get("/readyz").await;
    assert!(why.contains("Fix:"), "readyz says what to fix: {why}");
    assert!(
        !why.contains(common::rig::TOKEN),
        "the token is never shown"
    );
    wait_empty(&rig).await;
    assert_eq!(
        worker.get("/readyz").await.0,
        200,
        "ready again after success"
    );
    let summary = worker.stop().await;

    assert_eq!(statuses(&rig.batch_requests().await), [401, 202]);
    // A refusal of every batch spends time, not receive counts: the batch is
    // held and sent again, never released to be received again.
    assert_eq!(
        summary.counts.released, 0,
        "the batch was held, not released"
    );
    assert!(rig.dlq().await.is_empty(), "a 401 dead-letters nothing");
    assert_eq!(committed_emails(&rig).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_releases_the_messages_and_never_dead_letters() {
    let rig = Rig::new().await;
    rig.send(&(0..10).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 503, "count": 4}]}))
        .await;
    let worker = rig
        .start(&[
            ("--batch-max-wait", "300ms"),
            ("--retry-attempts", "2"),
            ("--max-in-flight", "1"),
        ])
        .await;
    // Wait for the outcome, not only an empty queue: the released messages wait out their
    // backoff (10 s, then 20 s), and a loaded LocalStack once reported the queue empty meanwhile.
    wait_for("all ten committed", Duration::from_secs(120), || async {
        committed_emails(&rig).await.len() == 10 && rig.source_empty().await
    })
    .await;
    let summary = worker.stop().await;

    assert!(summary.counts.released >= 10, "released after the budget");
    assert!(summary.counts.received >= 20, "SQS redelivered them");
    assert!(
        rig.dlq().await.is_empty(),
        "transient failures never reach the DLQ"
    );
    assert_eq!(committed_emails(&rig).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_5xx_429_409_resets_and_commit_then_500_loses_nothing() {
    let rig = Rig::with(RigOptions {
        emulator: EmulatorConfig {
            seed: 7,
            ..EmulatorConfig::for_tests(common::rig::TOKEN)
        },
        ..RigOptions::default()
    })
    .await;
    let bodies: Vec<String> = (0..2_000).map(profile).collect();
    rig.send(&bodies).await;
    rig.faults(json!({
        "statuses": {"500": 0.1, "503": 0.15, "429": 0.1, "409": 0.05},
        "retry_after_s": 1,
        "reset": 0.05,
        "commit_then_500": 0.1,
    }))
    .await;
    let worker = rig
        .start(&[
            ("--batch-max-records", "100"),
            ("--batch-max-wait", "500ms"),
        ])
        .await;
    wait_for(
        "the source queue to empty",
        Duration::from_secs(180),
        || rig.source_empty(),
    )
    .await;
    worker.stop().await;

    let stats = rig.stats().await;
    assert!(stats.injected_faults > 0);
    assert_eq!(committed_emails(&rig).await.len(), 2_000);
    assert!(
        rig.dlq().await.is_empty(),
        "transient failures never reach the DLQ"
    );
    let jobs = rig.jobs().await;
    let job_keys: HashSet<&str> = jobs
        .iter()
        .filter_map(|j| j.idempotency_key.as_deref())
        .collect();
    assert_eq!(job_keys.len(), jobs.len(), "no key made two jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_rate_limit_holds_a_server_limit_without_a_storm_of_429s() {
    let rig = Rig::new().await;
    rig.faults(json!({"rate_limit_per_s": 2.0})).await;
    rig.send(&(0..200).map(profile).collect::<Vec<_>>()).await;
    let worker = rig
        .start(&[
            ("--batch-max-records", "10"),
            ("--batch-max-wait", "200ms"),
            ("--rate-limit", "2"),
        ])
        .await;
    wait_empty(&rig).await;
    worker.stop().await;

    let requests = rig.batch_requests().await;
    let refused = statuses(&requests).iter().filter(|s| **s == 429).count();
    assert!(requests.len() >= 20);
    assert!(
        refused <= 2,
        "{refused} 429s in {} requests",
        requests.len()
    );
    assert_eq!(committed_emails(&rig).await.len(), 200);
}
