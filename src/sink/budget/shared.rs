//! A quota shared by every replica, kept in an SQS FIFO queue of tokens (`--budget-queue`).
//!
//! Time is cut into slots, one per token interval of each limit (with the 2% margin). The token of
//! slot k is a message whose deduplication ID names the limit and k. Every replica that wants to
//! spend publishes the tokens of the recent slots; SQS's five-minute deduplication keeps exactly
//! one copy of each, however many replicas publish it. A replica spends a token by receiving and
//! deleting it. A token is good from its slot's start for `(burst - 1)` intervals (at least 1% of
//! one): so any window of the API's clock sees at most `burst + window/interval` calls, which is
//! what the API's own token bucket allows. Stale tokens are deleted unspent. A burst of at least 2
//! is required (`config`): with 1, a token would be good for 1% of an interval, too short to hand
//! from one replica to another. Replicas' clocks must agree (NTP): a clock X ahead can spend about
//! X / interval tokens early. During a rolling deploy that changes the limits, old and new
//! replicas spend from separate pools (the token names the limit), so keep the limits unchanged
//! across a deploy or scale the old ones down first.
//!
//! Why SQS and not a DynamoDB table: the worker already has SQS, its IAM role and its endpoint;
//! this adds one queue, no new service, and it is testable here against LocalStack. If the queue
//! is unreachable, spending waits (and retries every second); held messages stay invisible under
//! the heartbeat, so nothing is lost, only delayed.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::Spending;
use crate::sqs::Queue;
use crate::telemetry::Telemetry;

/// Tokens are published only this soon after their slot starts, well inside SQS's five-minute
/// deduplication window, so a late publisher cannot mint a second copy.
const PUBLISH_WINDOW_MS: f64 = 120_000.0;
const RECEIVE_VISIBILITY: Duration = Duration::from_secs(30);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A limit's slot arithmetic, in milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotClock {
    pub interval_ms: f64,
    pub good_for_ms: f64,
}

impl SlotClock {
    pub fn of(limit: &Spending) -> Self {
        let interval_ms = 1000.0 / limit.per_second;
        let good_for_ms = (f64::from(limit.burst) - 1.0).max(0.01) * interval_ms;
        Self {
            interval_ms,
            good_for_ms,
        }
    }

    pub fn slot_at(&self, now_ms: f64) -> i64 {
        (now_ms / self.interval_ms).floor() as i64
    }

    pub fn starts_ms(&self, slot: i64) -> f64 {
        slot as f64 * self.interval_ms
    }

    /// May the token of `slot` be spent at `now_ms`?
    pub fn is_good(&self, slot: i64, now_ms: f64) -> bool {
        let start = self.starts_ms(slot);
        start <= now_ms && now_ms < start + self.good_for_ms
    }

    /// The slots to publish at `now_ms`, after `last` (the newest this replica published): those
    /// that started within the publish window and are still good.
    pub fn to_publish(&self, now_ms: f64, last: Option<i64>) -> std::ops::RangeInclusive<i64> {
        let newest = self.slot_at(now_ms);
        let window = self.good_for_ms.min(PUBLISH_WINDOW_MS);
        let oldest = self.slot_at(now_ms - window).max(newest - 1000);
        let oldest = last.map_or(oldest, |last| oldest.max(last + 1));
        oldest..=newest
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A token's message: `LIMIT#SLOT`, also its group and deduplication ID.
fn token_id(label: &str, slot: i64) -> String {
    format!("{label}#{slot}")
}

fn parse_token(body: &str) -> Option<(&str, i64)> {
    let (label, slot) = body.rsplit_once('#')?;
    Some((label, slot.parse().ok()?))
}

struct State {
    published: Vec<Option<i64>>,
    /// Tokens this replica received and deleted, per limit: their slots.
    stash: Vec<Vec<i64>>,
}

pub struct SharedTokens {
    queue: Queue,
    state: Mutex<State>,
    // One spender at a time in this process: the others wait their turn rather than race.
    turn: tokio::sync::Mutex<()>,
}

impl SharedTokens {
    pub fn new(queue: Queue, limits: usize) -> Self {
        Self {
            queue,
            state: Mutex::new(State {
                published: vec![None; limits],
                stash: vec![Vec::new(); limits],
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn url(&self) -> &str {
        self.queue.url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until this replica holds a good token of every limit, and takes them: their slots,
    /// one per limit, which `give_back` returns to the stash if the call is not made.
    pub async fn acquire(&self, limits: &[Spending], telemetry: &Telemetry) -> Vec<i64> {
        let _turn = self.turn.lock().await;
        let slots: Vec<SlotClock> = limits.iter().map(SlotClock::of).collect();
        loop {
            let now = now_ms();
            if let Some(taken) = self.take_stashed(&slots, now) {
                return taken;
            }
            let result = async {
                self.publish(limits, &slots, now).await?;
                self.receive(limits, &slots).await
            }
            .await;
            if result.is_ok() {
                telemetry.budget_store_reached();
            }
            match result {
                Ok(0) => {
                    // Nothing to spend: sleep until the next slot of a limit we lack, at most 1 s.
                    let wait = self.next_needed_ms(&slots, now_ms()).clamp(5.0, 1000.0);
                    tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
                }
                Ok(_) => {}
                Err(problem) => {
                    telemetry.budget_store_failed(self.queue.url(), &problem);
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                }
            }
        }
    }

    fn take_stashed(&self, slots: &[SlotClock], now: f64) -> Option<Vec<i64>> {
        let mut state = self.state();
        for (stash, slots) in state.stash.iter_mut().zip(slots) {
            stash.retain(|slot| slots.is_good(*slot, now));
            stash.sort_unstable();
        }
        if state.stash.iter().any(Vec::is_empty) {
            return None;
        }
        Some(
            state
                .stash
                .iter_mut()
                .map(|stash| stash.remove(0))
                .collect(),
        )
    }

    /// Tokens taken for a call that was not made: they were deleted from the queue, so this
    /// replica still owns them, and spends them next while their slots are good.
    pub fn give_back(&self, taken: Vec<i64>) {
        let mut state = self.state();
        for (stash, slot) in state.stash.iter_mut().zip(taken) {
            stash.push(slot);
        }
    }

    fn next_needed_ms(&self, slots: &[SlotClock], now: f64) -> f64 {
        let state = self.state();
        slots
            .iter()
            .zip(&state.stash)
            .filter(|(_, stash)| stash.is_empty())
            .map(|(slots, _)| slots.starts_ms(slots.slot_at(now) + 1) - now)
            .fold(f64::MAX, f64::min)
    }

    async fn publish(
        &self,
        limits: &[Spending],
        slots: &[SlotClock],
        now: f64,
    ) -> Result<(), String> {
        let mut entries = Vec::new();
        {
            let state = self.state();
            for ((limit, slots), last) in limits.iter().zip(slots).zip(&state.published) {
                for slot in slots.to_publish(now, *last) {
                    entries.push((limit.label.clone(), slot));
                }
            }
        }
        for chunk in entries.chunks(10) {
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(index, (label, slot))| {
                    let id = token_id(label, *slot);
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(&id)
                        .message_group_id(&id)
                        .message_deduplication_id(&id)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let failed = self
                .queue
                .send_batch(batch)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(failure) = failed.first() {
                return Err(format!("a token was refused: {}", failure.code));
            }
            let mut state = self.state();
            for (label, slot) in chunk {
                if let Some(index) = limits.iter().position(|l| &l.label == label) {
                    let last = &mut state.published[index];
                    *last = Some(last.map_or(*slot, |last| last.max(*slot)));
                }
            }
        }
        Ok(())
    }

    /// Receives tokens; keeps the good ones of our limits (deleting them is spending them),
    /// deletes the stale and the unknown, and gives back at once those whose slot has not begun
    /// on this replica's clock (another replica's clock runs ahead). Returns how many it kept.
    async fn receive(&self, limits: &[Spending], slots: &[SlotClock]) -> Result<usize, String> {
        let received = self
            .queue
            .receive(10, 1, Some(RECEIVE_VISIBILITY))
            .await
            .map_err(|e| e.to_string())?;
        let now = now_ms();
        let mut kept = Vec::new();
        let mut spend = Vec::new();
        let mut early = Vec::new();
        for (message, receipt) in &received {
            let token = parse_token(&message.body).and_then(|(label, slot)| {
                let index = limits.iter().position(|l| l.label == label)?;
                Some((index, slot))
            });
            match token {
                Some((index, slot)) if slots[index].starts_ms(slot) > now => {
                    early.push((receipt.as_str(), 0));
                }
                Some((index, slot)) if slots[index].is_good(slot, now) => {
                    kept.push(Some((index, slot)));
                    spend.push(receipt.as_str());
                }
                _ => {
                    kept.push(None);
                    spend.push(receipt.as_str());
                }
            }
        }
        if !early.is_empty() {
            // Best effort: if it fails, the token comes back when its visibility ends.
            let _ = self.queue.change_visibility_batch(&early).await;
        }
        if spend.is_empty() {
            return Ok(0);
        }
        let failed = self
            .queue
            .delete_batch(&spend)
            .await
            .map_err(|e| e.to_string())?;
        let mut state = self.state();
        let mut count = 0;
        for (index, token) in kept.into_iter().enumerate() {
            // A token we could not delete is not ours: another replica may spend it.
            if let Some((limit, slot)) = token
                && !failed.iter().any(|f| f.index == index)
            {
                state.stash[limit].push(slot);
                count += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records_contract::quota::parse_limits;

    fn slots(spec: &str) -> SlotClock {
        SlotClock::of(&Spending::of(&parse_limits(spec).unwrap()[0]))
    }

    #[test]
    fn tokens_are_good_for_burst_minus_one_intervals() {
        // 60/min with the margin: one slot every 1020 ms.
        let s = slots("60/min:3");
        assert!((s.interval_ms - 1020.0).abs() < 1e-6);
        let cases = [
            (1019.9, false),
            (1020.0, true),
            (3059.0, true),
            (3060.0, false),
        ];
        for (now, good) in cases {
            assert_eq!(s.is_good(1, now), good, "{now}");
        }
        // Burst 1 leaves only a sliver: consecutive calls stay at least 0.99 interval apart.
        let one = slots("60/min");
        assert!(one.is_good(1, 1020.0) && !one.is_good(1, 1031.0));
    }

    #[test]
    fn publishing_covers_the_good_recent_slots_once() {
        let s = slots("60/min:3");
        let now = 10.5 * 1020.0;
        assert_eq!(s.to_publish(now, None), 8..=10);
        assert_eq!(s.to_publish(now, Some(9)), 10..=10);
        assert!(s.to_publish(now, Some(10)).is_empty());
        // A daily limit with a big burst publishes only the last two minutes' slots.
        let day = slots("2000/day:500");
        let now = 1e12;
        let range = day.to_publish(now, None);
        let span = day.starts_ms(*range.end()) - day.starts_ms(*range.start());
        assert!(span <= PUBLISH_WINDOW_MS, "{span}");
    }

    #[test]
    fn any_window_sees_at_most_what_the_api_bucket_allows() {
        // Spend every token at the last good moment and the next at its first: the worst case.
        for (spec, burst) in [("60/min:3", 3.0), ("6/min:2", 2.0), ("100/min", 1.0)] {
            let s = slots(spec);
            let api_interval = s.interval_ms / (1.0 + super::super::MARGIN);
            let mut calls = Vec::new();
            for slot in 0..50i64 {
                let at = if slot % 2 == 0 {
                    s.starts_ms(slot) + s.good_for_ms - 0.001
                } else {
                    s.starts_ms(slot)
                };
                calls.push(at);
            }
            calls.sort_by(f64::total_cmp);
            for i in 0..calls.len() {
                for j in i..calls.len() {
                    let window = calls[j] - calls[i];
                    let allowed = burst + window / api_interval;
                    assert!(((j - i + 1) as f64) <= allowed + 1e-9, "{spec}: {i}..{j}");
                }
            }
        }
        assert_eq!(parse_token("6/min:2#42"), Some(("6/min:2", 42)));
        assert_eq!(parse_token("junk"), None);
    }
}
