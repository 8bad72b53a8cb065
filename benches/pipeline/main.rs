//! The pipeline benchmark: the worker against the ceiling of the queue and against the two
//! consumer shapes it replaces, on the same LocalStack queue setup and the same messages, plus a
//! fixed window under the Drip limit (100 requests a minute) and an optional batch-size sweep.
//!
//! `cargo bench --bench pipeline -- [--messages 100000] [--pollers 4] [--window 60] [--sweep]
//! [--sweep-messages 20000]`. Prints a table, then one `pipeline: ...` summary line.

mod alternate;
mod chart;
mod open_loop;
mod raw;
mod report;
mod setup;
mod steady;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use raw::{Mode, Until};
use records_emulator::RunningEmulator;
use report::{Row, Summary, percentile};
use serde_json::{Value, json};
use setup::Queues;

struct Args {
    messages: usize,
    pollers: usize,
    window: Duration,
    sweep: bool,
    sweep_messages: usize,
    /// `--only worker|big|ceiling|ratelimited|alternate|steady|replicas|memory`: those runs alone
    /// (profiling, A/B checks; set `SBW_WORKER_BIN` to run another build of the worker).
    only: Option<String>,
    /// How many times `alternate`, `steady` and `replicas` run each configuration.
    repeat: usize,
    /// `alternate`: more worker binaries (another revision's build, a wrapper that sets an
    /// environment), comma-separated, run in the same sequence.
    baseline_bins: Vec<String>,
    /// `alternate`: leave out the per-receive baseline (quick A/B screens).
    skip_per_receive: bool,
    /// `alternate`: add the worker reading SNS notifications through a five-field mapping.
    producers: bool,
    /// `steady`: arrivals per second (default: half the first ceiling run) for `--seconds`.
    rate: Option<usize>,
    seconds: usize,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let text = |name: &str| argv.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let messages = value("--messages").unwrap_or(100_000);
    Args {
        messages,
        pollers: value("--pollers").unwrap_or(4),
        window: Duration::from_secs(value("--window").unwrap_or(60) as u64),
        sweep: argv.iter().any(|a| a == "--sweep"),
        sweep_messages: value("--sweep-messages").unwrap_or(messages.min(20_000)),
        only: text("--only"),
        repeat: value("--repeat").unwrap_or(3),
        baseline_bins: text("--baseline-bin")
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        skip_per_receive: argv.iter().any(|a| a == "--skip-per-receive"),
        producers: argv.iter().any(|a| a == "--producers"),
        rate: value("--rate"),
        seconds: value("--seconds").unwrap_or(60),
    }
}

/// The emulator's control endpoints.
struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}/__emu/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    /// Back to a clean emulator; `per_s` sets the write limit (both classes).
    async fn reset(&self, per_s: Option<f64>) {
        self.post("reset", json!({})).await;
        if let Some(rate) = per_s {
            self.post("faults", json!({"rate_limit_per_s": rate})).await;
        }
    }

    /// (write requests, records accepted) so far.
    async fn writes(&self) -> (u64, u64) {
        let stats: Value = self
            .http
            .get(format!("{}/__emu/stats", self.base))
            .send()
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("stats JSON");
        let calls = stats["requests"]
            .as_object()
            .map(|routes| {
                routes
                    .iter()
                    .filter(|(route, _)| route.starts_with("POST /public/v1/records/"))
                    .flat_map(|(_, by_status)| by_status.as_object().into_iter().flatten())
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let records = stats["records_accepted"].as_u64().unwrap_or(0)
            + stats["single_writes"].as_u64().unwrap_or(0);
        (calls, records)
    }
}

struct Bench {
    args: Args,
    sqs: aws_sdk_sqs::Client,
    emulator: RunningEmulator,
    control: Control,
    out: PathBuf,
}

impl Bench {
    async fn queue(&self, label: &str, messages: usize, body: fn(usize) -> String) -> Queues {
        let queues = Queues::create(&self.sqs, label).await;
        let started = std::time::Instant::now();
        setup::fill(&self.sqs, &queues.source, messages, body).await;
        eprintln!(
            "pipeline: {label}: {messages} messages enqueued in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        queues
    }

    /// A filled queue, a reset emulator (with the write limit, if any), and when the run ends.
    async fn prepare(
        &self,
        name: &str,
        messages: usize,
        limit: Option<f64>,
        body: fn(usize) -> String,
    ) -> (Queues, Until) {
        let queues = self.queue(name, messages, body).await;
        self.control.reset(limit).await;
        let until = match limit {
            Some(_) => Until::Window(self.args.window),
            None => Until::Count(messages),
        };
        (queues, until)
    }

    async fn raw(&self, name: &str, mode: Mode, messages: usize, limit: Option<f64>) -> Row {
        let (queues, until) = self.prepare(name, messages, limit, setup::body).await;
        let mut outcome = raw::run(
            &self.sqs,
            &queues.source,
            &self.emulator.api_url(),
            mode,
            self.args.pollers,
            until,
        )
        .await;
        let row = Row {
            name: name.to_owned(),
            messages: outcome.messages,
            seconds: outcome.seconds,
            write_calls: 0,
            records_accepted: 0,
            p50_ms: percentile(&mut outcome.latencies_ms, 50.0),
            p99_ms: percentile(&mut outcome.latencies_ms, 99.0),
            cpu_s: None,
            peak_rss_mb: None,
        };
        self.finish(queues, row).await
    }

    /// Adds the emulator's count of write calls to the row, and deletes the run's queues.
    async fn finish(&self, queues: Queues, mut row: Row) -> Row {
        (row.write_calls, row.records_accepted) = self.control.writes().await;
        queues.delete().await;
        eprintln!("pipeline: {}: {:.0} msgs/s", row.name, row.msgs_per_s());
        row
    }

    /// The worker with 10,000-record batches.
    async fn big(&self, messages: usize) -> Row {
        let flags = ["--batch-max-records", "10000", "--batch-max-wait", "20s"];
        self.worker("worker (--batch-max-records 10000)", &flags, messages, None)
            .await
    }

    async fn worker(&self, name: &str, flags: &[&str], messages: usize, limit: Option<f64>) -> Row {
        let binary = worker::default_binary();
        let spec = WorkerSpec {
            name,
            binary: &binary,
            flags,
            replicas: 1,
            body: setup::body,
        };
        self.worker_run(&spec, messages, limit).await
    }

    async fn worker_run(&self, spec: &WorkerSpec<'_>, messages: usize, limit: Option<f64>) -> Row {
        let (queues, until) = self.prepare(spec.name, messages, limit, spec.body).await;
        let log = self
            .out
            .join(format!("{}.log", spec.name.replace([' ', ',', '/'], "_")));
        let outcome = worker::run(
            spec.binary,
            &queues,
            &self.emulator.api_url(),
            spec.flags,
            until,
            &log.display().to_string(),
            spec.replicas,
        )
        .await;
        let row = Row {
            name: spec.name.to_owned(),
            messages: outcome.messages,
            seconds: outcome.seconds,
            write_calls: 0,
            records_accepted: 0,
            p50_ms: outcome.p50_ms,
            p99_ms: outcome.p99_ms,
            cpu_s: Some(outcome.cpu_s),
            peak_rss_mb: Some(outcome.peak_rss_mb),
        };
        self.finish(queues, row).await
    }
}

/// One worker configuration: which binary, which flags, how many processes on the queue.
pub struct WorkerSpec<'a> {
    pub name: &'a str,
    pub binary: &'a str,
    pub flags: &'a [&'a str],
    pub replicas: usize,
    /// Message `i`'s body.
    pub body: fn(usize) -> String,
}

/// The Drip limit of seed 000: 100 write requests a minute, per class.
const DRIP: Option<f64> = Some(100.0 / 60.0);

/// What a user facing the Drip limit sets: its pace, and the largest batches.
const RATE_LIMITED_WORKER: &[&str] = &[
    "--rate-limit",
    "100/min",
    "--batch-max-records",
    "10000",
    "--batch-max-wait",
    "20s",
];

fn per_min(row: &Row) -> f64 {
    row.messages as f64 * 60.0 / row.seconds.max(1e-9)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    setup::ensure_localstack().await;
    let emulator = setup::emulator().await;
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"));
    std::fs::create_dir_all(&out).expect("create target/bench");
    let bench = Bench {
        sqs: setup::sqs(),
        control: Control {
            http: reqwest::Client::new(),
            base: emulator.base_url(),
        },
        emulator,
        out,
        args,
    };
    eprintln!(
        "pipeline: {} messages of {} bytes, {} pollers, {} s rate-limited window",
        bench.args.messages,
        setup::body(0).len(),
        bench.args.pollers,
        bench.args.window.as_secs()
    );
    match bench.args.only.clone() {
        Some(only) => only_mode(&bench, &only).await,
        None => everything(&bench).await,
    }
    let _ = bench.emulator.stop().await;
}

/// `--only MODE`: one part of the comparison, or one of the measuring modes.
async fn only_mode(bench: &Bench, only: &str) {
    let n = bench.args.messages;
    match only {
        "worker" => {
            let worker = bench.worker("worker (defaults)", &[], n, None).await;
            report::print_table(&[worker]);
        }
        "big" => report::print_table(&[bench.big(n).await]),
        "alternate" => alternate_mode(bench).await,
        "steady" => steady_mode(bench).await,
        "replicas" => replicas_mode(bench).await,
        "memory" => memory_mode(bench).await,
        "ceiling" => {
            let ceiling = bench.raw("ceiling", Mode::Ceiling, n, None).await;
            report::print_table(&[ceiling]);
        }
        "ratelimited" => {
            let worker = bench
                .worker("rate-limited: worker", RATE_LIMITED_WORKER, n, DRIP)
                .await;
            let per_message = bench
                .raw(
                    "rate-limited: per message",
                    Mode::PerMessage,
                    n.min(20_000),
                    DRIP,
                )
                .await;
            println!(
                "rate-limited: worker {:.0}/min, per message {:.0}/min, ratio {:.0}",
                per_min(&worker),
                per_min(&per_message),
                per_min(&worker) / per_min(&per_message).max(1e-9)
            );
            report::print_table(&[worker, per_message]);
        }
        other => eprintln!("pipeline: --only {other} is not a mode; see the header of this file"),
    }
}

/// The whole comparison: the ceiling, the worker, the baselines, and the rate-limited three.
async fn everything(bench: &Bench) {
    let n = bench.args.messages;
    let ceiling = bench
        .raw("ceiling (receive+delete)", Mode::Ceiling, n, None)
        .await;
    let worker = bench.worker("worker (defaults)", &[], n, None).await;
    let big = bench.big(n).await;
    let per_message = bench
        .raw("baseline: per message", Mode::PerMessage, n, None)
        .await;
    let per_receive = bench
        .raw("baseline: per receive", Mode::PerReceive, n, None)
        .await;
    let rl_worker = bench
        .worker("rate-limited: worker", RATE_LIMITED_WORKER, n, DRIP)
        .await;
    let baseline_fill = n.min(20_000);
    let rl_per_message = bench
        .raw(
            "rate-limited: per message",
            Mode::PerMessage,
            baseline_fill,
            DRIP,
        )
        .await;
    let rl_per_receive = bench
        .raw(
            "rate-limited: per receive",
            Mode::PerReceive,
            baseline_fill,
            DRIP,
        )
        .await;
    if bench.args.sweep {
        sweep(bench).await;
    }
    report::print_table(&[
        ceiling.clone(),
        worker.clone(),
        big,
        per_message.clone(),
        per_receive.clone(),
        rl_worker.clone(),
        rl_per_message.clone(),
        rl_per_receive.clone(),
    ]);
    if rl_worker.messages >= n {
        println!(
            "note: the rate-limited worker drained all {n} queued messages before the window closed; \
             its per-minute figure is capped by the queue, not by the API"
        );
    }
    let summary = Summary {
        ceiling: &ceiling,
        worker: &worker,
        per_message: &per_message,
        per_receive: &per_receive,
        ratelimited_worker_per_min: per_min(&rl_worker),
        ratelimited_per_message_per_min: per_min(&rl_per_message),
        ratelimited_per_receive_per_min: per_min(&rl_per_receive),
    };
    println!("{}", summary.line());
}

/// The worker (and `--baseline-bin`, if given) and the per-receive baseline, alternated with
/// ceiling runs, `--repeat` times each.
async fn alternate_mode(bench: &Bench) {
    let this = worker::default_binary();
    let mut entries = vec![alternate::Entry::Worker(WorkerSpec {
        name: "worker (defaults)",
        binary: &this,
        flags: &[],
        replicas: 1,
        body: setup::body,
    })];
    let names: Vec<String> = bench
        .args
        .baseline_bins
        .iter()
        .map(|path| format!("other build: {}", short(path)))
        .collect();
    for (binary, name) in bench.args.baseline_bins.iter().zip(&names) {
        entries.push(alternate::Entry::Worker(WorkerSpec {
            name,
            binary,
            flags: &[],
            replicas: 1,
            body: setup::body,
        }));
    }
    let fields = test_rig::samples::field_flag(test_rig::samples::FIVE_FIELDS);
    let sns_mapped = ["--envelope", "sns", "--field", fields.as_str()];
    if bench.args.producers {
        entries.push(alternate::Entry::Worker(WorkerSpec {
            name: "worker (--envelope sns, 5 fields)",
            binary: &this,
            flags: &sns_mapped,
            replicas: 1,
            body: test_rig::samples::sns_profile,
        }));
    }
    if !bench.args.skip_per_receive {
        entries.push(alternate::Entry::PerReceive);
    }
    let series = alternate::run(bench, &entries, bench.args.repeat, bench.args.messages).await;
    alternate::print(&series);
}

/// The last two parts of a path: enough to tell builds apart in a table.
fn short(path: &str) -> String {
    let parts: Vec<&str> = path.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// Each build's resident memory idle on an empty queue: what the binary, the runtime and the SDK
/// take before any message (the peak under load is in the `alternate` table).
async fn memory_mode(bench: &Bench) {
    let this = worker::default_binary();
    let binaries = std::iter::once(&this).chain(&bench.args.baseline_bins);
    for binary in binaries {
        let queues = setup::Queues::create(&bench.sqs, "memory").await;
        let log = bench.out.join("memory.log").display().to_string();
        let idle = worker::idle_resident(binary, &queues, &bench.emulator.api_url(), &log).await;
        println!("memory: {}: idle on an empty queue: {idle}", short(binary));
        queues.delete().await;
    }
}

/// 1, 2 and 3 worker processes on one queue, alternated with ceiling runs.
async fn replicas_mode(bench: &Bench) {
    let this = worker::default_binary();
    let names = ["replicas: 1", "replicas: 2", "replicas: 3"];
    let entries: Vec<alternate::Entry> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            alternate::Entry::Worker(WorkerSpec {
                name,
                binary: &this,
                flags: &[],
                replicas: i + 1,
                body: setup::body,
            })
        })
        .collect();
    let series = alternate::run(bench, &entries, bench.args.repeat, bench.args.messages).await;
    alternate::print(&series);
}

/// Open-loop arrivals at `--rate` (default: half the ceiling) for `--seconds`, `--repeat` times,
/// each run after a ceiling run.
async fn steady_mode(bench: &Bench) {
    let n = bench.args.messages;
    let first = bench
        .raw("ceiling (receive+delete)", Mode::Ceiling, n, None)
        .await;
    let rate = bench
        .args
        .rate
        .map_or(first.msgs_per_s() / 2.0, |r| r as f64);
    let mut ceilings = vec![first.msgs_per_s()];
    let mut runs = Vec::new();
    for _ in 0..bench.args.repeat {
        let binary = worker::default_binary();
        runs.push(steady::run(bench, &binary, rate, bench.args.seconds as f64).await);
        let ceiling = bench
            .raw("ceiling (receive+delete)", Mode::Ceiling, n, None)
            .await;
        ceilings.push(ceiling.msgs_per_s());
    }
    let (median, min, max) = alternate::spread(ceilings);
    println!("ceiling around the steady runs: {median:.0} msgs/s ({min:.0}-{max:.0})");
    // The worker's default --batch-max-wait.
    steady::print(&runs, 5_000.0);
}

async fn sweep(bench: &Bench) {
    let n = bench.args.sweep_messages;
    let mut points = Vec::new();
    println!("\nbatch-size sweep ({n} messages each)");
    println!(
        "{:>10} {:>10} {:>9} {:>10}",
        "records", "msgs/s", "p99 ms", "calls/10k"
    );
    for size in [10, 30, 100, 300, 1_000, 3_000, 10_000] {
        let size_text = size.to_string();
        let row = bench
            .worker(
                &format!("sweep {size}"),
                &["--batch-max-records", &size_text, "--batch-max-wait", "1s"],
                n,
                None,
            )
            .await;
        println!(
            "{size:>10} {:>10.0} {:>9.0} {:>10.1}",
            row.msgs_per_s(),
            row.p99_ms,
            row.calls_per_10k()
        );
        points.push(chart::Point {
            batch_records: size,
            msgs_per_s: row.msgs_per_s(),
            p99_ms: row.p99_ms,
        });
    }
    let path = bench.out.join("batch-size-sweep.svg");
    match chart::draw(&points, &path) {
        Ok(()) => println!("sweep chart: {}", path.display()),
        Err(problem) => eprintln!("pipeline: the sweep chart failed: {problem}"),
    }
}
