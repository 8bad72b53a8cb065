//! Fair queues and message attributes on LocalStack: on a standard queue a `MessageGroupId` is a
//! tenant. A rejected message's DLQ copy keeps the tenant and the producer's message attributes,
//! the tenant is counted (`sbw_dlq_messages_by_tenant_total`), and `redrive` puts both back on
//! the source queue. LocalStack 4.14 takes a group ID on a standard queue, as SQS does since
//! fair queues (July 2025).

use std::time::Duration;

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use crate::common;
use crate::common::rig::{DlqEntry, Rig, profile, wait_for};

fn attribute(kind: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(kind)
        .string_value(value)
        .build()
        .expect("type and value")
}

/// The `n` messages of a queue, read without deleting them; they are visible again on return.
async fn peek(rig: &Rig, url: &str, n: usize) -> Vec<DlqEntry> {
    let mut seen: HashMap<String, DlqEntry> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} messages in {url} after 30 s",
            seen.len()
        );
        let output = rig
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(2)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .expect("ReceiveMessage succeeds");
        for message in output.messages.unwrap_or_default() {
            let entry = DlqEntry::of(&message);
            seen.insert(message.message_id.unwrap_or_default(), entry);
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    seen.into_values().collect()
}

/// A profile with a field the schema does not know: rejected as `unknown_field`.
fn poison(i: usize) -> String {
    profile(i).replace("\"country\"", "\"colour\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_copies_keep_the_tenant_and_attributes_and_redrive_restores_them() {
    let rig = Rig::new().await;
    let mut request = rig.sqs.send_message_batch().queue_url(&rig.queue_url);
    let bodies: Vec<(String, &str)> = (0..6)
        .map(|i| match i % 3 {
            0 => (poison(i), "acme"),
            1 => (poison(i), "globex"),
            _ => (profile(i), "acme"),
        })
        .collect();
    for (i, (body, tenant)) in bodies.iter().enumerate() {
        request = request.entries(
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .message_group_id(*tenant)
                .message_attributes("trace-id", attribute("String", &format!("trace-{i}")))
                .message_attributes("priority", attribute("Number", "3"))
                .build()
                .expect("entry"),
        );
    }
    let output = request
        .send()
        .await
        .expect("a standard queue takes group IDs");
    assert!(output.failed.is_empty(), "{:?}", output.failed);

    let worker = rig.start(&[]).await;
    wait_for("2 committed rows", Duration::from_secs(30), || async {
        rig.rows("profiles").await.len() == 2
    })
    .await;
    wait_for("4 DLQ copies", Duration::from_secs(30), || async {
        rig.depth(&rig.dlq_url).await.0 == 4
    })
    .await;
    let acme = worker
        .metric(r#"sbw_dlq_messages_by_tenant_total{tenant="acme"}"#)
        .await;
    let globex = worker
        .metric(r#"sbw_dlq_messages_by_tenant_total{tenant="globex"}"#)
        .await;
    rig.finish(worker, Duration::from_secs(30)).await;
    assert_eq!((acme, globex), (2.0, 2.0));

    let copies = peek(&rig, &rig.dlq_url, 4).await;
    for copy in &copies {
        let i = bodies
            .iter()
            .position(|(body, _)| *body == copy.body)
            .expect("the exact body");
        assert_eq!(copy.reason(), "unknown_field");
        assert_eq!(
            copy.group_id.as_deref(),
            Some(bodies[i].1),
            "the tenant stays"
        );
        assert_eq!(copy.attr("trace-id"), Some(format!("trace-{i}").as_str()));
        assert_eq!(copy.attr("priority"), Some("3"));
    }

    // The copies the worker wrote, redriven as they are.
    // A fresh target: LocalStack hands a message to a long poll that the stopped worker left
    // behind on the source queue.
    let target = common::create_queue(&rig.sqs, &common::unique("redriven"), &[]).await;
    let mut redrive = common::worker_binary();
    redrive.args(["redrive", "--from", &rig.dlq_url, "--to", &target]);
    let (code, out) = common::output_text(redrive).await;
    assert_eq!(code, Some(0), "{out}");
    let back = rig.drain(&target).await;
    assert_eq!(back.len(), 4, "{out}");
    for message in &back {
        let i = bodies
            .iter()
            .position(|(body, _)| *body == message.body)
            .expect("the exact body");
        assert_eq!(
            message.group_id.as_deref(),
            Some(bodies[i].1),
            "the tenant is back"
        );
        assert_eq!(
            message.attr("trace-id"),
            Some(format!("trace-{i}").as_str())
        );
        assert_eq!(message.attr("priority"), Some("3"));
        assert_eq!(message.attr("dlq-reason"), None);
    }
}
