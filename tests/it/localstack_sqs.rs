//! LocalStack is a real SQS for these tests: create a queue, send, receive, delete.

use crate::common;

#[tokio::test]
async fn create_send_receive_delete() {
    let sqs = common::sqs().await;
    let url = common::create_queue(
        &sqs,
        &common::unique("smoke"),
        &[("VisibilityTimeout", "30")],
    )
    .await;
    sqs.send_message()
        .queue_url(&url)
        .message_body(r#"{"email":"a@x.io"}"#)
        .send()
        .await
        .expect("send");
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body.as_deref(), Some(r#"{"email":"a@x.io"}"#));
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(messages[0].receipt_handle.clone().unwrap())
        .send()
        .await
        .expect("delete");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes.get(&name).cloned().unwrap_or_default()
    };
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        "0"
    );
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        "0"
    );
    sqs.delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("delete queue");
}
