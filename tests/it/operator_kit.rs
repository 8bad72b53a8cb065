//! The operator's kit against the real thing: a real Prometheus (Debian's `prometheus`) on
//! loopback scrapes a running worker with `deploy/prometheus/alerts.yaml` loaded, and the alert
//! for the fault fires through its HTTP API; and every metric the alerts and the dashboard name is
//! one the worker exports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::rig::{Rig, profile, wait_for};

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboard.json");

/// A Prometheus server on a free loopback port, scraping one target every second; killed on drop.
struct Prometheus {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(common::unique("prometheus"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(target)).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(common::log_path("prometheus")).expect("a log file");
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary}: {e}. Fix: apt-get install prometheus (scripts/test.sh does)")
            });
        let prometheus = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        wait_for(
            "Prometheus to be ready",
            Duration::from_secs(30),
            || async { prometheus.get("/-/ready").await.is_some() },
        )
        .await;
        prometheus
    }

    async fn get(&self, path: &str) -> Option<String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// The alerts named `name` in state `firing`, as the HTTP API lists them.
    async fn firing(&self, name: &str) -> Vec<Value> {
        let Some(text) = self.get("/api/v1/alerts").await else {
            return Vec::new();
        };
        let answer: Value = serde_json::from_str(&text).expect("the alerts API answers JSON");
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|alert| alert["labels"]["alertname"] == name && alert["state"] == "firing")
            .cloned()
            .collect()
    }

    /// The value of an instant query with one series, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let text = self.get(&format!("/api/v1/query?query={query}")).await?;
        let answer: Value = serde_json::from_str(&text).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

fn scrape_config(target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ALERTS}\n\
         scrape_configs:\n  - job_name: sqs-batch-worker\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The token refused mid-run: the worker blocks, `sbw_ready` drops to 0, and Prometheus fires
/// `SbwWorkerNotReady` and `SbwWorkerBlocked`, never `SbwMessagesLost`. When the token is
/// accepted again, every row lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_not_ready_while_the_api_refuses_the_token() {
    let rig = Rig::new().await;
    let flags = [
        ("--batch-max-wait", "200ms"),
        ("--auth-retry", "2s"),
        ("--release-backoff", "1s"),
    ];
    let worker = rig.start(&flags).await;
    let prometheus = Prometheus::start(worker.listen).await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    wait_for(
        "Prometheus to scrape a ready worker",
        Duration::from_secs(60),
        || async { prometheus.value("sbw_ready").await == Some(1.0) },
    )
    .await;
    assert!(prometheus.firing("SbwWorkerNotReady").await.is_empty());

    rig.faults(json!({"statuses": {"401": 1.0}, "apply_to": ["batch"]}))
        .await;
    rig.send(&(20..40).map(profile).collect::<Vec<_>>()).await;
    wait_for(
        "SbwWorkerNotReady to fire",
        Duration::from_secs(150),
        || async { !prometheus.firing("SbwWorkerNotReady").await.is_empty() },
    )
    .await;
    let blocked = prometheus.firing("SbwWorkerBlocked").await;
    assert!(
        blocked
            .iter()
            .any(|alert| alert["labels"]["status"] == "401"),
        "SbwWorkerBlocked fires with status 401: {blocked:?}"
    );
    assert!(prometheus.firing("SbwMessagesLost").await.is_empty());

    rig.faults(json!({"statuses": {}})).await;
    wait_for(
        "all 40 rows after the fault",
        Duration::from_secs(120),
        || async { rig.rows("profiles").await.len() == 40 },
    )
    .await;
    worker.stop().await;
    assert!(
        rig.source_empty().await,
        "nothing is left in the source queue"
    );
    assert!(rig.dlq().await.is_empty(), "nothing went to the DLQ");
}

/// Every `sbw_*` name in the alerts and the dashboard is on `/metrics` once a worker with a quota
/// has delivered rows and dead-lettered one (labelled families appear at their first event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_kit_names_is_exported() {
    let rig = Rig::new().await;
    let worker = rig
        .start(&[
            ("--batch-max-wait", "200ms"),
            ("--rate-limit", "100/s:5,100000/day:5"),
        ])
        .await;
    let mut bodies: Vec<String> = (0..10).map(profile).collect();
    bodies.push("not json {".into());
    rig.send(&bodies).await;
    wait_for(
        "10 rows and one DLQ entry",
        Duration::from_secs(60),
        || async { rig.rows("profiles").await.len() == 10 },
    )
    .await;
    let (_, metrics) = worker.get("/metrics").await;
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let named: BTreeSet<String> = [ALERTS, DASHBOARD]
        .iter()
        .flat_map(|path| names_in(Path::new(path)))
        .collect();
    assert!(
        named.len() >= 15,
        "the kit names the worker's metrics: {named:?}"
    );
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}"
    );
    worker.stop().await;
    assert_eq!(rig.dlq().await.len(), 1, "the invalid body went to the DLQ");
}

/// The `sbw_*` metric names a file mentions.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(PathBuf::from(path)).expect("read the kit's file");
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("sbw_") {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}
