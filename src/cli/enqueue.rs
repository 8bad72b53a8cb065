//! `sqs-batch-worker enqueue`: sends JSON lines as messages, 10 per SendMessageBatch, each line
//! byte for byte (even one that is not valid JSON: producers make mistakes, and demos show them).

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::config::cli::EnqueueArgs;
use crate::sqs::Queue;
use crate::sqs::entries::per_entry;

const CONCURRENT_CALLS: usize = 8;
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("cannot read {input}: {source}")]
    Read {
        input: String,
        source: std::io::Error,
    },
    #[error(
        "{failed} of {total} messages could not be sent (last error: {last}). Fix the cause and re-send those lines"
    )]
    Send {
        failed: usize,
        total: usize,
        last: String,
    },
}

fn group_for(group: &Option<String>, line: &str) -> Option<String> {
    let spec = group.as_deref()?;
    match spec.strip_prefix("field:") {
        Some(field) => Some(
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get(field).and_then(|g| g.as_str().map(str::to_owned)))
                .unwrap_or_else(|| "default".to_owned()),
        ),
        None => Some(spec.to_owned()),
    }
}

async fn read_lines(reader: impl AsyncRead + Unpin) -> std::io::Result<Vec<String>> {
    let mut lines = BufReader::new(reader).lines();
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// Sends every non-empty line; returns how many were sent.
pub async fn enqueue(
    args: &EnqueueArgs,
    client: aws_sdk_sqs::Client,
) -> Result<usize, EnqueueError> {
    let lines = if args.input == "-" {
        read_lines(tokio::io::stdin()).await
    } else {
        match tokio::fs::File::open(&args.input).await {
            Ok(file) => read_lines(file).await,
            Err(e) => Err(e),
        }
    }
    .map_err(|source| EnqueueError::Read {
        input: args.input.clone(),
        source,
    })?;
    let queue = Queue::new(client, args.queue_url.clone());
    let fifo = queue.is_fifo();
    let total = lines.len();
    let results: Vec<Result<(), (usize, String)>> = futures::stream::iter(lines.chunks(10))
        .map(|chunk| send_chunk(&queue, chunk, fifo, &args.group_id))
        .buffer_unordered(CONCURRENT_CALLS)
        .collect()
        .await;
    let mut failed = 0;
    let mut last = String::new();
    for result in results {
        if let Err((count, error)) = result {
            failed += count;
            last = error;
        }
    }
    if failed > 0 {
        return Err(EnqueueError::Send {
            failed,
            total,
            last,
        });
    }
    Ok(total)
}

async fn send_chunk(
    queue: &Queue,
    chunk: &[String],
    fifo: bool,
    group: &Option<String>,
) -> Result<(), (usize, String)> {
    // One deduplication ID per line, kept across attempts, so a retried send is not a new message.
    let lines: Vec<(&String, String)> = chunk
        .iter()
        .map(|line| (line, uuid::Uuid::new_v4().simple().to_string()))
        .collect();
    let outcome = per_entry(
        lines,
        ATTEMPTS as usize,
        |lines: &[(&String, String)]| {
            let entries = lines
                .iter()
                .enumerate()
                .map(|(index, (line, dedup))| {
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(line.as_str());
                    if fifo {
                        entry = entry
                            .message_group_id(
                                group_for(group, line).unwrap_or_else(|| "default".into()),
                            )
                            .message_deduplication_id(dedup.as_str());
                    }
                    entry.build().expect("id and body are set")
                })
                .collect();
            Box::pin(queue.send_batch(entries))
        },
        |_, _| true,
    )
    .await;
    if outcome.refused.is_empty() {
        return Ok(());
    }
    let codes: Vec<String> = outcome
        .refused
        .iter()
        .map(|(_, code)| code.clone())
        .collect();
    Err((codes.len(), codes.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids() {
        assert_eq!(group_for(&None, "{}"), None);
        assert_eq!(group_for(&Some("g".into()), "{}").as_deref(), Some("g"));
        assert_eq!(
            group_for(&Some("field:user".into()), r#"{"user":"u1"}"#).as_deref(),
            Some("u1")
        );
        assert_eq!(
            group_for(&Some("field:user".into()), "not json").as_deref(),
            Some("default")
        );
    }
}
