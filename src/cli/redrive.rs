//! `sqs-batch-worker redrive --from DLQ --to QUEUE [--reason R] [--max N]`: moves DLQ messages back
//! after a fix. Each message is sent first and deleted only once SQS took the send, entry by entry,
//! so a failure leaves the message in the DLQ rather than losing it. The body goes back byte for
//! byte; the `dlq-*` attributes are dropped and any others kept.

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::config::cli::RedriveArgs;
use crate::outcome::Reason;

/// How long a received DLQ message stays hidden while it is being moved (or skipped).
const HOLD_S: i32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("--reason {0:?} is not a DLQ reason. Fix: use one of {1}")]
    UnknownReason(String, String),
    #[error("{operation} on {queue} failed: {message}. Fix: check the URL and the credentials")]
    Sqs {
        operation: &'static str,
        queue: String,
        message: String,
    },
    #[error(
        "moved {moved}, but {failed} messages could not be moved and stay in the DLQ (last error: {last}). Fix the cause and run redrive again"
    )]
    Partial {
        moved: usize,
        failed: usize,
        last: String,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    pub moved: usize,
    /// Messages whose `dlq-reason` did not match `--reason`; left in the DLQ.
    pub skipped: usize,
}

fn sqs_error(operation: &'static str, queue: &str, error: impl std::error::Error) -> RedriveError {
    RedriveError::Sqs {
        operation,
        queue: queue.to_owned(),
        message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
    }
}

fn reason_of(message: &Message) -> Option<&str> {
    message
        .message_attributes
        .as_ref()?
        .get("dlq-reason")?
        .string_value
        .as_deref()
}

/// The entry that puts `message` back on the target queue.
fn entry(index: usize, message: &Message, fifo_target: bool) -> SendMessageBatchRequestEntry {
    let kept = message
        .message_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("dlq-"))
        .collect::<HashMap<_, _>>();
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(message.body.clone().unwrap_or_default())
        .set_message_attributes((!kept.is_empty()).then_some(kept));
    if fifo_target {
        let group = message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned()
            .unwrap_or_else(|| "redrive".to_owned());
        builder = builder
            .message_group_id(group)
            .message_deduplication_id(message.message_id.clone().unwrap_or_default());
    }
    builder.build().expect("id and body are set")
}

pub async fn redrive(args: &RedriveArgs, client: Client) -> Result<Redriven, RedriveError> {
    if let Some(reason) = &args.reason
        && Reason::parse(reason).is_none()
    {
        let all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        return Err(RedriveError::UnknownReason(reason.clone(), all.join(", ")));
    }
    let fifo_target = args.to.ends_with(".fifo");
    let max = args.max.unwrap_or(usize::MAX);
    let mut result = Redriven::default();
    let mut seen = HashSet::new();
    let mut skipped_receipts = Vec::new();
    let mut failed = 0;
    let mut last_error = String::new();
    while result.moved + failed < max {
        let want = (max - result.moved - failed).min(10) as i32;
        let output = client
            .receive_message()
            .queue_url(&args.from)
            .max_number_of_messages(want)
            .wait_time_seconds(1)
            .visibility_timeout(HOLD_S)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", &args.from, e))?;
        let messages = output.messages.unwrap_or_default();
        // Everything visible has been looked at once: done.
        if messages.is_empty()
            || messages
                .iter()
                .all(|m| !seen.insert(m.message_id.clone().unwrap_or_default()))
        {
            break;
        }
        let (wanted, others): (Vec<Message>, Vec<Message>) =
            messages.into_iter().partition(|m| match &args.reason {
                Some(reason) => reason_of(m) == Some(reason.as_str()),
                None => true,
            });
        result.skipped += others.len();
        skipped_receipts.extend(others.into_iter().filter_map(|m| m.receipt_handle));
        if wanted.is_empty() {
            continue;
        }
        let entries = wanted
            .iter()
            .enumerate()
            .map(|(i, m)| entry(i, m, fifo_target))
            .collect();
        let sent = client
            .send_message_batch()
            .queue_url(&args.to)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sqs_error("SendMessageBatch", &args.to, e))?;
        let refused: HashSet<String> = sent.failed.iter().map(|f| f.id.clone()).collect();
        if let Some(f) = sent.failed.first() {
            last_error = format!("{}: {}", f.code, f.message.clone().unwrap_or_default());
        }
        failed += refused.len();
        // A refused send leaves its message in the DLQ; make it visible again at the end.
        skipped_receipts.extend(
            wanted
                .iter()
                .enumerate()
                .filter(|(i, _)| refused.contains(&i.to_string()))
                .filter_map(|(_, m)| m.receipt_handle.clone()),
        );
        let deletes: Vec<DeleteMessageBatchRequestEntry> = wanted
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(&i.to_string()))
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let sent_ok = deletes.len();
        if deletes.is_empty() {
            continue;
        }
        let deleted = client
            .delete_message_batch()
            .queue_url(&args.from)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| sqs_error("DeleteMessageBatch", &args.from, e))?;
        // A send that succeeded but whose delete failed leaves a copy in both queues: the message
        // is duplicated, never lost. Say so.
        for f in &deleted.failed {
            tracing::warn!(
                code = f.code,
                "moved, but not deleted from the DLQ; it will be redriven again"
            );
            last_error = format!(
                "delete {}: {}",
                f.code,
                f.message.clone().unwrap_or_default()
            );
        }
        result.moved += sent_ok;
    }
    release(&client, &args.from, &skipped_receipts).await;
    if failed > 0 {
        return Err(RedriveError::Partial {
            moved: result.moved,
            failed,
            last: last_error,
        });
    }
    Ok(result)
}

/// Makes skipped messages visible in the DLQ again at once.
async fn release(client: &Client, queue: &str, receipts: &[String]) {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        if let Err(error) = client
            .change_message_visibility_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(error), "skipped messages stay hidden until their visibility ends");
        }
    }
}
