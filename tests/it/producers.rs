//! Producers as they are: a body with fields the object's schema does not know. With
//! `--unknown-fields drop` those fields are left out and counted, and the rest commits; with the
//! default, `reject`, the message goes to the DLQ as `unknown_field`, byte for byte.

use std::time::Duration;

use serde_json::Value;

use crate::common::rig::{Rig, profile, wait_for};

/// A profile with two fields the schema does not know, one of them nested.
fn with_extras(i: usize) -> String {
    let mut body: Value = serde_json::from_str(&profile(i)).expect("a profile");
    body["utm_source"] = Value::from("newsletter");
    body["device"] = serde_json::json!({"os": "ios", "version": 17});
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_drop_commits_the_rest_and_counts_what_it_dropped() {
    let rig = Rig::new().await;
    let bodies: Vec<String> = (0..30).map(with_extras).collect();
    rig.send(&bodies).await;
    let worker = rig
        .start(&[("--unknown-fields", "drop"), ("--batch-max-wait", "200ms")])
        .await;
    wait_for("30 committed rows", Duration::from_secs(30), || async {
        rig.rows("profiles").await.len() == 30
    })
    .await;
    let dropped = worker.metric("sbw_unknown_fields_dropped_total").await;
    rig.finish(worker, Duration::from_secs(30)).await;
    assert_eq!(dropped, 60.0, "two fields left out of each of 30 records");
    let rows = rig.rows("profiles").await;
    assert!(
        rows.iter()
            .all(|row| row.get("utm_source").is_none() && row.get("device").is_none()),
        "no dropped field reached the API"
    );
    let row = rows
        .iter()
        .find(|row| row["email"] == "user7@example.com")
        .expect("row 7");
    assert_eq!(row["first_name"], "Ada7");
    let accounted = rig.assert_accounted("profiles", "email", &bodies).await;
    assert!(accounted.dead_lettered.is_empty() && accounted.queued == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_reject_dead_letters_the_exact_body() {
    let rig = Rig::new().await;
    let bodies = vec![with_extras(1), profile(2)];
    rig.send(&bodies).await;
    let worker = rig.start(&[("--batch-max-wait", "200ms")]).await;
    wait_for("one committed row", Duration::from_secs(30), || async {
        rig.rows("profiles").await.len() == 1
    })
    .await;
    rig.finish(worker, Duration::from_secs(30)).await;
    let dlq = rig.dlq().await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].reason(), "unknown_field");
    assert_eq!(dlq[0].body, bodies[0], "the whole body, byte for byte");
}
