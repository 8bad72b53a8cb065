//! Telemetry of untrusted peers (docs/security.md): API answers over their size ceiling, job
//! `statusPath`s on another origin, and metrics connections refused at the connection limit.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::warn;

use super::{Labels, Telemetry, registered};

pub struct PeerMetrics {
    too_large: Family<Labels, Counter>,
    foreign_status_paths: Counter,
    connections_refused: Counter,
}

impl PeerMetrics {
    pub fn register(r: &mut Registry) -> Self {
        Self {
            too_large: registered(
                r,
                "api_answer_too_large",
                "API answers cut off at their route's size ceiling (a transient failure), by route",
            ),
            foreign_status_paths: registered(
                r,
                "api_foreign_status_paths",
                "Job statusPaths on another origin than --api-url, outside its path or with credentials; polled on the documented job route instead",
            ),
            connections_refused: registered(
                r,
                "metrics_connections_refused",
                "Connections to --listen closed at once because the connection limit was reached",
            ),
        }
    }
}

impl Telemetry {
    pub fn api_answer_too_large(&self, route: &'static str, ceiling: usize) {
        self.peers
            .too_large
            .get_or_create(&vec![("route", route.to_owned())])
            .inc();
        warn!(
            route,
            ceiling_bytes = ceiling,
            "an API answer exceeded its size ceiling; it is dropped unread and the call counts as a \
             transient failure. Fix: check what sits between the worker and --api-url (a proxy or \
             captive portal answering instead of the API)"
        );
    }

    /// `origin` is the scheme, host and port the answer named; never the whole URL.
    pub fn api_foreign_status_path(&self, job_id: &str, origin: &str) {
        self.peers.foreign_status_paths.inc();
        warn!(
            job_id,
            named_origin = origin,
            "a job's statusPath names another origin than --api-url, a path outside it, or \
             credentials; the token stays with --api-url, and the job is polled on the documented \
             route there"
        );
    }

    pub fn metrics_connection_refused(&self) {
        self.peers.connections_refused.inc();
    }
}
