//! `sqs-batch-worker redrive --from DLQ --to QUEUE [--reason R] [--max N]`: moves DLQ messages back
//! after a fix. Each message is sent first and deleted only once SQS took the send, entry by entry,
//! so a failure leaves the message in the DLQ rather than losing it. The body goes back byte for
//! byte; the `dlq-*` attributes are dropped and any others kept, and so is the `MessageGroupId`
//! (a FIFO group, or a fair queue's tenant on a standard queue).

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, SendMessageBatchRequestEntry};

use crate::config::cli::RedriveArgs;
use crate::outcome::Reason;
use crate::source::dlq;
use crate::sqs::entries::per_entry;
use crate::sqs::{Queue, SqsError};

/// How long a received DLQ message stays hidden while it is being moved (or skipped).
const HOLD_S: i32 = 120;
const ENTRY_ATTEMPTS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("--reason {0:?} is not a DLQ reason. Fix: use one of {1}")]
    UnknownReason(String, String),
    #[error(transparent)]
    Sqs(#[from] SqsError),
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

fn reason_of(message: &Message) -> Option<&str> {
    message
        .message_attributes
        .as_ref()?
        .get("dlq-reason")?
        .string_value
        .as_deref()
}

/// The entry that puts `message` back on the target queue.
fn entry(
    index: usize,
    message: &Message,
    fifo_target: bool,
    fifo_dlq: bool,
) -> SendMessageBatchRequestEntry {
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
    let group = message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .cloned();
    if fifo_target {
        builder = builder
            .message_group_id(group.unwrap_or_else(|| "redrive".to_owned()))
            .message_deduplication_id(message.message_id.clone().unwrap_or_default());
    } else if let Some(tenant) = group.filter(|g| !(fifo_dlq && g == dlq::NO_GROUP)) {
        // A standard target takes the group as a fair queue's tenant; the placeholder a FIFO DLQ
        // gave a message without one is no tenant.
        builder = builder.message_group_id(tenant);
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
    let from = Queue::new(client.clone(), args.from.clone());
    let to = Queue::new(client, args.to.clone());
    let max = args.max.unwrap_or(usize::MAX);
    let mut result = Redriven::default();
    let mut seen = HashSet::new();
    let mut skipped_receipts = Vec::new();
    let mut failed = 0;
    let mut last_error = String::new();
    while result.moved + failed < max {
        let want = (max - result.moved - failed).min(10) as i32;
        let messages = from.receive_all_attributes(want, 1, HOLD_S).await?;
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
        let moved = move_group(&from, &to, wanted, &mut skipped_receipts, &mut last_error).await;
        failed += moved.refused;
        result.moved += moved.sent;
    }
    release(&from, &skipped_receipts).await;
    if failed > 0 {
        return Err(RedriveError::Partial {
            moved: result.moved,
            failed,
            last: last_error,
        });
    }
    Ok(result)
}

struct Moved {
    sent: usize,
    refused: usize,
}

/// Sends up to 10 DLQ messages to the target, then deletes from the DLQ the ones SQS took.
async fn move_group(
    from: &Queue,
    to: &Queue,
    wanted: Vec<Message>,
    skipped_receipts: &mut Vec<String>,
    last_error: &mut String,
) -> Moved {
    let fifo_target = to.is_fifo();
    let fifo_dlq = from.is_fifo();
    let sent = per_entry(
        wanted,
        ENTRY_ATTEMPTS,
        |messages: &[Message]| {
            let entries = messages
                .iter()
                .enumerate()
                .map(|(i, m)| entry(i, m, fifo_target, fifo_dlq))
                .collect();
            Box::pin(to.send_batch(entries))
        },
        |_, _| true,
    )
    .await;
    // A refused send leaves its message in the DLQ; make it visible again at the end.
    for (message, code) in &sent.refused {
        *last_error = code.clone();
        skipped_receipts.extend(message.receipt_handle.clone());
    }
    let receipts: Vec<String> = sent
        .done
        .iter()
        .filter_map(|m| m.receipt_handle.clone())
        .collect();
    let deleted = per_entry(
        receipts,
        ENTRY_ATTEMPTS,
        |receipts: &[String]| {
            let receipts: Vec<String> = receipts.to_vec();
            Box::pin(async move {
                let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
                from.delete_batch(&receipts).await
            })
        },
        |_, failure| !failure.is_stale_receipt(),
    )
    .await;
    // A send that succeeded but whose delete failed leaves a copy in both queues: the message
    // is duplicated, never lost. Say so.
    for (_, code) in &deleted.refused {
        tracing::warn!(
            code,
            "moved, but not deleted from the DLQ; it will be redriven again"
        );
        *last_error = format!("delete {code}");
    }
    Moved {
        sent: sent.done.len(),
        refused: sent.refused.len(),
    }
}

/// Makes skipped messages visible in the DLQ again at once.
async fn release(queue: &Queue, receipts: &[String]) {
    for chunk in receipts.chunks(10) {
        let entries: Vec<(&str, i32)> = chunk.iter().map(|r| (r.as_str(), 0)).collect();
        if let Err(error) = queue.change_visibility_batch(&entries).await {
            tracing::warn!(%error, "skipped messages stay hidden until their visibility ends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_dlq(group: &str) -> Message {
        Message::builder()
            .message_id("m-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::MessageGroupId, group)
            .build()
    }

    /// The group goes back as the tenant on a standard queue, except the placeholder a FIFO DLQ
    /// gave a message that had none.
    #[test]
    fn a_standard_target_gets_the_tenant_back_but_not_the_placeholder() {
        let group = |message: &Message, fifo_target, fifo_dlq| {
            entry(0, message, fifo_target, fifo_dlq).message_group_id
        };
        assert_eq!(
            group(&from_dlq("acme"), false, true).as_deref(),
            Some("acme")
        );
        assert_eq!(
            group(&from_dlq("acme"), false, false).as_deref(),
            Some("acme")
        );
        assert_eq!(group(&from_dlq(dlq::NO_GROUP), false, true), None);
        assert_eq!(
            group(&from_dlq(dlq::NO_GROUP), false, false).as_deref(),
            Some(dlq::NO_GROUP)
        );
        assert_eq!(
            group(&from_dlq(dlq::NO_GROUP), true, true).as_deref(),
            Some(dlq::NO_GROUP)
        );
        let plain = Message::builder().message_id("m-2").body("{}").build();
        assert_eq!(group(&plain, false, false), None);
        assert_eq!(group(&plain, true, false).as_deref(), Some("redrive"));
    }
}
