//! Every DLQ reason, end to end on LocalStack and the emulator: the DLQ body is the original body
//! byte for byte, and the `dlq-*` attributes say exactly why, where and from which message.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use crate::common::rig::{DlqEntry, Rig, RigOptions, profile, wait_for};
use serde_json::json;

/// Waits for the source queue to empty, then drains the worker and reads the DLQ.
async fn finish(rig: &Rig, worker: common::rig::Worker) -> Vec<DlqEntry> {
    wait_for("the source queue to empty", Duration::from_secs(60), || {
        rig.source_empty()
    })
    .await;
    worker.stop().await;
    assert_eq!(
        rig.depth(&rig.queue_url).await,
        (0, 0),
        "nothing is left behind"
    );
    rig.dlq().await
}

/// The attributes every DLQ entry carries, whatever its reason.
fn assert_common(entry: &DlqEntry, rig: &Rig, source_id: &str, reason: &str) {
    assert_eq!(entry.reason(), reason, "reason of {entry:?}");
    assert_eq!(entry.attr("dlq-source-message-id"), Some(source_id));
    assert_eq!(entry.attr("dlq-source-queue"), Some(rig.queue_url.as_str()));
    assert_eq!(entry.attr("dlq-receive-count"), Some("1"));
    let message = entry.attr("dlq-error-message").unwrap_or("");
    assert!(
        !message.is_empty() && message.len() <= 1024,
        "error message: {message:?}"
    );
}

fn by_source_id(entries: Vec<DlqEntry>) -> HashMap<String, DlqEntry> {
    entries
        .into_iter()
        .map(|e| (e.attr("dlq-source-message-id").unwrap_or("").to_owned(), e))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_without_an_api_call() {
    let rig = Rig::new().await;
    let big = format!(
        r#"{{"email":"big@example.com","first_name":"{}"}}"#,
        "x".repeat(20_000)
    );
    let cases: Vec<(String, &str)> = vec![
        (r#"{"email": "half@example.com""#.into(), "unparseable"),
        (
            "{\"email\":\"\u{fc}nicode@example.com\", ".into(),
            "unparseable",
        ),
        ("".into(), "unparseable"),
        (r#"["email", "a@example.com"]"#.into(), "not_an_object"),
        (r#""just a string""#.into(), "not_an_object"),
        ("42".into(), "not_an_object"),
        ("null".into(), "not_an_object"),
        (r#"{"first_name":"NoKey"}"#.into(), "missing_match_key"),
        (r#"{"email":""}"#.into(), "missing_match_key"),
        (r#"{"email": 5}"#.into(), "missing_match_key"),
        (
            r#"{"email":"shoe@example.com","shoe_size":44}"#.into(),
            "unknown_field",
        ),
        (big, "oversize"),
    ];
    let mut bodies: Vec<String> = cases.iter().map(|(body, _)| body.clone()).collect();
    // Valid neighbours, one with odd spacing and non-ASCII, which must be committed untouched.
    bodies.push("  {\"email\" : \"spaced@example.com\", \"first_name\": \"Zo\u{eb}\"}\n".into());
    bodies.extend((0..20).map(profile));
    // The empty body cannot be sent to SQS (it must be at least one character): send a space.
    bodies[2] = " ".into();
    let ids = rig.send(&bodies).await;

    let worker = rig
        .start(&[("--batch-max-bytes", "16KiB"), ("--batch-max-wait", "1s")])
        .await;
    let dlq = by_source_id(finish(&rig, worker).await);

    assert_eq!(
        dlq.len(),
        cases.len(),
        "exactly the poison messages are dead-lettered"
    );
    for (index, (_, reason)) in cases.iter().enumerate() {
        let entry = &dlq[&ids[index]];
        assert_common(entry, &rig, &ids[index], reason);
        assert_eq!(entry.body, bodies[index], "the DLQ body is byte-identical");
        assert_eq!(entry.attr("dlq-job-id"), None, "no job was involved");
        assert_eq!(entry.attr("dlq-row-index"), None);
    }
    let stats = rig.stats().await;
    assert_eq!(
        stats.records_accepted, 21,
        "only the valid messages reached the API"
    );
    let rows = rig.rows("profiles").await;
    assert_eq!(rows.len(), 21);
    let spaced = rows
        .iter()
        .find(|r| r["email"] == "spaced@example.com")
        .expect("the spaced row is committed");
    assert_eq!(spaced["first_name"], "Zo\u{eb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_job_rejects_go_to_the_dlq_with_job_and_row() {
    let rig = Rig::new().await;
    let mut bodies: Vec<String> = (0..30).map(profile).collect();
    let bad = [
        r#"{"email":"not-an-email"}"#.to_owned(),
        r#"{"email":"when@example.com","last_seen_at":"yesterday"}"#.to_owned(),
        r#"{"email":"score@example.com","score":"high"}"#.to_owned(),
    ];
    bodies.extend(bad.iter().cloned());
    let ids = rig.send(&bodies).await;

    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    let dlq = by_source_id(finish(&rig, worker).await);
    assert_eq!(dlq.len(), 3);

    let jobs = rig.jobs().await;
    for (offset, body) in bad.iter().enumerate() {
        let id = &ids[30 + offset];
        let entry = &dlq[id];
        assert_common(entry, &rig, id, "invalid_row");
        assert_eq!(&entry.body, body);
        let job_id = entry.attr("dlq-job-id").expect("job id");
        let row: u64 = entry
            .attr("dlq-row-index")
            .expect("row index")
            .parse()
            .expect("a number");
        let job = jobs
            .iter()
            .find(|j| j.job_id.as_deref() == Some(job_id))
            .expect("the job exists");
        let error = job
            .errors
            .as_ref()
            .expect("errors")
            .iter()
            .find(|e| e["index"] == row)
            .expect("the job names this row");
        assert_eq!(entry.attr("dlq-error-code"), error["code"].as_str());
        assert!(
            entry
                .attr("dlq-error-message")
                .unwrap()
                .contains(error["message"].as_str().unwrap()),
            "the API's message is passed on"
        );
    }
    assert_eq!(rig.rows("profiles").await.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_job_counts_but_does_not_name_go_to_the_dlq_as_unidentified() {
    let rig = Rig::new().await;
    // The job names only one of its two invalid rows.
    rig.faults(json!({"errors_limit": 1})).await;
    let bodies = vec![
        profile(1),
        r#"{"email":"bad-one"}"#.to_owned(),
        r#"{"email":"bad-two"}"#.to_owned(),
    ];
    let ids = rig.send(&bodies).await;
    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    let dlq = by_source_id(finish(&rig, worker).await);

    // One batch: one invalid row is named, and the other two rows cannot be told apart, so both
    // go to the DLQ (nothing is lost, and the valid one may be redriven harmlessly).
    assert_eq!(rig.stats().await.batches, 1);
    assert_eq!(dlq.len(), 3);
    let reasons: Vec<&str> = ids.iter().map(|id| dlq[id].reason()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "invalid_row").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "invalid_row_unidentified")
            .count(),
        2,
        "{reasons:?}"
    );
    for (index, id) in ids.iter().enumerate() {
        let entry = &dlq[id];
        assert_common(entry, &rig, id, entry.reason());
        assert_eq!(entry.body, bodies[index]);
        assert!(entry.attr("dlq-job-id").is_some());
        assert!(entry.attr("dlq-row-index").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_api_refuses_with_400_is_isolated_as_request_rejected() {
    let rig = Rig::new().await;
    let bodies: Vec<String> = (0..4).map(profile).collect();
    let ids = rig.send(&bodies).await;
    // The whole batch, its first half and that half's first quarter are refused: bisection ends
    // with one record refused alone, and three committed.
    rig.faults(json!({"next": [{"status": 400, "count": 3}]}))
        .await;
    let worker = rig
        .start(&[("--batch-max-wait", "1s"), ("--max-in-flight", "1")])
        .await;
    let dlq = finish(&rig, worker).await;

    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let entry = &dlq[0];
    let id = entry.attr("dlq-source-message-id").unwrap();
    assert_common(entry, &rig, id, "request_rejected");
    assert_eq!(
        entry.attr("dlq-error-code"),
        Some("CDP_ETL.VALIDATION.REQUEST_INVALID")
    );
    let index = ids.iter().position(|i| i == id).expect("one of ours");
    assert_eq!(entry.body, bodies[index]);
    assert_eq!(rig.rows("profiles").await.len(), 3);
    let requests = rig.batch_requests().await;
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        3,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_twice_sends_its_rows_to_the_dlq_as_job_failed() {
    let rig = Rig::new().await;
    rig.faults(json!({"job_fail": 1.0})).await;
    let bodies: Vec<String> = (0..5).map(profile).collect();
    let ids = rig.send(&bodies).await;
    let worker = rig
        .start(&[("--batch-max-wait", "1s"), ("--ack-on", "completed")])
        .await;
    let dlq = by_source_id(finish(&rig, worker).await);

    let jobs = rig.jobs().await;
    assert_eq!(jobs.len(), 2, "the first job and one resubmission");
    assert!(jobs.iter().all(|j| j.state == "failed"));
    assert_ne!(
        jobs[0].idempotency_key, jobs[1].idempotency_key,
        "the resubmission uses a key derived from the batch key"
    );
    assert_eq!(dlq.len(), 5);
    for (index, id) in ids.iter().enumerate() {
        let entry = &dlq[id];
        assert_common(entry, &rig, id, "job_failed");
        assert_eq!(entry.body, bodies[index]);
        assert_eq!(entry.attr("dlq-job-id"), jobs[1].job_id.as_deref());
    }
    assert!(rig.rows("profiles").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_outlives_the_job_timeout_sends_its_rows_to_the_dlq_as_job_timeout() {
    let rig = Rig::new().await;
    rig.faults(json!({"processing_ms": 8_000})).await;
    let bodies: Vec<String> = (0..3).map(profile).collect();
    let ids = rig.send(&bodies).await;
    let worker = rig
        .start(&[("--batch-max-wait", "500ms"), ("--job-timeout", "1s")])
        .await;
    let dlq = by_source_id(finish(&rig, worker).await);

    assert_eq!(dlq.len(), 3);
    let jobs = rig.jobs().await;
    for (index, id) in ids.iter().enumerate() {
        let entry = &dlq[id];
        assert_common(entry, &rig, id, "job_timeout");
        assert_eq!(entry.body, bodies[index]);
        assert_eq!(entry.attr("dlq-job-id"), jobs[0].job_id.as_deref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_dlq_entries_keep_the_group_id() {
    let rig = Rig::with(RigOptions {
        fifo: true,
        ..RigOptions::default()
    })
    .await;
    let bodies = vec![
        "not json".to_owned(),
        r#"{"email":"x@example.com","nope":1}"#.to_owned(),
        profile(1),
    ];
    let url = rig.queue_url.clone();
    let ids = rig.send_to(&url, &bodies, |i| format!("group-{i}")).await;
    let worker = rig.start(&[("--batch-max-wait", "500ms")]).await;
    let dlq = by_source_id(finish(&rig, worker).await);
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[&ids[0]].group_id.as_deref(), Some("group-0"));
    assert_eq!(dlq[&ids[1]].group_id.as_deref(), Some("group-1"));
    assert_eq!(dlq[&ids[0]].body, bodies[0]);
    let rows = rig.rows("profiles").await;
    assert_eq!(rows.len(), 1, "the valid message of group-2 is committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_md5_does_not_match_goes_to_the_dlq_as_md5_mismatch() {
    let rig = Rig::new().await;
    let proxy = common::sqs_proxy::SqsProxy::start(1).await;
    proxy.set(common::sqs_proxy::SqsFaults {
        corrupt_md5_marker: Some("CORRUPTED-IN-TRANSIT"),
        ..Default::default()
    });
    let bodies = vec![
        r#"{"email":"md5@example.com","first_name":"CORRUPTED-IN-TRANSIT"}"#.to_owned(),
        profile(1),
    ];
    let ids = rig.send(&bodies).await;
    let settings = rig.settings(&[("--batch-max-wait", "500ms")]);
    let worker = rig
        .start_with_client(settings, common::sqs_via(&proxy.url).await)
        .await;
    let dlq = finish(&rig, worker).await;

    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_common(&dlq[0], &rig, &ids[0], "md5_mismatch");
    assert_eq!(dlq[0].body, bodies[0]);
    let rows = rig.rows("profiles").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["email"], "user1@example.com");
}
