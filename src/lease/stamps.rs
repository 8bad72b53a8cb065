//! FIFO release stamps: when a message of group G goes back to the queue, every message of G the
//! worker already held then is later in the group, so it goes back too instead of committing
//! ahead of it. The ledger stamps a group when it releases (or orphans) one of its messages;
//! delivery asks `must_follow` before it submits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::message::Received;

/// When each FIFO group last had a message released, and the earliest place in the group
/// (`SequenceNumber`) that went back.
#[derive(Default)]
pub struct ReleasedGroups {
    stamps: Mutex<Stamps>,
}

#[derive(Default)]
struct Stamps {
    by_group: HashMap<String, Stamp>,
    /// Released messages not yet received again, by group and `SequenceNumber`, each until when
    /// it is expected back. An SQS that unlocks a group once its earliest released message is
    /// visible again (LocalStack does) can hand out later messages while others are still
    /// invisible: those must follow too, whenever they were received.
    outstanding: HashMap<String, BTreeMap<u128, (String, Instant)>>,
    /// The size at which stale stamps are next swept: it doubles with the map, so a sweep costs
    /// O(1) amortized per release even with a million per-user groups.
    sweep_at: usize,
    sweeps: u64,
}

#[derive(Clone, Copy)]
struct Stamp {
    at: Instant,
    /// The lowest sequence number released; `None` when a release did not know it (then every
    /// held message of the group follows).
    lowest: Option<u128>,
}

/// Stamps older than this cannot matter: no message is held that long.
const STAMP_TTL: Duration = Duration::from_secs(24 * 3600);
const FIRST_SWEEP: usize = 10_000;
/// How long past its visibility a released message may take to be received again before it is
/// taken to be gone (another replica's, or the redrive DLQ's).
const OUTSTANDING_GRACE: Duration = Duration::from_secs(60);

impl ReleasedGroups {
    /// A message of `group` went back to the queue at `at`, to be visible again after
    /// `visible_again`.
    pub fn released(
        &self,
        message: (&str, &str, Option<u128>),
        at: Instant,
        visible_again: Duration,
    ) {
        let (id, group, sequence) = message;
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sequence) = sequence {
            let back_by = at + visible_again.min(STAMP_TTL) + OUTSTANDING_GRACE;
            stamps
                .outstanding
                .entry(group.to_owned())
                .or_default()
                .insert(sequence, (id.to_owned(), back_by));
        }
        let Stamps {
            by_group,
            sweep_at,
            sweeps,
            outstanding,
        } = &mut *stamps;
        if by_group.len() >= (*sweep_at).max(FIRST_SWEEP) {
            *sweeps += 1;
            by_group.retain(|_, stamp| at.saturating_duration_since(stamp.at) < STAMP_TTL);
            outstanding.retain(|_, back| {
                back.retain(|_, (_, by)| *by > at);
                !back.is_empty()
            });
            *sweep_at = (by_group.len() * 2).max(FIRST_SWEEP);
        }
        match by_group.get_mut(group) {
            Some(stamp) => {
                stamp.at = stamp.at.max(at);
                stamp.lowest = match (stamp.lowest, sequence) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                };
            }
            None => {
                by_group.insert(
                    group.to_owned(),
                    Stamp {
                        at,
                        lowest: sequence,
                    },
                );
            }
        }
    }

    /// A message was received (again): it is no longer outstanding.
    pub fn held(&self, message: &Received) {
        let Some(group) = &message.group_id else {
            return;
        };
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(back) = stamps.outstanding.get_mut(group) {
            // By ID: where the queue's sequence numbers are replaced by the receive order
            // (`sqs::sequence`), a message received again has a new one.
            back.retain(|_, (id, _)| *id != message.id);
            if back.is_empty() {
                stamps.outstanding.remove(group);
            }
        }
    }

    /// True when an earlier message of this message's group (a lower `SequenceNumber`) went back
    /// to the queue after this one was received, or is still out (released and not received
    /// again): this one must follow it back. A later message's release does not send earlier
    /// ones back.
    pub fn must_follow(&self, message: &Received) -> bool {
        let Some(group) = &message.group_id else {
            return false;
        };
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(sequence), Some(back)) = (message.sequence, stamps.outstanding.get_mut(group))
        {
            let now = Instant::now();
            back.retain(|_, (_, by)| *by > now);
            if back.range(..sequence).next().is_some() {
                return true;
            }
        }
        stamps.by_group.get(group).is_some_and(|stamp| {
            stamp.at >= message.received_at
                && match (stamp.lowest, message.sequence) {
                    (Some(lowest), Some(sequence)) => lowest < sequence,
                    _ => true,
                }
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stamps.lock().unwrap().by_group.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_received_before_its_group_was_released_follows_it() {
        let groups = ReleasedGroups::default();
        let mut held = Received::fake("m2", "{}");
        held.group_id = Some("g".into());
        let t0 = held.received_at;
        assert!(!groups.must_follow(&held));
        groups.released(
            ("m0", "g", None),
            t0 + Duration::from_millis(5),
            Duration::ZERO,
        );
        assert!(groups.must_follow(&held));
        let mut later = Received::fake("m3", "{}");
        later.group_id = Some("g".into());
        later.received_at = t0 + Duration::from_secs(1);
        assert!(!groups.must_follow(&later), "redelivered after the release");
        let mut other = Received::fake("m4", "{}");
        other.group_id = Some("h".into());
        assert!(!groups.must_follow(&other));
    }

    /// Message `m{seq}` of group `g`, at place `seq`.
    fn at(seq: u128) -> Received {
        let mut m = Received::fake(&format!("m{seq}"), "{}");
        m.group_id = Some("g".into());
        m.sequence = Some(seq);
        m
    }

    /// The release of a later message (a higher `SequenceNumber`) must not send
    /// an earlier held one back; an earlier one's release sends every later one back.
    #[test]
    fn only_a_release_earlier_in_the_group_sends_held_messages_back() {
        let groups = ReleasedGroups::default();
        let (early, late) = (at(10), at(30));
        groups.released(
            ("m20", "g", Some(20)),
            late.received_at + Duration::from_millis(1),
            Duration::ZERO,
        );
        assert!(
            !groups.must_follow(&early),
            "seq 10 is ahead of the released 20"
        );
        assert!(
            groups.must_follow(&late),
            "seq 30 is behind the released 20"
        );
        groups.released(
            ("m5", "g", Some(5)),
            late.received_at + Duration::from_millis(2),
            Duration::ZERO,
        );
        assert!(
            groups.must_follow(&early),
            "seq 10 is behind the released 5"
        );
    }

    /// Past 10,000 groups a release must not sweep the whole map each time.
    #[test]
    fn many_groups_are_swept_rarely() {
        let groups = ReleasedGroups::default();
        let now = Instant::now();
        for i in 0..200_000 {
            groups.released(("m", &format!("user-{i}"), Some(i)), now, Duration::ZERO);
        }
        assert_eq!(groups.len(), 200_000);
        let sweeps = groups.stamps.lock().unwrap().sweeps;
        // A sweep on every release past 10,000 would be 190,000 sweeps of the whole map.
        assert!(
            sweeps <= 5,
            "{sweeps} sweeps of the whole map for 200,000 groups"
        );
    }

    /// Issue 19's headline: an SQS that unlocks a FIFO group once its earliest released message
    /// is visible again hands out later messages while others released after it are still
    /// invisible. Those later messages must follow, though received after every release.
    #[test]
    fn a_message_received_while_an_earlier_one_is_still_out_follows_it() {
        let groups = ReleasedGroups::default();
        let t0 = Instant::now();
        groups.released(("m2", "g", Some(2)), t0, Duration::from_secs(10));
        let mut skipped_ahead = at(11);
        skipped_ahead.received_at = t0 + Duration::from_millis(5);
        assert!(groups.must_follow(&skipped_ahead), "seq 2 is still out");
        assert!(!groups.must_follow(&at(1)), "seq 1 is ahead of it");
        groups.held(&at(2));
        assert!(!groups.must_follow(&skipped_ahead), "seq 2 is back");
    }
}
