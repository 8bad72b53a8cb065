//! The worker, run as the real release binary against the bench's queue and emulator, watched
//! through its own `/metrics`, with its CPU time and peak RSS read from `/proc`.

use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::raw::Until;
use crate::setup::Queues;

pub struct WorkerOutcome {
    pub messages: usize,
    pub seconds: f64,
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// This build's worker, or the one `SBW_WORKER_BIN` names (say, an older revision's).
pub fn default_binary() -> String {
    std::env::var("SBW_WORKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sqs-batch-worker").to_owned())
}

fn spawn(
    binary: &str,
    queues: &Queues,
    api_url: &str,
    listen: &str,
    extra: &[&str],
    log: &str,
) -> Child {
    crate::setup::worker_command(binary, queues, api_url, listen, extra, log)
        .spawn()
        .expect("start the worker binary (cargo bench builds it)")
}

/// A counter's value in Prometheus text (summed over labels).
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A quantile of a Prometheus histogram, interpolated linearly inside its bucket.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for &(le, cumulative) in &buckets {
        if cumulative >= rank && cumulative > 0.0 {
            if le.is_infinite() {
                return previous.0;
            }
            let within = (rank - previous.1) / (cumulative - previous.1).max(1.0);
            return previous.0 + (le - previous.0) * within.clamp(0.0, 1.0);
        }
        previous = (le, cumulative);
    }
    previous.0
}

/// (CPU seconds, peak RSS in MiB) of a live process.
fn proc_usage(pid: u32) -> (f64, f64) {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let cpu = (field(11) + field(12)) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

/// The resident memory of a worker started on an empty queue, once it has polled for 5 s: the
/// part of the peak that is not messages.
pub async fn idle_resident(binary: &str, queues: &Queues, api_url: &str, log: &str) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = spawn(binary, queues, api_url, &listen, &[], log);
    let pid = child.id().expect("the worker runs");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while metrics(&http, &listen).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker did not start; see {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = resident(pid);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(40), child.wait()).await;
    idle
}

/// Where the resident memory is now: anonymous (heap, stacks), file-backed (the binary's pages),
/// and the thread count.
pub fn resident(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads"]
        .iter()
        .filter_map(|field| {
            let line = status
                .lines()
                .find(|l| l.starts_with(&format!("{field}:")))?;
            Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn metrics(http: &reqwest::Client, listen: &str) -> Option<String> {
    http.get(format!("http://{listen}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Scrapes every replica until `until`; their last `/metrics` texts and the first receive.
async fn watch(
    children: &mut [Child],
    listens: &[String],
    until: Until,
    log: &str,
) -> (Vec<String>, Option<Instant>) {
    let http = reqwest::Client::new();
    let mut first_receive = None;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for child in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a worker exited early ({status}); see {log}");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the workers did not finish in 30 min; see {log}"
        );
        let mut texts = Vec::new();
        for listen in listens {
            texts.extend(metrics(&http, listen).await);
        }
        if texts.len() < listens.len() {
            continue;
        }
        let sum = |name: &str| texts.iter().map(|t| counter(t, name)).sum::<f64>();
        if sum("sbw_messages_received_total") > 0.0 && first_receive.is_none() {
            first_receive = Some(Instant::now());
        }
        let finished = match until {
            Until::Count(n) => sum("sbw_messages_deleted_total") >= n as f64,
            Until::Window(window) => first_receive.is_some_and(|t| t.elapsed() >= window),
        };
        if finished {
            return (texts, first_receive);
        }
    }
}

/// Runs `replicas` workers on the one queue until `until`: `Count(n)` waits for n deletes in
/// all, a deadline cuts the window. CPU is summed over the processes, peak RSS is the largest.
pub async fn run(
    binary: &str,
    queues: &Queues,
    api_url: &str,
    extra: &[&str],
    until: Until,
    log: &str,
    replicas: usize,
) -> WorkerOutcome {
    let listens: Vec<String> = (0..replicas.max(1))
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut children: Vec<Child> = listens
        .iter()
        .enumerate()
        .map(|(i, listen)| {
            let log = if i == 0 {
                log.to_owned()
            } else {
                format!("{log}.{i}")
            };
            spawn(binary, queues, api_url, listen, extra, &log)
        })
        .collect();
    let pids: Vec<u32> = children
        .iter()
        .map(|c| c.id().expect("the worker runs"))
        .collect();
    let started = Instant::now();
    let (texts, first_receive) = watch(&mut children, &listens, until, log).await;
    let end = Instant::now();
    let usage: Vec<(f64, f64)> = pids.iter().map(|&pid| proc_usage(pid)).collect();
    for &pid in &pids {
        eprintln!("pipeline: worker {pid} at the end: {}", resident(pid));
    }
    let deleted: f64 = texts
        .iter()
        .map(|t| counter(t, "sbw_messages_deleted_total"))
        .sum();
    // Percentiles of the first replica's histogram (all of it when there is one).
    let latency = "sbw_end_to_end_latency_seconds";
    let outcome = WorkerOutcome {
        messages: deleted as usize,
        seconds: (end - first_receive.unwrap_or(started)).as_secs_f64(),
        cpu_s: usage.iter().map(|u| u.0).sum(),
        peak_rss_mb: usage.iter().map(|u| u.1).fold(0.0, f64::max),
        p50_ms: histogram_quantile(&texts[0], latency, 0.5) * 1000.0,
        p99_ms: histogram_quantile(&texts[0], latency, 0.99) * 1000.0,
    };
    for (pid, mut child) in pids.into_iter().zip(children) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = tokio::time::timeout(Duration::from_secs(40), child.wait()).await;
    }
    outcome
}
