//! deploy/ on LocalStack: the CloudFormation stack creates the queues with the redrive policy the
//! parameters ask for, and the worker drains a queue the stack created.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use crate::common::rig::{Rig, RigOptions, profile, wait_for};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

async fn deploy(stack: &str, params: &[&str]) -> HashMap<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/localstack/deploy-stack.sh");
    let output = tokio::process::Command::new(script)
        .arg(stack)
        .args(params)
        .output()
        .await
        .expect("run localstack/deploy-stack.sh");
    assert!(
        output.status.success(),
        "the stack deploys on LocalStack (start.sh enables cloudformation): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A rig on the stack's source queue and reject DLQ.
async fn rig_on(outputs: &HashMap<String, String>) -> Rig {
    Rig::with(RigOptions {
        queues: Some((
            outputs["SourceQueueUrl"].clone(),
            outputs["RejectDlqUrl"].clone(),
        )),
        ..RigOptions::default()
    })
    .await
}

async fn attributes(rig: &Rig, url: &str) -> HashMap<QueueAttributeName, String> {
    rig.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_deploys_and_the_worker_drains_its_queue() {
    let stack = common::unique("sbw-stack");
    let outputs = deploy(
        &stack,
        &["MaxReceiveCount=3", "VisibilityTimeoutSeconds=45"],
    )
    .await;
    for key in [
        "SourceQueueUrl",
        "RejectDlqUrl",
        "RedriveDlqUrl",
        "RedriveDlqArn",
        "SourceQueueArn",
        "RejectDlqArn",
    ] {
        assert!(outputs.contains_key(key), "output {key} in {outputs:?}");
    }
    let rig = rig_on(&outputs).await;

    let source = attributes(&rig, &rig.queue_url).await;
    let policy: Value = serde_json::from_str(&source[&QueueAttributeName::RedrivePolicy])
        .expect("the redrive policy is JSON");
    assert_eq!(
        policy["deadLetterTargetArn"],
        outputs["RedriveDlqArn"].as_str()
    );
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "3");
    assert_eq!(source[&QueueAttributeName::VisibilityTimeout], "45");

    let bodies: Vec<String> = (0..500).map(profile).collect();
    rig.send(&bodies).await;
    let worker = rig.start(&[("--batch-max-wait", "1s")]).await;
    wait_for(
        "the stack's queue to empty",
        Duration::from_secs(60),
        || rig.source_empty(),
    )
    .await;
    worker.stop().await;
    assert_eq!(rig.rows("profiles").await.len(), 500);
    assert!(rig.dlq().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_stack_with_a_shared_budget_makes_four_fifo_queues() {
    let stack = common::unique("sbw-fifo");
    let outputs = deploy(&stack, &["Fifo=true", "SharedBudget=true"]).await;
    for key in [
        "SourceQueueUrl",
        "RejectDlqUrl",
        "RedriveDlqUrl",
        "BudgetQueueUrl",
    ] {
        assert!(outputs[key].ends_with(".fifo"), "{key} = {}", outputs[key]);
    }
}

/// `SnsTopicArn` subscribes the source queue to a topic; the stack's `RecordsEnvelope` output is
/// the `--envelope` to run with, and a worker so configured commits what the topic publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_subscribes_the_queue_to_a_topic_and_names_the_envelope() {
    let topic = common::sns::Topic::create(&common::unique("sbw-topic")).await;
    let stack = common::unique("sbw-sns-stack");
    let topic_param = format!("SnsTopicArn={}", topic.arn);
    let outputs = deploy(&stack, &[&topic_param]).await;
    assert_eq!(
        outputs.get("RecordsEnvelope").map(String::as_str),
        Some("sns")
    );
    assert!(outputs.contains_key("SnsSubscriptionArn"), "{outputs:?}");
    let rig = rig_on(&outputs).await;
    let bodies: Vec<String> = (0..5).map(profile).collect();
    for body in &bodies {
        topic.publish(body, &[]).await;
    }
    let worker = rig
        .start(&[("--envelope", outputs["RecordsEnvelope"].as_str())])
        .await;
    wait_for("5 committed rows", Duration::from_secs(30), || async {
        rig.rows("profiles").await.len() == 5
    })
    .await;
    rig.finish(worker, Duration::from_secs(30)).await;
    let accounted = rig.assert_accounted("profiles", "email", &bodies).await;
    assert!(accounted.dead_lettered.is_empty() && accounted.queued == 0);
    topic.delete().await;
}
