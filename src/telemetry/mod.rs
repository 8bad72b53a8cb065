//! Telemetry: each event writes its log line and its metric in one place. Also readiness, the
//! Prometheus registry, and the `/healthz`, `/readyz`, `/metrics` server. A leaf: it imports
//! nothing from the rest of the crate, so every stage can report without a circle; events take
//! what they print (`&dyn Display`, names), not the callers' types.

pub mod peers;
pub mod quota;
pub mod server;
pub mod systemd;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tracing::{debug, error, info, warn};

type Labels = Vec<(&'static str, String)>;

/// Tenants (message groups) with a DLQ series of their own; the rest share `other`.
pub const TENANT_LABELS: usize = 20;

/// A label value as the exposition format writes it: the encoder writes values as they are, and a
/// group ID may hold `"` or `\`, which would break the whole scrape.
fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A new metric of its default kind, registered under `name` (after the `sbw_` prefix).
pub(crate) fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    registered_as(registry, name, help, M::default())
}

/// `metric`, registered under `name`.
pub(crate) fn registered_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

pub struct Telemetry {
    registry: Registry,
    received: Counter,
    deleted: Counter,
    released: Counter,
    stale_receipts: Counter,
    dead_lettered: Family<Labels, Counter>,
    dead_lettered_by_tenant: Family<Labels, Counter>,
    /// The tenants with a label of their own in `dead_lettered_by_tenant`, at most `TENANT_LABELS`.
    tenants: Mutex<std::collections::HashSet<String>>,
    batches: Family<Labels, Counter>,
    records_per_batch: Histogram,
    api_requests: Family<Labels, Counter>,
    retries: Counter,
    job_polls: Family<Labels, Counter>,
    latency: Histogram,
    in_flight: Gauge,
    buffered: Gauge,
    visibility_extended: Counter,
    orphans_released: Counter,
    duplicate_receipts: Counter,
    held_bytes: Gauge,
    key_reused: Counter,
    timeout_splits: Counter,
    api_outages: Counter,
    dlq_send_failed: Counter,
    lost: Counter,
    deleted_unsettled: Counter,
    unknown_fields_dropped: Counter,
    ready: Gauge,
    quota: quota::QuotaMetrics,
    peers: peers::PeerMetrics,
    sqs_ready: AtomicBool,
    api_ready: AtomicBool,
    blocked: Mutex<Option<String>>,
    /// Why the shared budget's store is not answering, while it is not.
    store_down: Mutex<Option<String>>,
    pub systemd: systemd::Notifier,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// The metric table: each metric's field, name (after `sbw_`) and help, one line each.
    #[rustfmt::skip]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sbw");
        let r = &mut registry;
        Self {
            received: registered(r, "messages_received", "Messages received from the source queue"),
            deleted: registered(r, "messages_deleted", "Messages deleted from the source queue"),
            released: registered(r, "messages_released", "Messages made visible again (visibility 0)"),
            stale_receipts: registered(r, "stale_receipts", "Deletes refused because the receipt handle was stale"),
            dead_lettered: registered(r, "dlq_messages", "Messages sent to the DLQ, by reason"),
            dead_lettered_by_tenant: registered(r, "dlq_messages_by_tenant", "Messages with a MessageGroupId sent to the DLQ, by group (a fair queue's tenant, a FIFO group): the first 20 groups to reach the DLQ, then other"),
            tenants: Mutex::default(),
            batches: registered(r, "batches", "Batches flushed, by flush reason"),
            records_per_batch: registered_as(r, "batch_records", "Records per flushed batch", Histogram::new(exponential_buckets(1.0, 2.0, 15))),
            api_requests: registered(r, "api_requests", "Records API requests, by route and status"),
            retries: registered(r, "api_retries", "Batch request retries"),
            job_polls: registered(r, "job_polls", "Job status polls, by outcome"),
            latency: registered_as(r, "end_to_end_latency_seconds", "From SQS SentTimestamp to the 202", Histogram::new(exponential_buckets(0.01, 2.0, 16))),
            in_flight: registered(r, "batches_in_flight", "Batches submitted or being polled"),
            buffered: registered(r, "messages_buffered", "Messages waiting in the batcher"),
            visibility_extended: registered(r, "visibility_extensions", "Messages whose visibility the heartbeat extended"),
            orphans_released: registered(r, "orphans_released", "Messages released because the task holding them ended without settling them (a bug)"),
            duplicate_receipts: registered(r, "duplicate_receipts", "Copies of a message received while the worker already held it"),
            held_bytes: registered(r, "held_bytes", "Bytes of message bodies held against --max-held-bytes"),
            key_reused: registered(r, "key_reused", "Batches answered KEY_REUSED: a job under their key exists with other bytes; their messages go to the DLQ as key_reused"),
            timeout_splits: registered(r, "timeout_splits", "Batches halved because every attempt timed out (--request-timeout)"),
            api_outages: registered(r, "api_outages", "Batches whose retries were spent on transient failures; receiving paused"),
            dlq_send_failed: registered(r, "dlq_send_failed", "Rejected messages the DLQ refused; they stay in the source queue"),
            lost: registered(r, "messages_lost", "Messages deleted from the source that neither the API committed nor the DLQ took"),
            unknown_fields_dropped: registered(r, "unknown_fields_dropped", "Fields left out of records because the object's schema does not know them (--unknown-fields drop)"),
            deleted_unsettled: registered(r, "deleted_unsettled", "Messages deleted after their 202 (--ack-on accepted) whose job the worker stopped following before it ended (a drain that ran out of time); the job may still commit them"),
            ready: registered(r, "ready", "1 when /readyz answers 200: SQS and the API reached, nothing blocked"),
            quota: quota::QuotaMetrics::register(r),
            peers: peers::PeerMetrics::register(r),
            registry,
            sqs_ready: AtomicBool::new(false),
            api_ready: AtomicBool::new(false),
            blocked: Mutex::new(None),
            store_down: Mutex::new(None),
            systemd: systemd::Notifier::disabled(),
        }
    }

    /// Telemetry that also speaks systemd's notify protocol when run under systemd.
    pub fn with_systemd() -> Self {
        Self {
            systemd: systemd::Notifier::from_env(),
            ..Self::new()
        }
    }

    pub fn render(&self) -> String {
        self.ready.set(i64::from(self.readiness().is_ok()));
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    pub fn received(&self, count: usize) {
        self.received.inc_by(count as u64);
        debug!(count, "received messages");
    }

    pub fn deleted(&self, count: usize) {
        self.deleted.inc_by(count as u64);
        debug!(count, "deleted messages");
    }

    pub fn released(&self, count: usize, why: &str, visibility: Duration) {
        self.released.inc_by(count as u64);
        if count > 0 {
            warn!(
                count,
                why,
                visible_in_s = visibility.as_secs(),
                "released messages back to the queue for redelivery"
            );
        }
    }

    pub fn orphans_released(&self, count: usize) {
        self.orphans_released.inc_by(count as u64);
        error!(
            count,
            "messages whose task ended without settling them are released for redelivery"
        );
    }

    pub fn duplicate_receipt(&self, message_id: &str) {
        self.duplicate_receipts.inc();
        warn!(
            message_id,
            "SQS handed out a message the worker already holds; keeping one copy with the newest receipt"
        );
    }

    pub fn set_held_bytes(&self, bytes: usize) {
        self.held_bytes.set(bytes as i64);
    }

    pub fn key_reused(&self, key: &str, messages: usize) {
        self.key_reused.inc();
        warn!(
            key,
            messages,
            "KEY_REUSED: a job under this key exists with other bytes (another version or other \
             settings); whether it committed is unknown, so the messages go to the DLQ as key_reused"
        );
    }

    pub fn timeout_split(&self, records: usize) {
        self.timeout_splits.inc();
        warn!(
            records,
            "every attempt of the batch timed out (--request-timeout); sending it in halves"
        );
    }

    pub fn api_outage(&self, error: &dyn std::fmt::Display, pause: Duration) {
        self.api_outages.inc();
        warn!(
            %error,
            pause_s = pause.as_secs(),
            "the Records API failed a batch on every retry; pausing receives and releasing its messages"
        );
    }

    pub fn stale_receipt(&self, message_id: &str, code: &str) {
        self.stale_receipts.inc();
        warn!(
            message_id,
            code, "delete refused: the receipt handle is stale; SQS will redeliver this message"
        );
    }

    pub fn delete_failed(&self, message_id: &str, code: &str) {
        warn!(
            message_id,
            code, "delete failed on every attempt; the message is released and delivered again"
        );
    }

    /// `reason` is the DLQ reason's name (`outcome::Reason::as_str`).
    pub fn dead_lettered(
        &self,
        message_id: &str,
        tenant: Option<&str>,
        reason: &str,
        message: &str,
    ) {
        self.dead_lettered
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
        if let Some(tenant) = tenant {
            let label = self.tenant_label(tenant);
            self.dead_lettered_by_tenant
                .get_or_create(&vec![("tenant", label)])
                .inc();
        }
        info!(
            message_id,
            tenant,
            reason,
            detail = message,
            "sent to the DLQ"
        );
    }

    /// The tenant's own label while fewer than `TENANT_LABELS` have one, else `other`. A tenant
    /// never moves between the two: a counter's series must only grow.
    fn tenant_label(&self, tenant: &str) -> String {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if tenants.contains(tenant) || tenants.len() < TENANT_LABELS {
            tenants.insert(tenant.to_owned());
            return label_value(tenant);
        }
        "other".to_owned()
    }

    pub fn dlq_send_failed(&self, message_id: &str, problem: &str) {
        self.dlq_send_failed.inc();
        error!(
            message_id,
            problem, "could not send to the DLQ; the message stays in the source queue"
        );
    }

    /// How many fields `--unknown-fields drop` has left out so far.
    pub fn unknown_fields_dropped_count(&self) -> u64 {
        self.unknown_fields_dropped.get()
    }

    /// `--unknown-fields drop` left fields out of a record.
    pub fn unknown_fields_dropped(&self, fields: usize) {
        self.unknown_fields_dropped.inc_by(fields as u64);
        debug!(
            fields,
            "left fields the schema does not know out of a record"
        );
    }

    /// A message deleted after its 202 was dropped while its job still ran: the job may still
    /// commit it, but the worker no longer knows.
    pub fn deleted_unsettled(&self, message_id: &str, job_id: &str) {
        self.deleted_unsettled.inc();
        warn!(
            message_id,
            job_id,
            "stopped following the job of a message already deleted (--ack-on accepted); the job \
             may still commit it. Check the job's report in the Records API"
        );
    }

    pub fn dlq_lost(&self, message_id: &str, problem: &str) {
        self.lost.inc();
        error!(
            message_id,
            problem,
            "could not send an already-deleted message to the DLQ; giving up after retries"
        );
    }

    pub fn batch_flushed(&self, reason: &str, records: usize, messages: usize) {
        self.batches
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
        self.records_per_batch.observe(records as f64);
        debug!(reason, records, messages, "batch flushed");
    }

    pub fn api_request(&self, route: &'static str, status: &str) {
        self.api_requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.to_owned()),
            ])
            .inc();
    }

    pub fn api_retry(&self, key: &str, error: &dyn std::fmt::Display, delay: Duration) {
        self.retries.inc();
        warn!(key, %error, delay_ms = delay.as_millis() as u64, "batch request failed; retrying with the same key");
    }

    pub fn accepted(
        &self,
        job_id: &str,
        records: usize,
        replayed: bool,
        latencies: impl Iterator<Item = Duration>,
    ) {
        for latency in latencies {
            self.latency.observe(latency.as_secs_f64());
        }
        info!(job_id, records, replayed, "batch accepted");
    }

    pub fn job_poll(&self, outcome: &str) {
        self.job_polls
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    pub fn job_finished(&self, job_id: &str, state: &str, invalid_rows: usize, named: usize) {
        info!(
            job_id,
            state,
            invalid_rows,
            named_errors = named,
            "job finished"
        );
    }

    pub fn batch_refused(&self, error: &dyn std::fmt::Display, action: &str, records: usize) {
        warn!(%error, action, records, "batch request refused");
    }

    pub fn set_in_flight(&self, batches: usize) {
        self.in_flight.set(batches as i64);
    }

    pub fn set_buffered(&self, messages: usize) {
        self.buffered.set(messages as i64);
    }

    pub fn visibility_extended(&self, count: usize) {
        self.visibility_extended.inc_by(count as u64);
        debug!(count, "extended visibility");
    }

    /// A receive succeeded. The first one, after the metadata fetch, makes the worker ready.
    pub fn sqs_reached(&self) {
        self.systemd.poll_alive();
        if !self.sqs_ready.swap(true, Ordering::Relaxed) && self.api_ready.load(Ordering::Relaxed) {
            info!("first receive done and the API reached: ready");
            self.systemd.ready();
        }
    }

    pub fn api_reached(&self) {
        self.api_ready.store(true, Ordering::Relaxed);
    }

    /// Marks the worker not ready and says what the operator must fix.
    pub fn block(&self, problem: String) {
        error!(problem = problem.as_str(), "worker not ready");
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
    }

    pub fn unblock(&self) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.take().is_some() {
            info!("the Records API accepts the token again; worker ready");
        }
    }

    pub(crate) fn set_store_down(&self, problem: Option<String>) {
        let mut down = self.store_down.lock().unwrap_or_else(|p| p.into_inner());
        if problem.is_none() && down.is_some() {
            info!("the shared budget's store answers again");
        }
        *down = problem;
    }

    /// `Ok` when ready, or what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(problem) = self
            .store_down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(problem);
        }
        if let Some(problem) = self
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(problem);
        }
        match (
            self.sqs_ready.load(Ordering::Relaxed),
            self.api_ready.load(Ordering::Relaxed),
        ) {
            (true, true) => Ok(()),
            (false, _) => Err("SQS not reached yet".into()),
            (_, false) => Err("Records API not reached yet".into()),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            received: self.received.get(),
            deleted: self.deleted.get(),
            released: self.released.get(),
        }
    }
}

/// A few totals for the exit summary.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub received: u64,
    pub deleted: u64,
    pub released: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `TENANT_LABELS` tenants keep their own series; later ones count as `other`,
    /// and a message without a group is counted by reason only.
    #[test]
    fn dlq_tenants_are_a_bounded_label_set() {
        let telemetry = Telemetry::new();
        for n in 0..TENANT_LABELS + 5 {
            telemetry.dead_lettered("m", Some(&format!("t{n}")), "invalid_row", "");
        }
        telemetry.dead_lettered("m", Some("t0"), "invalid_row", "");
        telemetry.dead_lettered("m", None, "invalid_row", "");
        let quoted = Telemetry::new();
        quoted.dead_lettered("m", Some(r#"a"b\c"#), "invalid_row", "");
        assert!(
            quoted
                .render()
                .contains(r#"sbw_dlq_messages_by_tenant_total{tenant="a\"b\\c"} 1"#),
            "{}",
            quoted.render()
        );
        let metrics = telemetry.render();
        assert!(
            metrics.contains(r#"sbw_dlq_messages_by_tenant_total{tenant="t0"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"sbw_dlq_messages_by_tenant_total{tenant="other"} 5"#),
            "{metrics}"
        );
        assert_eq!(
            metrics.matches("sbw_dlq_messages_by_tenant_total{").count(),
            TENANT_LABELS + 1
        );
        assert!(
            metrics.contains(r#"sbw_dlq_messages_total{reason="invalid_row"} 27"#),
            "{metrics}"
        );
    }
}
