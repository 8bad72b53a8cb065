//! The API's quota, spent like money: every batch call takes a token from each `--rate-limit`
//! bucket first, and a 429's `Retry-After` (or an auth failure) pauses every sender.
//!
//! Where the buckets live:
//! - in this process (the default), optionally saved to `--state-dir` after every call so that a
//!   restarted worker starts from what the last one left, not from a full bucket;
//! - or shared by every replica, so that N replicas spend one quota, not N: in a DynamoDB table
//!   (`--budget-table`, `table.rs`, the recommended store), or in an SQS FIFO queue of tokens
//!   (`--budget-queue`, `shared.rs`, no new service).

pub mod shared;
pub mod state_file;
pub mod table;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::telemetry::Telemetry;
use records_contract::quota::{Bucket, Limit};
pub use shared::SharedTokens;
use state_file::StateFile;
pub use table::TableTokens;
use table::Try;

/// The worker paces each limit 2% below its stated rate: a call that leaves exactly one interval
/// after the last can reach the API a millisecond early and be answered 429.
pub const MARGIN: f64 = 0.02;

/// A limit as the worker spends it: its label, bucket rate (with the margin) and burst.
#[derive(Clone, Debug)]
pub struct Spending {
    pub label: String,
    pub per_second: f64,
    pub burst: u32,
}

impl Spending {
    pub fn of(limit: &Limit) -> Self {
        Self {
            label: limit.to_string(),
            per_second: limit.per_second() / (1.0 + MARGIN),
            burst: limit.burst.unwrap_or(1),
        }
    }
}

/// The calls `limits` allow within `horizon`, starting full: what the poller may read ahead for.
/// `None` when nothing limits the calls.
pub fn calls_within(limits: &[Spending], horizon: Duration) -> Option<f64> {
    limits
        .iter()
        .map(|l| f64::from(l.burst) + l.per_second * horizon.as_secs_f64())
        .min_by(f64::total_cmp)
}

/// The right to make one batch call, already paid for. `spend` it as the call leaves; a ticket
/// dropped unspent (a gate collision, a batch that went back to the queue, a shutdown) gives its
/// tokens back to the buckets it came from, so no quota is thrown away for a call never made.
#[must_use = "a ticket is a call the quota already paid for"]
pub struct Ticket {
    refund: Option<(Arc<Budget>, Taken)>,
}

/// What a ticket took, so that it can be given back.
#[derive(Debug)]
enum Taken {
    Local,
    /// The shared tokens' slots, one per limit.
    Shared(Vec<i64>),
    /// A token of every limit's item in the budget table.
    Table,
}

impl Ticket {
    /// A ticket of no budget: nothing to give back (unlimited budgets, tests).
    pub fn free() -> Self {
        Self { refund: None }
    }

    /// The call leaves now: its tokens are spent for good.
    pub fn spend(mut self) {
        self.refund = None;
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("refundable", &self.refund.is_some())
            .finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((budget, taken)) = self.refund.take() {
            budget.give_back(taken);
        }
    }
}

struct Local {
    buckets: Vec<Bucket>,
    paused_until: Instant,
}

pub struct Budget {
    limits: Vec<Spending>,
    local: Mutex<Local>,
    state: Option<StateFile>,
    shared: Option<SharedTokens>,
    table: Option<Arc<TableTokens>>,
    telemetry: Arc<Telemetry>,
}

/// How long a replica waits before it reads the table again while a token is not there: short
/// enough that a token another replica gave back is not left lying for long.
const TABLE_RECHECK: Duration = Duration::from_secs(1);
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The longest a shared ticket's holder gathers messages before its call leaves.
pub const GATHERING_CEILING: Duration = Duration::from_secs(1);
/// Shared calls gather only under limits whose calls are at least this far apart.
const GATHERING_MIN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "--state-dir (env STATE_DIR, TOML state_dir) = {dir}: {problem}: {source}. Fix: point it \
         at a directory the worker may write, or leave it out"
    )]
    StateDir {
        dir: String,
        problem: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--state-dir (env STATE_DIR, TOML state_dir) = {dir}: another worker process holds its \
         lock (budget.lock). Two processes that share one saved budget would each spend the full \
         quota. Fix: give each replica its own --state-dir, or share one quota between replicas \
         with --budget-queue"
    )]
    StateDirInUse { dir: String },
}

impl Budget {
    pub fn unlimited(telemetry: Arc<Telemetry>) -> Self {
        Self::build(Vec::new(), None, None, telemetry)
    }

    /// A budget in this process, restored from `state_dir` when given.
    pub fn local(
        limits: &[Limit],
        state_dir: Option<&Path>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, BudgetError> {
        let limits: Vec<Spending> = limits.iter().map(Spending::of).collect();
        let state = match state_dir {
            Some(dir) => Some(StateFile::open(dir, telemetry.clone())?),
            None => None,
        };
        Ok(Self::build(limits, state, None, telemetry))
    }

    /// A budget that every replica shares through an SQS token queue.
    pub fn shared(tokens: SharedTokens, limits: &[Limit], telemetry: Arc<Telemetry>) -> Self {
        let limits = limits.iter().map(Spending::of).collect();
        Self::build(limits, None, Some(tokens), telemetry)
    }

    /// A budget that every replica shares through a DynamoDB table.
    pub fn table(tokens: TableTokens, limits: &[Limit], telemetry: Arc<Telemetry>) -> Self {
        let limits = limits.iter().map(Spending::of).collect();
        let mut budget = Self::build(limits, None, None, telemetry);
        budget.table = Some(Arc::new(tokens));
        budget
    }

    fn build(
        limits: Vec<Spending>,
        state: Option<StateFile>,
        shared: Option<SharedTokens>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let now = Instant::now();
        let saved = state.as_ref().map(StateFile::load);
        let buckets = limits
            .iter()
            .map(|limit| match &saved {
                Some(saved) if !saved.first_start => {
                    let tokens = saved.tokens(&limit.label, limit.per_second);
                    if tokens.is_none() {
                        tracing::info!(
                            limit = limit.label,
                            "no saved budget for this limit; it starts with an empty bucket"
                        );
                    }
                    Bucket::with_tokens(limit.per_second, limit.burst, tokens.unwrap_or(0.0), now)
                }
                _ => Bucket::new(limit.per_second, limit.burst, now),
            })
            .collect();
        Self {
            limits,
            local: Mutex::new(Local {
                buckets,
                paused_until: now,
            }),
            state,
            shared,
            table: None,
            telemetry,
        }
    }

    pub fn limits(&self) -> &[Spending] {
        &self.limits
    }

    pub fn is_limited(&self) -> bool {
        !self.limits.is_empty()
    }

    /// Whether other replicas spend the same quota (`--budget-table` or `--budget-queue`).
    pub fn is_shared(&self) -> bool {
        self.is_limited() && (self.table.is_some() || self.shared.is_some())
    }

    /// How long a replica that took a shared ticket keeps reading before its call leaves.
    ///
    /// Replicas that wait for a token read little (`run::ReadAhead`), so that the messages stay
    /// in the queue for whichever replica takes the next token; that replica then gathers them
    /// for this long. Every shared call leaves exactly this long after its take, so the API sees
    /// the calls as far apart as the takes were. A tenth of the slowest limit's interval, at
    /// most a second and at most `--batch-max-wait`; zero (every replica reads ahead in full)
    /// unless every limit's calls are 5 s or more apart with a burst of 2 or more (`gathers`).
    pub fn gathering(&self, max_wait: Duration) -> Duration {
        if !self.is_shared() {
            return Duration::ZERO;
        }
        gathering_time(&self.limits, max_wait)
    }

    fn buckets(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `within`, off the runtime, for `--state-dir` to hold the last spending.
    pub async fn flush_state(&self, within: Duration) {
        let Some(state) = &self.state else { return };
        let writer = state.flusher();
        let flushed = tokio::task::spawn_blocking(move || writer(within)).await;
        if !matches!(flushed, Ok(true)) {
            self.telemetry
                .budget_state_unsaved("the last save did not reach --state-dir before the exit");
        }
    }

    /// Holds every sender back for `duration` from now: in this process, and in every replica
    /// when the budget table is shared.
    pub fn pause_for(&self, duration: Duration) {
        let mut local = self.buckets();
        local.paused_until = local.paused_until.max(Instant::now() + duration);
        drop(local);
        if let Some(table) = &self.table {
            let (table, limits) = (table.clone(), self.limits.clone());
            let telemetry = self.telemetry.clone();
            spawn_detached(async move {
                if let Err(problem) = table.pause(&limits, duration).await {
                    telemetry.budget_store_failed(table.table(), &problem);
                }
            });
        }
    }

    /// One spend through the budget table: waits for every limit's token and takes them.
    async fn acquire_from_table(self: &Arc<Self>, table: &TableTokens) -> Ticket {
        loop {
            match table.try_take(&self.limits).await {
                Ok(Try::Taken(levels)) => {
                    self.telemetry.budget_store_reached();
                    for (limit, level) in self.limits.iter().zip(levels) {
                        self.telemetry.budget_spent(&limit.label, Some(level));
                    }
                    return self.ticket(Taken::Table);
                }
                // Replicas waiting for the same token wake a few milliseconds apart, so that
                // they do not all write for it at once.
                Ok(Try::Wait(wait)) => {
                    self.telemetry.budget_store_reached();
                    tokio::time::sleep(wait.min(TABLE_RECHECK) + jitter()).await;
                }
                // Another replica spent between our read and our write: read again soon.
                Ok(Try::Raced) => tokio::time::sleep(jitter()).await,
                Err(problem) => {
                    self.telemetry.budget_store_failed(table.table(), &problem);
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }

    /// What is left of each limit, read from the budget table (`sbw_budget_remaining`).
    pub async fn read_remaining(&self) {
        let Some(table) = &self.table else { return };
        match table.levels(&self.limits).await {
            Ok(levels) => {
                self.telemetry.budget_store_reached();
                for (limit, level) in self.limits.iter().zip(levels) {
                    self.telemetry.budget_level(&limit.label, level);
                }
            }
            Err(problem) => self.telemetry.budget_store_failed(table.table(), &problem),
        }
    }

    /// Waits until every limit has a token, and takes them.
    pub async fn acquire(self: &Arc<Self>) -> Ticket {
        if !self.is_limited() {
            return Ticket::free();
        }
        loop {
            let paused_until = self.buckets().paused_until;
            if paused_until > Instant::now() {
                tokio::time::sleep_until(paused_until.into()).await;
                continue;
            }
            if let Some(table) = &self.table {
                return self.acquire_from_table(table).await;
            }
            if let Some(shared) = &self.shared {
                let slots = shared.acquire(&self.limits, &self.telemetry).await;
                for limit in &self.limits {
                    self.telemetry.budget_spent(&limit.label, None);
                }
                return self.ticket(Taken::Shared(slots));
            }
            match self.take_local(Instant::now()) {
                Ok(()) => return self.ticket(Taken::Local),
                Err(at) => tokio::time::sleep_until(at.into()).await,
            }
        }
    }

    fn ticket(self: &Arc<Self>, taken: Taken) -> Ticket {
        Ticket {
            refund: Some((self.clone(), taken)),
        }
    }

    /// An unspent ticket's tokens go back: to the local buckets (never above their burst), or to
    /// this replica's stash of shared tokens while their slots are still good.
    fn give_back(&self, taken: Taken) {
        match taken {
            Taken::Table => {
                let Some(table) = self.table.clone() else {
                    return;
                };
                let (limits, telemetry) = (self.limits.clone(), self.telemetry.clone());
                for limit in &self.limits {
                    self.telemetry.budget_refunded(&limit.label, None);
                }
                spawn_detached(async move {
                    if let Err(problem) = table.give_back(&limits).await {
                        telemetry.budget_store_failed(table.table(), &problem);
                    }
                });
            }
            Taken::Shared(slots) => {
                if let Some(shared) = &self.shared {
                    shared.give_back(slots);
                }
                for limit in &self.limits {
                    self.telemetry.budget_refunded(&limit.label, None);
                }
            }
            Taken::Local => {
                let now = Instant::now();
                let mut local = self.buckets();
                for (bucket, limit) in local.buckets.iter_mut().zip(&self.limits) {
                    bucket.give_back(now);
                    let level = bucket.tokens(now);
                    self.telemetry.budget_refunded(&limit.label, Some(level));
                }
                if let Some(state) = &self.state {
                    state.save(&Self::levels(&mut local.buckets, &self.limits, now));
                }
            }
        }
    }

    fn levels(buckets: &mut [Bucket], limits: &[Spending], now: Instant) -> Vec<(String, f64)> {
        buckets
            .iter_mut()
            .zip(limits)
            .map(|(bucket, limit)| (limit.label.clone(), bucket.tokens(now)))
            .collect()
    }

    /// Takes one token from every bucket, or says when all of them will have one.
    fn take_local(&self, now: Instant) -> Result<(), Instant> {
        let mut local = self.buckets();
        if !local.buckets.iter_mut().all(|bucket| bucket.has_token(now)) {
            let ready = local.buckets.iter_mut().map(|b| b.ready_at(now)).max();
            return Err(ready.unwrap_or(now));
        }
        for (bucket, limit) in local.buckets.iter_mut().zip(&self.limits) {
            bucket.take(now);
            self.telemetry
                .budget_spent(&limit.label, Some(bucket.tokens(now)));
        }
        if let Some(state) = &self.state {
            let saved = Self::levels(&mut local.buckets, &self.limits, now);
            // Handed to the writer before the call leaves. A crash of the process loses only what
            // the writer had not yet written: normally the last call's token, more while the
            // disk stalls, never a refilled bucket.
            state.save(&saved);
        }
        Ok(())
    }
}

/// Whether a shared call may gather under `limit`: its calls are at least
/// `GATHERING_MIN_INTERVAL` apart and it banks at least 2. A faster limit gains little (a token
/// comes soon, so no replica holds messages long), and every call that pays at once (a retry, a
/// split's half) lands up to the gathering time closer to the gathered call before it than the
/// takes were: a burst of 1 has no room for that, and the budget table holds that much less
/// (`table::capacity`).
pub fn gathers(limit: &Spending) -> bool {
    limit.burst >= 2 && limit.per_second * GATHERING_MIN_INTERVAL.as_secs_f64() <= 1.0
}

/// A tenth of the slowest limit's interval, at most `GATHERING_CEILING` and `max_wait`; zero
/// unless every limit `gathers`.
fn gathering_time(limits: &[Spending], max_wait: Duration) -> Duration {
    if limits.is_empty() || !limits.iter().all(gathers) {
        return Duration::ZERO;
    }
    let slowest = limits
        .iter()
        .map(|limit| limit.per_second)
        .fold(f64::INFINITY, f64::min);
    let tenth = Duration::try_from_secs_f64(0.1 / slowest).unwrap_or(GATHERING_CEILING);
    tenth.min(GATHERING_CEILING).min(max_wait)
}

/// 2 to 25 ms, at random.
fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(2..25))
}

/// Runs `work` on the runtime if there is one (a ticket can be dropped after the runtime ended,
/// when there is nothing left to give back to).
fn spawn_detached(work: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records_contract::quota::parse_limits;

    #[test]
    fn read_ahead_follows_the_tightest_limit() {
        let limits: Vec<Spending> = parse_limits("6/min,2000/day:3")
            .unwrap()
            .iter()
            .map(Spending::of)
            .collect();
        let day = |s: f64| 3.0 + s * 2000.0 / 86_400.0 / 1.02;
        let cases = [(0, 1.0), (30, day(30.0)), (600, day(600.0))];
        for (horizon, expected) in cases {
            let got = calls_within(&limits, Duration::from_secs(horizon)).unwrap();
            assert!((got - expected).abs() < 0.01, "{horizon}s: {got}");
        }
        assert_eq!(calls_within(&[], Duration::from_secs(30)), None);
    }

    #[test]
    fn a_shared_ticket_gathers_a_tenth_of_the_slowest_interval() {
        let spend = |text: &str| -> Vec<Spending> {
            parse_limits(text)
                .unwrap()
                .iter()
                .map(Spending::of)
                .collect()
        };
        let second = Duration::from_secs(1);
        let cases = [
            ("6/min:2", second * 2, Duration::from_millis(1000)), // 10.2 s apart: the ceiling
            ("10/min:2", second * 2, Duration::from_millis(612)),
            ("6/min:2", second / 4, second / 4), // --batch-max-wait
            (
                "2000/day:5,6/min:2",
                second * 2,
                Duration::from_millis(1000),
            ),
            // Calls under 5 s apart, or a burst of 1: no gathering.
            ("30/min:3", second * 2, Duration::ZERO),
            ("100/s:200", second * 2, Duration::ZERO),
            ("2000/day:5,100/s:50", second * 2, Duration::ZERO),
            ("6/min", second * 2, Duration::ZERO),
            ("", second * 2, Duration::ZERO),
        ];
        for (limits, max_wait, expected) in cases {
            let got = gathering_time(&spend(limits), max_wait);
            let off = got.abs_diff(expected);
            assert!(off < Duration::from_micros(5), "{limits}: {got:?}");
        }
        let local = Budget::local(
            &parse_limits("6/min:2").unwrap(),
            None,
            Arc::new(Telemetry::new()),
        );
        assert_eq!(
            local.unwrap().gathering(second * 2),
            Duration::ZERO,
            "local: no gathering"
        );
    }

    #[test]
    fn local_buckets_take_from_every_limit_at_once() {
        let limits = parse_limits("2/s:2,3/min").unwrap();
        let budget = Budget::local(&limits, None, Arc::new(Telemetry::new())).unwrap();
        let t0 = Instant::now();
        assert!(budget.take_local(t0).is_ok());
        // The per-minute limit (burst 1) is empty; the per-second one still holds a token.
        let at = budget.take_local(t0).unwrap_err();
        let wait = at - t0;
        assert!(
            wait > Duration::from_secs(20) && wait < Duration::from_secs(21),
            "{wait:?}"
        );
        assert!(budget.take_local(at).is_ok());
    }

    /// A ticket dropped unspent gives its token back; a spent one does not. With one call a
    /// minute, a thrown-away ticket would cost a minute of quota.
    #[tokio::test(start_paused = true)]
    async fn an_unspent_ticket_gives_its_token_back() {
        let limits = parse_limits("1/min").unwrap();
        let telemetry = Arc::new(Telemetry::new());
        let budget = Arc::new(Budget::local(&limits, None, telemetry.clone()).unwrap());
        let start = tokio::time::Instant::now();
        drop(budget.acquire().await);
        budget.acquire().await.spend();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the refunded token paid at once"
        );
        let waited = tokio::time::timeout(Duration::from_secs(30), budget.acquire()).await;
        assert!(waited.is_err(), "the spent token is gone for a minute");
        let metrics = telemetry.render();
        assert!(metrics.contains("sbw_budget_calls_refunded_total{limit=\"1/min\"} 1"));
        assert!(metrics.contains("sbw_budget_calls_spent_total{limit=\"1/min\"} 2"));
    }
}
