//! Typed views of what the emulator's control routes report, so that a test reads
//! `stats.batches`, not `stats["batches"]`, and a renamed field fails to compile instead of
//! reading as null; and the accounting of every message sent (`Accounted`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

/// `GET /_emulator/stats`: the emulator's counters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Requests by route, then by status.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub batches: u64,
    pub records_accepted: u64,
    pub single_writes: u64,
    pub rows_committed: u64,
    pub invalid_rows: u64,
    pub replays: u64,
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub rate_limited: u64,
    pub overloaded: u64,
    pub max_in_progress: u64,
    pub injected_faults: u64,
}

/// One job as `GET /_emulator/jobs` and `/_emulator/jobs/records` list it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    pub job_id: String,
    pub state: String,
    pub idempotency_key: Option<String>,
    pub created_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    /// Only from `/_emulator/jobs/records`.
    pub records: Option<Vec<Value>>,
}

/// One request of the emulator's log.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Request {
    pub at_ms: i64,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub idempotency_key: Option<String>,
}

/// Where every message sent ended, by its match key: the product's promise is that each is
/// committed, dead-lettered, or still in the source queue, and that nothing else appears.
#[derive(Clone, Debug, Default)]
pub struct Accounted {
    pub committed: BTreeSet<String>,
    pub dead_lettered: BTreeSet<String>,
    /// Visible plus in flight in the source queue.
    pub queued: u64,
}

impl Accounted {
    /// Panics with the counts unless every one of `sent` is accounted for exactly: committed or
    /// dead-lettered (by key), or one of the messages still queued, and no key that was not sent.
    pub fn check(&self, sent: &BTreeSet<String>) {
        let settled: BTreeSet<&String> = self.committed.union(&self.dead_lettered).collect();
        let strangers: Vec<&&String> = settled.iter().filter(|k| !sent.contains(**k)).collect();
        assert!(
            strangers.is_empty(),
            "keys that were never sent were committed or dead-lettered: {strangers:?}"
        );
        assert_eq!(
            settled.len() as u64 + self.queued,
            sent.len() as u64,
            "every message is committed, dead-lettered or still queued: sent {}, committed {}, \
             dead-lettered {}, queued {}",
            sent.len(),
            self.committed.len(),
            self.dead_lettered.len(),
            self.queued
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_message_committed_dead_lettered_or_queued_is_accounted() {
        let accounted = Accounted {
            committed: keys(&["a", "b"]),
            dead_lettered: keys(&["b", "c"]),
            queued: 1,
        };
        accounted.check(&keys(&["a", "b", "c", "d"]));
    }

    #[test]
    #[should_panic(expected = "every message is committed, dead-lettered or still queued")]
    fn a_lost_message_fails_the_check() {
        let accounted = Accounted {
            committed: keys(&["a"]),
            dead_lettered: keys(&["c"]),
            queued: 0,
        };
        accounted.check(&keys(&["a", "b", "c"]));
    }

    #[test]
    #[should_panic(expected = "never sent")]
    fn a_row_nobody_sent_fails_the_check() {
        let accounted = Accounted {
            committed: keys(&["a", "z"]),
            dead_lettered: BTreeSet::new(),
            queued: 0,
        };
        accounted.check(&keys(&["a", "b"]));
    }
}
