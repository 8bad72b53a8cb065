//! The quota benchmark (issue 11): the worker binary against an emulator that enforces a quota,
//! with an open-loop producer. Every scenario can run a second binary (`--baseline PATH`, e.g. a
//! build of an older revision) in the same session, so before and after share one LocalStack.
//!
//! `cargo bench --bench quota -- [--only steady|day|aimd|shared|fifo|fifo-accepted|replicas|concurrency] [--baseline PATH]`
//! - aimd: the adaptive limit's answer to mixed batch sizes against a latency-per-record API,
//!   before and after the per-record rule (a simulation of the pure `Aimd`, no services);
//! - shared: 100 msgs/s for 90 s under one quota of 6/min:2, 1 and 3 replicas, through each
//!   shared store (`--budget-table` on moto's DynamoDB, `--budget-queue` on LocalStack);
//! - fifo: a FIFO queue of 50 groups, 2 of them hot, 20 msgs/s for 120 s under 30/min, jobs of
//!   5 s: calls, tokens spent and records committed a minute (before and after with --baseline);
//! - steady: 100 msgs/s for 90 s, quota 6/min, `--batch-max-records 10000 --batch-max-wait 2s`;
//! - day: 20 msgs/s under 2,000/day, the whole scenario run 10 times faster (200 msgs/s for
//!   60 s, emulator `--time-scale 10`);
//! - replicas: 3 replicas, 150 msgs/s for 60 s, one quota of 30/min:3, shared through the budget
//!   queue, and the same with a bucket each;
//! - concurrency: 10,000 queued messages against an API that takes one request at a time (503
//!   while busy, 1 ms a record: a second per call of 1,000), adaptive against
//!   `--concurrency fixed` with 4 in flight.

#[path = "pipeline/open_loop.rs"]
mod open_loop;
#[path = "pipeline/setup.rs"]
#[allow(dead_code)] // the emulator helper serves the pipeline bench; this one configures its own
mod setup;

use std::time::{Duration, Instant};

use open_loop::{latencies, produce, quantile, unix_ms};
use records_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;
use setup::{Queues, TOKEN};
use tokio::process::Child;

struct Args {
    only: Option<String>,
    baseline: Option<String>,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| argv.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    Args {
        only: value("--only"),
        baseline: value("--baseline"),
    }
}

/// The emulator with the contract's job timeline (`--queued 50ms --processing 200ms`), unless
/// `extra` sets either.
async fn start_emulator(extra: &[&str]) -> RunningEmulator {
    let mut flags = vec!["--keep-job-records"];
    for (flag, value) in [("--queued", "50ms"), ("--processing", "200ms")] {
        if !extra.contains(&flag) {
            flags.extend([flag, value]);
        }
    }
    flags.extend_from_slice(extra);
    records_emulator::start(EmulatorConfig::with_flags(TOKEN, &flags))
        .await
        .expect("the emulator starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Worker {
    child: Child,
    listen: String,
}

fn spawn(binary: &str, queues: &Queues, api_url: &str, extra: &[String], log: &str) -> Worker {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = setup::worker_command(binary, queues, api_url, &listen, extra, log)
        .spawn()
        .expect("start the worker binary");
    Worker { child, listen }
}

impl Worker {
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.listen))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let _ = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await;
    }
}

async fn get_json(url: String) -> Value {
    reqwest::get(url)
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("JSON")
}

struct Steady {
    label: String,
    rate: f64,
    seconds: f64,
    interval_s: f64,
    emulator: Vec<&'static str>,
    worker: Vec<String>,
    max_wait_s: f64,
    replicas: usize,
}

async fn steady(binary: &str, name: &str, scenario: &Steady) {
    let sqs = setup::sqs();
    let queues = Queues::create(&sqs, &format!("quota-{}", scenario.label)).await;
    let emulator = start_emulator(&scenario.emulator).await;
    let slug: String = scenario
        .label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let workers: Vec<Worker> = (0..scenario.replicas)
        .map(|i| {
            let log = format!("/tmp/sbw-bench-quota-{slug}-{name}-{i}.log");
            spawn(binary, &queues, &emulator.api_url(), &scenario.worker, &log)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent_at = produce(&sqs, &queues.source, scenario.rate, scenario.seconds).await;
    let base = emulator.base_url();
    let at_stop = get_json(format!("{base}/__emu/stats")).await;
    let arrived = sent_at.len() as f64;
    let committed_at_stop = at_stop["records_accepted"].as_f64().unwrap_or(0.0);
    // The ideal packer sends at every quota slot everything that arrived: at the arrivals' end it
    // has sent what arrived up to the last slot before it.
    let ideal = scenario.rate
        * scenario.interval_s
        * ((scenario.seconds - 1e-6) / scenario.interval_s).floor();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats = get_json(format!("{base}/__emu/stats")).await;
        if stats["records_accepted"].as_f64().unwrap_or(0.0) >= arrived || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained_s = (unix_ms() - sent_at.last().copied().unwrap_or(0.0)) / 1000.0;
    let stats = get_json(format!("{base}/__emu/stats")).await;
    let calls = stats["batches"].as_f64().unwrap_or(0.0);
    let records = stats["records_accepted"].as_f64().unwrap_or(0.0);
    let mut latency = latencies(&base, &sent_at).await.to_accepted_ms;
    let (p50, p99) = (quantile(&mut latency, 0.5), quantile(&mut latency, 0.99));
    let goal_p99 = (scenario.interval_s + scenario.max_wait_s) * 1000.0;
    println!(
        "| {} | {name} | {:.0} | {:.0} ({:.0}% of ideal {:.0}) | {:.0} | {:.0} | {:.0} | {:.0} ms | {:.0} ms (goal {:.0}) | {} | {:.0} s |",
        scenario.label,
        arrived,
        committed_at_stop,
        100.0 * committed_at_stop / ideal,
        ideal,
        arrived - committed_at_stop,
        calls,
        records / calls.max(1.0),
        p50,
        p99,
        goal_p99,
        stats["rate_limited"],
        drained_s,
    );
    for worker in workers {
        worker.stop().await;
    }
    let _ = emulator.stop().await;
    queues.delete().await;
}

/// Issue 22: the adaptive limit against an API that takes 20 ms plus 1 ms a record, fed a mix of
/// full and age-flushed batches, 4 in flight at most. "before" reads every answer per call alone
/// (each answer seen as one record, which is exactly the old rule); "after" per call and per
/// record. Prints the limit every 50 answers.
fn aimd_mixed() {
    use sqs_batch_worker::sink::api::Signal;
    use sqs_batch_worker::sink::concurrency::Aimd;
    let sizes = [1000usize, 5, 10, 1000, 20, 1000, 1000, 3, 500, 1000];
    println!(
        "\n| AIMD, 20 ms + 1 ms a record, mixed batches | limit after every 50 answers | halvings |\n|---|---|---|"
    );
    for (rule, per_record) in [
        ("before (per call)", false),
        ("after (per call and per record)", true),
    ] {
        let mut aimd = Aimd::new(4);
        let mut limits = Vec::new();
        let mut halvings = 0;
        for (answer, size) in sizes.iter().cycle().take(600).enumerate() {
            let before = aimd.limit();
            let took = Duration::from_millis(20 + *size as u64);
            let records = if per_record { *size } else { 1 };
            aimd.observe(
                Signal::Answered { took, records },
                aimd.limit().saturating_sub(1),
            );
            halvings += usize::from(aimd.limit() < before);
            if (answer + 1) % 50 == 0 {
                limits.push(aimd.limit().to_string());
            }
        }
        println!("| {rule} | {} | {halvings} |", limits.join(" "));
    }
}

/// A budget table on moto's DynamoDB server.
async fn budget_table() -> String {
    let client = dynamodb();
    let name = format!("bench-budget-{}", uuid::Uuid::new_v4().simple());
    let key = |kind| {
        aws_sdk_dynamodb::types::KeySchemaElement::builder()
            .attribute_name("limit")
            .key_type(kind)
            .build()
            .expect("key")
    };
    client
        .create_table()
        .table_name(&name)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .key_schema(key(aws_sdk_dynamodb::types::KeyType::Hash))
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("limit")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("create the budget table on moto (moto/start.sh)");
    name
}

/// Empties the budget table: the next run's replicas start from a full bucket.
async fn reset_table(table: &str) {
    let client = dynamodb();
    let scanned = client.scan().table_name(table).send().await.expect("scan");
    for item in scanned.items() {
        if let Some(limit) = item.get("limit") {
            let _ = client
                .delete_item()
                .table_name(table)
                .key("limit", limit.clone())
                .send()
                .await;
        }
    }
}

fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(setup::MOTO)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn token_queue(sqs: &aws_sdk_sqs::Client) -> String {
    sqs.create_queue()
        .queue_name(format!(
            "bench-tokens-{}.fifo",
            uuid::Uuid::new_v4().simple()
        ))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create the token queue")
        .queue_url
        .expect("url")
}

async fn replicas(binary: &str, shared: bool) {
    let sqs = setup::sqs();
    let queues = Queues::create(&sqs, "quota-replicas").await;
    let emulator = start_emulator(&["--rate-limit", "30/min:3"]).await;
    let tokens = token_queue(&sqs).await;
    let mut flags: Vec<String> = [
        "--rate-limit",
        "30/min:3",
        "--batch-max-records",
        "10000",
        "--batch-max-wait",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    if shared {
        flags.extend(["--budget-queue".to_owned(), tokens.clone()]);
    }
    let label = if shared { "shared" } else { "each-own" };
    let workers: Vec<Worker> = (0..3)
        .map(|i| {
            let log = format!("/tmp/sbw-bench-quota-replica-{label}-{i}.log");
            spawn(binary, &queues, &emulator.api_url(), &flags, &log)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let sent_at = produce(&sqs, &queues.source, 150.0, 60.0).await;
    let base = emulator.base_url();
    let deadline = Instant::now() + Duration::from_secs(300);
    while get_json(format!("{base}/__emu/stats")).await["records_accepted"]
        .as_f64()
        .unwrap_or(0.0)
        < sent_at.len() as f64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = get_json(format!("{base}/__emu/stats")).await;
    let calls = stats["batches"].as_f64().unwrap_or(0.0);
    let allowed = 3.0 + elapsed / 2.0;
    println!(
        "| 3 replicas, {label} | {} | {calls:.0} calls in {elapsed:.0} s (quota allows {allowed:.0}) | {} answered 429 | {:.0} records per call |",
        sent_at.len(),
        stats["rate_limited"],
        stats["records_accepted"].as_f64().unwrap_or(0.0) / calls.max(1.0),
    );
    for worker in workers {
        worker.stop().await;
    }
    let _ = sqs.delete_queue().queue_url(tokens).send().await;
    let _ = emulator.stop().await;
    queues.delete().await;
}

/// Issue 22: a FIFO queue of 50 groups, 2 of them hot (80% of the messages), 20 msgs/s for
/// 120 s, under 30/min, against an API whose jobs take 5 s: calls, tokens spent (less refunds)
/// and records committed a minute.
async fn fifo_hot(binary: &str, name: &str, extra: &[&str]) {
    use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
    let sqs = setup::sqs();
    let stamp = uuid::Uuid::new_v4().simple().to_string();
    let mut urls = Vec::new();
    for suffix in ["", "-dlq"] {
        let url = sqs
            .create_queue()
            .queue_name(format!("bench-fifo-hot-{}{suffix}.fifo", &stamp[..8]))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .expect("create a FIFO queue")
            .queue_url
            .expect("url");
        urls.push(url);
    }
    let queues = Queues {
        sqs: sqs.clone(),
        source: urls[0].clone(),
        dlq: urls[1].clone(),
    };
    let emulator = start_emulator(&["--rate-limit", "30/min", "--processing", "5s"]).await;
    let flags: Vec<String> = [
        "--rate-limit",
        "30/min",
        "--batch-max-records",
        "10000",
        "--batch-max-wait",
        "2s",
    ]
    .map(String::from)
    .into_iter()
    .chain(extra.iter().map(|flag| flag.to_string()))
    .collect();
    let log = format!("/tmp/sbw-bench-quota-fifo-{}.log", name.replace(' ', "-"));
    let worker = spawn(binary, &queues, &emulator.api_url(), &flags, &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rate, seconds) = (20.0, 120.0);
    let total = (rate * seconds) as usize;
    let started = Instant::now();
    for (call, first) in (0..total).step_by(10).enumerate() {
        let due = started + Duration::from_secs_f64(10.0 * call as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let mut request = sqs.send_message_batch().queue_url(&queues.source);
        for (id, i) in (first..(first + 10).min(total)).enumerate() {
            let group = match i % 5 {
                0 | 1 => "hot-0".to_owned(),
                2 | 3 => "hot-1".to_owned(),
                _ => format!("cold-{}", (i / 5) % 48),
            };
            request = request.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .message_body(setup::body(i))
                    .message_group_id(group)
                    .message_deduplication_id(format!("{stamp}-{i}"))
                    .build()
                    .expect("entry"),
            );
        }
        request.send().await.expect("SendMessageBatch");
    }
    let base = emulator.base_url();
    let accepted = |stats: &Value| stats["records_accepted"].as_f64().unwrap_or(0.0);
    let at_stop = accepted(&get_json(format!("{base}/__emu/stats")).await);
    while accepted(&get_json(format!("{base}/__emu/stats")).await) < total as f64
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let stats = get_json(format!("{base}/__emu/stats")).await;
    let spent = worker
        .metric("sbw_budget_calls_spent_total")
        .await
        .unwrap_or(0.0);
    let refunded = worker
        .metric("sbw_budget_calls_refunded_total")
        .await
        .unwrap_or(0.0);
    println!(
        "| {name} | {total} | {at_stop:.0} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {} |",
        stats["batches"],
        spent - refunded,
        accepted(&stats),
        minutes,
        accepted(&stats) / minutes,
        stats["rate_limited"],
    );
    worker.stop().await;
    let _ = emulator.stop().await;
    queues.delete().await;
}

async fn concurrency(binary: &str, mode: &str) {
    let sqs = setup::sqs();
    let queues = Queues::create(&sqs, &format!("quota-conc-{mode}")).await;
    let emulator = start_emulator(&["--concurrency", "1", "--latency-per-record", "1ms"]).await;
    let messages = 10_000usize;
    setup::fill(&sqs, &queues.source, messages, setup::body).await;
    let flags: Vec<String> = [
        "--concurrency",
        mode,
        "--max-in-flight",
        "4",
        "--batch-max-records",
        "1000",
        "--batch-max-wait",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let log = format!("/tmp/sbw-bench-quota-concurrency-{mode}.log");
    let worker = spawn(binary, &queues, &emulator.api_url(), &flags, &log);
    let started = Instant::now();
    let base = emulator.base_url();
    while get_json(format!("{base}/__emu/stats")).await["records_accepted"]
        .as_f64()
        .unwrap_or(0.0)
        < messages as f64
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let limit = worker.metric("sbw_concurrency_limit").await;
    let stats = get_json(format!("{base}/__emu/stats")).await;
    let overloaded = stats["overloaded"].as_f64().unwrap_or(0.0);
    println!(
        "| {mode} | {:.0} msgs/s | {:.2} | {} | {} calls |",
        messages as f64 / elapsed,
        overloaded / (messages as f64 / 1000.0),
        limit.map_or("-".to_owned(), |l| format!("{l:.0}")),
        stats["batches"],
    );
    worker.stop().await;
    let _ = emulator.stop().await;
    queues.delete().await;
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    setup::ensure_localstack().await;
    let current = env!("CARGO_BIN_EXE_sqs-batch-worker").to_owned();
    let mut binaries = vec![("new", current.clone())];
    if let Some(baseline) = &args.baseline {
        binaries.insert(0, ("baseline", baseline.clone()));
    }
    let runs = |what: &str| args.only.as_deref().is_none_or(|only| only == what);
    let common = |rate: &str| {
        vec![
            "--rate-limit".to_owned(),
            rate.to_owned(),
            "--batch-max-records".to_owned(),
            "10000".to_owned(),
            "--batch-max-wait".to_owned(),
            "2s".to_owned(),
        ]
    };
    println!(
        "| scenario | binary | arrived | committed when arrivals stop | backlog then | calls | records per call | p50 sent→202 | p99 sent→202 | 429s | drained after stop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    if runs("steady") {
        for (name, binary) in &binaries {
            // The baseline predates `N/min` limits beyond the hour; 6/min is 0.1 a second.
            let scenario = Steady {
                label: "100/s, 6/min".into(),
                rate: 100.0,
                seconds: 90.0,
                interval_s: 10.0,
                emulator: vec!["--rate-limit", "6/min"],
                worker: common("0.1"),
                max_wait_s: 2.0,
                replicas: 1,
            };
            steady(binary, name, &scenario).await;
        }
    }
    if runs("day") {
        for (name, binary) in &binaries {
            // 2,000/day at 10x: one call every 4.32 s; 20 msgs/s at 10x is 200/s.
            let scenario = Steady {
                label: "20/s, 2000/day (x10)".into(),
                rate: 200.0,
                seconds: 60.0,
                interval_s: 4.32,
                emulator: vec!["--rate-limit", "2000/day", "--time-scale", "10"],
                worker: common(&format!("{}", 2000.0 / 8640.0)),
                max_wait_s: 2.0,
                replicas: 1,
            };
            steady(binary, name, &scenario).await;
        }
    }
    if runs("shared") {
        // Issue 22: one quota of 6/min with a burst of 2, shared by 1 and by 3 replicas through
        // each store. 6/min:2 is what both the worker and the API's bucket hold.
        let table = budget_table().await;
        let sqs = setup::sqs();
        let tokens = token_queue(&sqs).await;
        for (store, flag, value) in [
            ("table", "--budget-table", table.as_str()),
            ("queue", "--budget-queue", tokens.as_str()),
        ] {
            for replicas in [1, 3] {
                let mut worker = common("6/min:2");
                worker.extend([flag.to_owned(), value.to_owned()]);
                let scenario = Steady {
                    label: format!("100/s, 6/min:2, {replicas} x {store}"),
                    rate: 100.0,
                    seconds: 90.0,
                    interval_s: 10.0,
                    emulator: vec!["--rate-limit", "6/min:2"],
                    worker,
                    max_wait_s: 2.0,
                    replicas,
                };
                steady(&current, "new", &scenario).await;
                // The next run starts from a full bucket, as the API's new emulator does.
                reset_table(&table).await;
            }
        }
        let _ = sqs.delete_queue().queue_url(tokens).send().await;
    }
    if runs("aimd") {
        aimd_mixed();
    }
    if runs("fifo") {
        println!(
            "\n| FIFO, 50 groups (2 hot), 5 s jobs, 30/min | arrived | committed when arrivals stop | calls | tokens spent | committed | minutes to drain | records a minute | 429s |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (name, binary) in &binaries {
            fifo_hot(binary, name, &[]).await;
        }
    }
    if runs("fifo") || args.only.as_deref() == Some("fifo-accepted") {
        // SQS hands out none of a group's messages while earlier ones are in flight: deleting
        // them at the 202 rather than at the job's end frees the hot groups sooner.
        fifo_hot(
            &current,
            "new, --ack-on accepted",
            &["--ack-on", "accepted"],
        )
        .await;
    }
    if runs("replicas") {
        println!(
            "\n| replicas | messages | calls | 429s | records per call |\n|---|---|---|---|---|"
        );
        replicas(&current, true).await;
        replicas(&current, false).await;
    }
    if runs("concurrency") {
        println!(
            "\n| concurrency (API takes 1 at a time) | throughput | 503s per 1,000 records | settled limit | calls |\n|---|---|---|---|---|"
        );
        concurrency(&current, "adaptive").await;
        concurrency(&current, "fixed").await;
    }
}
