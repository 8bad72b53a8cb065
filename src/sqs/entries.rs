//! The one way to run a batch call whose entries succeed or fail one by one
//! (`DeleteMessageBatch`, `ChangeMessageVisibilityBatch`, `SendMessageBatch`): send what is
//! pending, keep the entries SQS refused and that may be retried, wait as `backon` says, send again.
//! Entry IDs are indexes into the call; an index SQS names twice, or one it never sent, is ignored.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;

use super::{EntryFailure, SqsError};

/// What became of the entries: done, or refused for good with SQS's code.
#[derive(Debug)]
pub struct EntryOutcome<T> {
    pub done: Vec<T>,
    pub refused: Vec<(T, String)>,
}

/// The delays between attempts of one entry.
pub fn entry_backoff(attempts: usize) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1))
        .build()
}

/// Runs `call` over `items` (at most 10) until every entry is done or refused for good, for at
/// most `attempts` calls. `retryable` says whether a refused entry is tried again.
/// The future `call` returns owns what it sends, so it may outlive the borrow of the entries.
pub async fn per_entry<'call, T>(
    items: Vec<T>,
    attempts: usize,
    call: impl Fn(&[T]) -> BoxFuture<'call, Result<Vec<EntryFailure>, SqsError>>,
    retryable: impl Fn(&T, &EntryFailure) -> bool,
) -> EntryOutcome<T> {
    let mut delays = entry_backoff(attempts);
    let mut pending = items;
    let mut codes: Vec<String> = Vec::new();
    let mut outcome = EntryOutcome {
        done: Vec::new(),
        refused: Vec::new(),
    };
    while !pending.is_empty() {
        match call(&pending).await {
            Ok(failures) => {
                let mut by_index: HashMap<usize, EntryFailure> = failures
                    .into_iter()
                    .filter(|failure| failure.index < pending.len())
                    .map(|failure| (failure.index, failure))
                    .collect();
                let mut again = Vec::new();
                codes.clear();
                for (index, item) in pending.drain(..).enumerate() {
                    match by_index.remove(&index) {
                        None => outcome.done.push(item),
                        Some(failure) if retryable(&item, &failure) => {
                            codes.push(failure.code);
                            again.push(item);
                        }
                        Some(failure) => outcome.refused.push((item, failure.code)),
                    }
                }
                pending = again;
            }
            Err(error) => {
                tracing::warn!(%error, entries = pending.len(), "SQS batch call failed");
                codes = vec![error.to_string(); pending.len()];
            }
        }
        if pending.is_empty() {
            break;
        }
        match delays.next() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                outcome
                    .refused
                    .extend(pending.drain(..).zip(codes.drain(..)));
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn failure(index: usize, code: &str) -> EntryFailure {
        EntryFailure {
            index,
            code: code.into(),
            sender_fault: false,
        }
    }

    #[tokio::test]
    async fn refused_entries_are_retried_and_strange_indexes_ignored() {
        let calls = Mutex::new(Vec::<Vec<u32>>::new());
        let outcome = per_entry(
            vec![1u32, 2, 3],
            3,
            |items: &[u32]| {
                calls.lock().unwrap().push(items.to_vec());
                let answer = match items.len() {
                    // 2 is refused (retryable), 3 for good; 99 and a repeated 1 are nonsense.
                    3 => vec![
                        failure(1, "InternalError"),
                        failure(1, "InternalError"),
                        failure(2, "Gone"),
                        failure(99, "InternalError"),
                    ],
                    _ => vec![],
                };
                Box::pin(async move { Ok(answer) })
            },
            |_, failure| failure.code == "InternalError",
        )
        .await;
        assert_eq!(outcome.done, [1, 2]);
        assert_eq!(outcome.refused, [(3, "Gone".to_owned())]);
        assert_eq!(*calls.lock().unwrap(), [vec![1, 2, 3], vec![2]]);
    }

    #[tokio::test]
    async fn entries_still_refused_after_every_attempt_are_reported() {
        let outcome = per_entry(
            vec!["a"],
            2,
            |_: &[&str]| Box::pin(async { Ok(vec![failure(0, "InternalError")]) }),
            |_, _| true,
        )
        .await;
        assert!(outcome.done.is_empty());
        assert_eq!(outcome.refused, [("a", "InternalError".to_owned())]);
    }
}
