//! Queue operations with every batch entry's result checked: receive, delete, change visibility,
//! send. Batch calls take at most 10 entries, as SQS requires. Every call has an attempt and an
//! operation timeout, so a black-holed connection costs seconds, never the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::message::Received;

#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error(
        "SQS {operation} on {queue} failed: {}. Fix: check the queue URL, AWS_REGION, \
         AWS_ENDPOINT_URL and that the credentials may call {operation}",
        DisplayErrorContext(source.as_ref())
    )]
    Call {
        operation: &'static str,
        queue: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One attempt of a call other than a long poll; the SDK retries within `OPERATION_TIMEOUT`.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);
/// A long poll waits up to 20 s for messages, so its attempt needs longer than that.
pub const RECEIVE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
pub const RECEIVE_OPERATION_TIMEOUT: Duration = Duration::from_secs(65);

fn timeouts(attempt: Duration, operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// One entry of a batch call that SQS refused.
#[derive(Clone, Debug)]
pub struct EntryFailure {
    pub index: usize,
    pub code: String,
    pub sender_fault: bool,
}

impl EntryFailure {
    /// A receipt handle SQS no longer honours: the message was redelivered or already deleted.
    pub fn is_stale_receipt(&self) -> bool {
        Self::is_stale_receipt_code(&self.code)
    }

    /// The same, from the code alone (an entry refused for good keeps only its code).
    pub fn is_stale_receipt_code(code: &str) -> bool {
        matches!(
            code,
            "ReceiptHandleIsInvalid"
                | "InvalidParameterValue"
                | "AWS.SimpleQueueService.ReceiptHandleIsInvalid"
        ) || code.contains("ReceiptHandle")
    }
}

#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    /// The same client with the long poll's timeouts, built once: a per-call config override
    /// costs the SDK a config layer and a runtime-plugin merge on every receive.
    long_poll: Client,
    url: String,
    /// The message attributes a receive asks for (`--message-attributes`): `All` unless set.
    message_attributes: Arc<[String]>,
}

/// The entries of a call of `sent` entries that did not succeed: those SQS names in `Failed`, and
/// those it names nowhere (an entry is done only when `Successful` says so).
fn failures<'a>(
    sent: usize,
    successful: impl IntoIterator<Item = &'a str>,
    failed: Vec<BatchResultErrorEntry>,
) -> Vec<EntryFailure> {
    let mut answered = vec![false; sent];
    let mut failures: Vec<EntryFailure> = failed
        .into_iter()
        .filter_map(|entry| {
            let index: usize = entry.id.parse().ok()?;
            *answered.get_mut(index)? = true;
            Some(EntryFailure {
                index,
                code: entry.code,
                sender_fault: entry.sender_fault,
            })
        })
        .collect();
    for id in successful {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| answered.get_mut(i)) {
            *slot = true;
        }
    }
    failures.extend(
        answered
            .iter()
            .enumerate()
            .filter(|(_, answered)| !**answered)
            .map(|(index, _)| EntryFailure {
                index,
                code: "NotAnswered".to_owned(),
                sender_fault: false,
            }),
    );
    failures
}

impl Queue {
    /// A queue reached through `client`, with this module's timeouts whatever the client had.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let with = |attempt, operation| {
            let config = client
                .config()
                .to_builder()
                .timeout_config(timeouts(attempt, operation))
                .build();
            Client::from_conf(config)
        };
        Self {
            client: with(ATTEMPT_TIMEOUT, OPERATION_TIMEOUT),
            long_poll: with(RECEIVE_ATTEMPT_TIMEOUT, RECEIVE_OPERATION_TIMEOUT),
            url: url.into(),
            message_attributes: Arc::from(["All".to_owned()]),
        }
    }

    /// The same queue, receiving only these message attributes (`All`, names, `prefix.*`).
    pub fn with_message_attributes(mut self, names: &[String]) -> Self {
        self.message_attributes = Arc::from(names);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_fifo(&self) -> bool {
        crate::config::is_fifo(&self.url)
    }

    fn fail<E: std::error::Error + Send + Sync + 'static>(
        &self,
        operation: &'static str,
        error: E,
    ) -> SqsError {
        SqsError::Call {
            operation,
            queue: self.url.clone(),
            source: Box::new(error),
        }
    }

    /// One long poll: up to `max` messages and their receipt handles, with the attributes the
    /// worker and the DLQ need: four system attributes, and the producer's message attributes
    /// (those `--message-attributes` names), which a DLQ copy keeps and a mapping may read.
    pub async fn receive(
        &self,
        max: i32,
        wait_s: i32,
        visibility: Option<Duration>,
    ) -> Result<Vec<(Received, String)>, SqsError> {
        let mut request = self
            .long_poll
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_s)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SequenceNumber)
            .set_message_attribute_names(Some(self.message_attributes.to_vec()));
        if let Some(visibility) = visibility {
            request = request.visibility_timeout(visibility.as_secs() as i32);
        }
        let output = request
            .send()
            .await
            .map_err(|e| self.fail("ReceiveMessage", e))?;
        let now = Instant::now();
        let fifo = self.is_fifo();
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| Received::from_sdk(message, now, fifo))
            .collect())
    }

    /// One short poll for an operator command: up to `max` SDK messages with every attribute.
    pub async fn receive_all_attributes(
        &self,
        max: i32,
        wait_s: i32,
        visibility_s: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, SqsError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_s)
            .visibility_timeout(visibility_s)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| self.fail("ReceiveMessage", e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    pub async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<EntryFailure>, SqsError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*receipt)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail("DeleteMessageBatch", e))?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail("DeleteMessageBatch", e))?;
        Ok(failures(
            receipts.len(),
            output.successful.iter().map(|e| e.id.as_str()),
            output.failed,
        ))
    }

    /// Sets the visibility of up to 10 messages, each (receipt, seconds); 0 releases one for
    /// redelivery at once.
    pub async fn change_visibility_batch(
        &self,
        entries: &[(&str, i32)],
    ) -> Result<Vec<EntryFailure>, SqsError> {
        let sent = entries.len();
        let entries = entries
            .iter()
            .enumerate()
            .map(|(index, (receipt, seconds))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*receipt)
                    .visibility_timeout(*seconds)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail("ChangeMessageVisibilityBatch", e))?;
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail("ChangeMessageVisibilityBatch", e))?;
        Ok(failures(
            sent,
            output.successful.iter().map(|e| e.id.as_str()),
            output.failed,
        ))
    }

    /// Sends up to 10 entries whose IDs are their indexes; returns the entries SQS refused.
    pub async fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<Vec<EntryFailure>, SqsError> {
        let sent = entries.len();
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail("SendMessageBatch", e))?;
        Ok(failures(
            sent,
            output.successful.iter().map(|e| e.id.as_str()),
            output.failed,
        ))
    }

    pub async fn attribute(&self, name: QueueAttributeName) -> Result<Option<String>, SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| self.fail("GetQueueAttributes", e))?;
        Ok(output
            .attributes
            .and_then(|mut attributes| attributes.remove(&name)))
    }

    pub async fn visibility_timeout(&self) -> Result<Duration, SqsError> {
        let attribute = self
            .attribute(QueueAttributeName::VisibilityTimeout)
            .await?;
        Ok(visibility_of(attribute.as_deref()))
    }
}

/// A queue's `VisibilityTimeout` attribute as a duration; SQS's default (30 s) when it is absent.
pub fn visibility_of(attribute: Option<&str>) -> Duration {
    let seconds = attribute.and_then(|value| value.parse::<u64>().ok());
    Duration::from_secs(seconds.unwrap_or(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_done_only_when_sqs_says_so() {
        let failed = vec![
            BatchResultErrorEntry::builder()
                .id("1")
                .code("InternalError")
                .sender_fault(false)
                .build()
                .unwrap(),
            BatchResultErrorEntry::builder()
                .id("not-an-index")
                .code("X")
                .sender_fault(false)
                .build()
                .unwrap(),
        ];
        let found = failures(4, ["0", "3", "9"], failed);
        let mut indexes: Vec<(usize, &str)> =
            found.iter().map(|f| (f.index, f.code.as_str())).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [(1, "InternalError"), (2, "NotAnswered")]);
    }

    #[test]
    fn stale_receipts_are_recognised() {
        let failure = |code: &str| EntryFailure {
            index: 0,
            code: code.into(),
            sender_fault: true,
        };
        assert!(failure("ReceiptHandleIsInvalid").is_stale_receipt());
        assert!(!failure("InternalError").is_stale_receipt());
    }
}
