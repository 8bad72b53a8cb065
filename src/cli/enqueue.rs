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
    let results: Vec<Result<(), (usize, String)>> = if fifo {
        // A group's lines go one call at a time, each after the one before it succeeded (or was
        // given up), so neither concurrency nor a retry puts a later line ahead of an earlier one.
        // A call carries one line: a batch whose middle entry failed would have put the entries
        // after it ahead of its retry. Groups go in parallel.
        futures::stream::iter(by_group(&lines, &args.group_id))
            .map(|(group, lines)| {
                let queue = &queue;
                async move {
                    let mut failed = Vec::new();
                    for line in lines {
                        let sent =
                            send_chunk(queue, std::slice::from_ref(line), Some(&group)).await;
                        failed.extend(sent.err());
                    }
                    failed
                }
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .flat_map(|failed| futures::stream::iter(failed.into_iter().map(Err)))
            .collect()
            .await
    } else {
        futures::stream::iter(lines.chunks(10))
            .map(|chunk| send_chunk(&queue, chunk, None))
            .buffer_unordered(CONCURRENT_CALLS)
            .collect()
            .await
    };
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

/// The lines of each FIFO message group, in file order; groups in order of their first line.
fn by_group<'a>(lines: &'a [String], spec: &Option<String>) -> Vec<(String, Vec<&'a String>)> {
    let mut groups: Vec<(String, Vec<&String>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for line in lines {
        let group = group_for(spec, line).unwrap_or_else(|| "default".into());
        let at = *index.entry(group.clone()).or_insert_with(|| {
            groups.push((group, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(line);
    }
    groups
}

/// Sends up to 10 lines; `group` is the FIFO message group, if the queue is FIFO.
async fn send_chunk(
    queue: &Queue,
    chunk: &[String],
    group: Option<&str>,
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
                    if let Some(group) = group {
                        entry = entry
                            .message_group_id(group)
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

    /// Each group's lines stay in file order.
    #[test]
    fn lines_are_grouped_in_file_order() {
        let lines: Vec<String> = (0..25)
            .map(|i| format!(r#"{{"user":"u{}","seq":{i}}}"#, i % 3))
            .collect();
        let groups = by_group(&lines, &Some("field:user".into()));
        assert_eq!(groups.len(), 3);
        for (group, lines) in groups {
            let seqs: Vec<u64> = lines
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{group}: {seqs:?}");
        }
    }

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
