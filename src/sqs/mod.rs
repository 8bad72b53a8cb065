//! The SQS adapter: the client from the standard AWS chain and queue operations with per-entry
//! results. The source receives, deletes, releases and dead-letters through it; the shared budget
//! (`sink::budget::shared`) and the commands (`cli`) use it too, so it belongs to neither side.

pub mod clock;
pub mod entries;
pub mod queue;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::future::BoxFuture;

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

/// The queue calls the source's settler and heartbeat make: the seam that lets their unit tests
/// run on a fake queue under a paused clock. `Queue` is the real one.
pub trait Sqs: Send + Sync {
    fn url(&self) -> &str;

    fn is_fifo(&self) -> bool {
        crate::config::is_fifo(self.url())
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>>;

    /// Sets the visibility of up to 10 messages, each (receipt, seconds).
    fn change_visibility_batch<'a>(
        &'a self,
        entries: &'a [(&'a str, i32)],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>>;

    /// Sends up to 10 entries whose IDs are their indexes; returns the entries SQS refused.
    fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> BoxFuture<'_, Result<Vec<EntryFailure>, SqsError>>;
}

impl Sqs for Queue {
    fn url(&self) -> &str {
        Queue::url(self)
    }

    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>> {
        Box::pin(Queue::delete_batch(self, receipts))
    }

    fn change_visibility_batch<'a>(
        &'a self,
        entries: &'a [(&'a str, i32)],
    ) -> BoxFuture<'a, Result<Vec<EntryFailure>, SqsError>> {
        Box::pin(Queue::change_visibility_batch(self, entries))
    }

    fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> BoxFuture<'_, Result<Vec<EntryFailure>, SqsError>> {
        Box::pin(Queue::send_batch(self, entries))
    }
}
