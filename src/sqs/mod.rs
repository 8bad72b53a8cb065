//! The SQS adapter: the client from the standard AWS chain and queue operations with per-entry
//! results. The source receives, deletes, releases and dead-letters through it; the shared budget
//! (`sink::budget::shared`) and the commands (`cli`) use it too, so it belongs to neither side.

pub mod entries;
pub mod queue;

pub use queue::{EntryFailure, Queue, SqsError};

/// An SQS client from the standard AWS chain (`AWS_REGION`, `AWS_ENDPOINT_URL[_SQS]`, credentials,
/// the ECS task role). The SDK owns SQS retries.
pub async fn connect() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let config = aws_sdk_sqs::config::Builder::from(&config)
        // Request bodies are a few KB at most; the upload-throughput watchdog cost ~5% of the
        // worker's CPU in the profile and guards nothing here. Downloads stay protected.
        .stalled_stream_protection(
            aws_sdk_sqs::config::StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .build(),
        )
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}
