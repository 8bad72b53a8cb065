//! The quota's telemetry: budget spent and remaining per limit, records per call, the adaptive
//! concurrency limit, the time batches wait for a slot, and the warning that arrivals outrun what
//! the quota can carry.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use super::{Labels, Telemetry, registered, registered_as};

pub struct QuotaMetrics {
    remaining: Family<Labels, Gauge<f64, AtomicU64>>,
    spent: Family<Labels, Counter>,
    refunded: Family<Labels, Counter>,
    records_per_call: Histogram,
    concurrency_limit: Gauge,
    slot_wait: Histogram,
    store_errors: Counter,
    overruns: Counter,
}

impl QuotaMetrics {
    pub fn register(r: &mut Registry) -> Self {
        Self {
            remaining: registered(
                r,
                "budget_remaining",
                "Calls left in each --rate-limit bucket (local budgets; fractional while refilling)",
            ),
            spent: registered(
                r,
                "budget_calls_spent",
                "Batch calls spent against each --rate-limit limit",
            ),
            refunded: registered(
                r,
                "budget_calls_refunded",
                "Tokens of each --rate-limit limit given back by a ticket whose call was never made",
            ),
            records_per_call: registered_as(
                r,
                "api_call_records",
                "Records per batch call sent to the API (retries included)",
                Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            ),
            concurrency_limit: registered(
                r,
                "concurrency_limit",
                "Batches the adaptive limit lets in flight now (at most --max-in-flight)",
            ),
            slot_wait: registered_as(
                r,
                "slot_wait_seconds",
                "Time a batch that could leave waited for a rate-limit token and an in-flight slot",
                Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            ),
            store_errors: registered(
                r,
                "budget_store_errors",
                "Failed calls to the shared budget queue (--budget-queue); spending waits meanwhile",
            ),
            overruns: registered(
                r,
                "quota_overruns",
                "Times the arrival rate was found above what the quota carries at full batches",
            ),
        }
    }
}

impl Telemetry {
    /// A call took a token of `limit`; `remaining` is the bucket's level when it is local.
    pub fn budget_spent(&self, limit: &str, remaining: Option<f64>) {
        let labels = vec![("limit", limit.to_owned())];
        self.quota.spent.get_or_create(&labels).inc();
        if let Some(remaining) = remaining {
            self.quota.remaining.get_or_create(&labels).set(remaining);
        }
    }

    /// A ticket went unspent and its token went back to `limit`'s bucket.
    pub fn budget_refunded(&self, limit: &str, remaining: Option<f64>) {
        let labels = vec![("limit", limit.to_owned())];
        self.quota.refunded.get_or_create(&labels).inc();
        if let Some(remaining) = remaining {
            self.quota.remaining.get_or_create(&labels).set(remaining);
        }
    }

    pub fn budget_state_unsaved(&self, problem: &str) {
        warn!(
            problem,
            "cannot save the budget to --state-dir; a restart may spend this call's token again"
        );
    }

    /// The shared budget's store (`--budget-table` or `--budget-queue`) failed: calls wait for
    /// it, and `/readyz` says so until it answers again.
    pub fn budget_store_failed(&self, store: &str, problem: &str) {
        self.quota.store_errors.inc();
        warn!(
            store,
            problem,
            "the shared budget's store failed; batch calls wait for it (messages stay held). Fix: \
             check --budget-table (or --budget-queue), its endpoint and that the role may use it"
        );
        self.set_store_down(Some(format!(
            "the shared budget's store {store} cannot be reached ({problem}); batch calls wait"
        )));
    }

    /// The shared budget's store answered.
    pub fn budget_store_reached(&self) {
        self.set_store_down(None);
    }

    /// A limit's level as read from the shared store.
    pub fn budget_level(&self, limit: &str, level: f64) {
        let labels = vec![("limit", limit.to_owned())];
        self.quota.remaining.get_or_create(&labels).set(level);
    }

    pub fn call_records(&self, records: usize) {
        self.quota.records_per_call.observe(records as f64);
    }

    pub fn set_concurrency_limit(&self, limit: usize, why: &str) {
        let before = self.quota.concurrency_limit.set(limit as i64);
        if before != limit as i64 {
            debug!(limit, before, why, "adaptive concurrency limit changed");
        }
    }

    pub fn slot_wait(&self, waited: Duration) {
        self.quota.slot_wait.observe(waited.as_secs_f64());
    }

    /// Arrivals outrun the quota: the backlog grows by `growth_per_hour` messages an hour.
    pub fn quota_overrun(&self, arrivals_per_s: f64, carried_per_s: f64, growth_per_hour: f64) {
        self.quota.overruns.inc();
        warn!(
            arrivals_per_s = format!("{arrivals_per_s:.1}"),
            quota_carries_per_s = format!("{carried_per_s:.1}"),
            backlog_growth_per_hour = growth_per_hour.round() as u64,
            "messages arrive faster than the quota can carry at --batch-max-records per call; the \
             backlog grows. Fix: raise the quota or --batch-max-records, or accept the backlog"
        );
    }
}
