//! Producers as AWS shops have them, on LocalStack and the emulator: messages published through a
//! real SNS topic (a subscription with raw delivery, and one without, which wraps each body in a
//! notification), EventBridge-shaped events, a nested event mapped field by field (from JSON
//! Pointers and from a message attribute), and the two DLQ reasons of their own: a body that is
//! not the named envelope, and one the mapping finds nothing in. Each ends in the emulator's
//! store or in the DLQ with its exact body.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use serde_json::{Value, json};

use crate::common;
use crate::common::rig::{Rig, profile, wait_for};
use crate::common::sns::Topic;

async fn committed(rig: &Rig, n: usize) {
    wait_for(
        &format!("{n} committed rows"),
        Duration::from_secs(30),
        || async { rig.rows("profiles").await.len() == n },
    )
    .await;
}

/// One topic, two subscribed queues: the wrapped one drained with `--envelope sns`, the raw one
/// with `--envelope none`. Both commit every record published, and nothing is left or
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_topic_delivers_raw_and_wrapped_and_both_commit() {
    let wrapped = Rig::new().await;
    let raw = Rig::new().await;
    let topic = Topic::create(&common::unique("producers")).await;
    topic
        .subscribe(&wrapped.sqs, &wrapped.queue_url, false)
        .await;
    topic.subscribe(&raw.sqs, &raw.queue_url, true).await;
    let bodies: Vec<String> = (0..25).map(profile).collect();
    for body in &bodies {
        topic.publish(body, &[("tenant", "acme")]).await;
    }
    // Under --envelope sns a raw body would be dead-lettered: every row committed and an empty
    // DLQ show that SNS wrapped them, and that the worker unwrapped each.
    let worker = wrapped.start(&[("--envelope", "sns")]).await;
    committed(&wrapped, 25).await;
    wrapped.finish(worker, Duration::from_secs(30)).await;
    let accounted = wrapped.assert_accounted("profiles", "email", &bodies).await;
    assert!(accounted.dead_lettered.is_empty() && accounted.queued == 0);

    let worker = raw.start(&[("--envelope", "none")]).await;
    committed(&raw, 25).await;
    raw.finish(worker, Duration::from_secs(30)).await;
    let rows = raw.rows("profiles").await;
    let row = rows
        .iter()
        .find(|row| row["email"] == "user7@example.com")
        .expect("row 7");
    assert_eq!(row["first_name"], "Ada7");
    assert_eq!(row["score"], 7);
    let accounted = raw.assert_accounted("profiles", "email", &bodies).await;
    assert!(accounted.dead_lettered.is_empty() && accounted.queued == 0);
    topic.delete().await;
}

/// An EventBridge event around a nested producer event.
fn event(i: usize) -> String {
    json!({
        "version": "0",
        "id": format!("ev-{i}"),
        "detail-type": "UserSignedUp",
        "source": "com.example.accounts",
        "account": "000000000000",
        "time": "2026-12-03T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "user": {"email": format!("user{i}@example.com"), "name": {"first": format!("Ada{i}")}},
            "plan": {"tier": "gold", "seats": i},
            "utm": {"source": "newsletter"}
        }
    })
    .to_string()
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("type and value")
}

/// Sends bodies with a `country` message attribute each.
async fn send_with_country(rig: &Rig, bodies: &[String]) {
    for (start, chunk) in bodies.chunks(10).enumerate() {
        let mut request = rig.sqs.send_message_batch().queue_url(&rig.queue_url);
        for (i, body) in chunk.iter().enumerate() {
            request = request.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(format!("{start}-{i}"))
                    .message_body(body)
                    .message_attributes("country", string_attribute("NZ"))
                    .build()
                    .expect("entry"),
            );
        }
        let output = request.send().await.expect("SendMessageBatch");
        assert!(output.failed.is_empty(), "{:?}", output.failed);
    }
}

/// EventBridge events commit: with a mapping, the record is the mapped fields of the nested
/// event and of a message attribute; a mapped field the schema does not know is dropped and
/// counted under `--unknown-fields drop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_events_commit_and_a_nested_event_is_mapped() {
    let rig = Rig::new().await;
    let events: Vec<String> = (0..20).map(event).collect();
    send_with_country(&rig, &events).await;
    let worker = rig
        .start(&[
            ("--envelope", "eventbridge"),
            (
                "--field",
                "email=/user/email,first_name=/user/name/first,tier=/plan/tier,score=/plan/seats,\
                 country=attribute:country,utm=/utm/source",
            ),
            ("--unknown-fields", "drop"),
        ])
        .await;
    committed(&rig, 20).await;
    let dropped = worker.metric("sbw_unknown_fields_dropped_total").await;
    rig.finish(worker, Duration::from_secs(30)).await;
    assert_eq!(
        dropped, 20.0,
        "utm, which the schema does not know, once a record"
    );
    let rows = rig.rows("profiles").await;
    let row = rows
        .iter()
        .find(|row| row["email"] == "user7@example.com")
        .expect("row 7");
    assert_eq!(row["first_name"], "Ada7");
    assert_eq!(row["tier"], "gold");
    assert_eq!(row["score"], 7);
    assert_eq!(row["country"], "NZ", "from the message attribute");
    assert!(row.get("utm").is_none() && row.get("user").is_none());
    assert!(rig.dlq().await.is_empty());

    // Unmapped, the event's detail is the record.
    let flat = Rig::new().await;
    let bodies: Vec<String> = (0..5)
        .map(|i| {
            let mut event: Value = serde_json::from_str(&event(i)).expect("an event");
            event["detail"] = serde_json::from_str(&profile(i)).expect("a profile");
            event.to_string()
        })
        .collect();
    flat.send(&bodies).await;
    let worker = flat.start(&[("--envelope", "eventbridge")]).await;
    committed(&flat, 5).await;
    flat.finish(worker, Duration::from_secs(30)).await;
    assert!(flat.dlq().await.is_empty());
}

/// Under `--envelope sns` with a mapping: a raw body is `not_an_envelope`, a notification whose
/// event has none of the mapped sources is `mapping_failed`; each DLQ copy holds the exact body,
/// and the SNS MessageId where the body has one. A good notification commits beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_envelope_and_a_bad_mapping_go_to_the_dlq_with_the_exact_body() {
    let rig = Rig::new().await;
    let notification = |message: &Value, id: &str| {
        json!({
            "Type": "Notification",
            "MessageId": id,
            "TopicArn": "arn:aws:sns:us-east-1:000000000000:signups",
            "Message": message.to_string(),
            "Timestamp": "2026-12-03T12:00:00.000Z"
        })
        .to_string()
    };
    // An empty `id` of its own: SQS would refuse an empty `dlq-sns-message-id`, and the copy.
    let raw = r#"{"id":"","user":{"email":"raw@example.com"}}"#.to_owned();
    let unmapped = notification(&json!({"account": {"mail": "x@example.com"}}), "sns-bad");
    let good = notification(&json!({"user": {"email": "good@example.com"}}), "sns-good");
    rig.send(&[raw.clone(), unmapped.clone(), good]).await;
    let worker = rig
        .start(&[("--envelope", "sns"), ("--field", "email=/user/email")])
        .await;
    committed(&rig, 1).await;
    rig.finish(worker, Duration::from_secs(30)).await;
    assert_eq!(rig.rows("profiles").await[0]["email"], "good@example.com");
    let mut dlq = rig.dlq().await;
    dlq.sort_by(|a, b| a.reason().cmp(b.reason()));
    let reasons: Vec<&str> = dlq.iter().map(|entry| entry.reason()).collect();
    assert_eq!(reasons, ["mapping_failed", "not_an_envelope"]);
    assert_eq!(dlq[0].body, unmapped, "byte for byte");
    assert_eq!(dlq[0].attr("dlq-sns-message-id"), Some("sns-bad"));
    assert!(
        dlq[0]
            .attr("dlq-error-message")
            .unwrap_or("")
            .contains("/user/email"),
        "{:?}",
        dlq[0].attributes
    );
    assert_eq!(dlq[1].body, raw, "byte for byte");
    assert_eq!(dlq[1].attr("dlq-sns-message-id"), None);
    assert!(
        dlq[1]
            .attr("dlq-error-message")
            .unwrap_or("")
            .contains("--envelope"),
        "{:?}",
        dlq[1].attributes
    );
}

/// `check --sample` shows the envelope and the mapping, and the record a sample body makes, or
/// the DLQ reason it would get, before anything is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_applies_the_mapping_to_a_sample() {
    let rig = Rig::new().await;
    rig.attach_redrive(5).await;
    let dir = std::env::temp_dir().join(common::unique("sample"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let good = dir.join("event.json");
    std::fs::write(&good, event(3) + "\n").expect("write the sample");
    let bad = dir.join("raw.json");
    std::fs::write(&bad, profile(3)).expect("write the sample");
    let check = |sample: &std::path::Path| {
        let mut command = common::worker_binary();
        command
            .arg("check")
            .args(rig.args(&[
                ("--envelope", "eventbridge"),
                (
                    "--field",
                    "email=/user/email,tier=/plan/tier,score=/plan/seats",
                ),
            ]))
            .arg("--sample")
            .arg(sample);
        common::output_text(command)
    };
    let (code, out) = check(&good).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("envelope eventbridge; fields: email ← /user/email, tier ← /plan/tier, score ← /plan/seats"),
        "{out}"
    );
    assert!(
        out.contains(r#"record {"email":"user3@example.com","tier":"gold","score":3}"#),
        "{out}"
    );
    let (code, out) = check(&bad).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("would go to the DLQ as not_an_envelope"),
        "{out}"
    );
    assert!(
        rig.rows("profiles").await.is_empty(),
        "check writes nothing"
    );
}
