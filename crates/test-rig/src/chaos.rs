//! The chaos driver. A round picks a configuration and a storm of faults from its seed, runs the
//! real worker binary against LocalStack (through the SQS fault proxy) and the emulator (with its
//! own faults), kills and restarts it, lets the storm calm down, and checks the lose-nothing
//! invariants from the outside:
//!
//! - every valid message is committed (or dead-lettered with a reason its faults explain);
//! - every invalid one is in the DLQ with its reason and its exact body;
//! - nothing is in the redrive DLQ;
//! - each FIFO group is committed in order, and its key ends at its last message;
//! - without a kill, no record is committed by two jobs under different keys;
//! - after a kill, double commits are counted and reported;
//! - no panic, no exit code 101, and the token never in the worker's output.
//!
//! `tests/it/chaos.rs` runs a few rounds in CI; `cargo bench --bench chaos -- --minutes N --seed S`
//! runs many, and `--kill-cycles` the long kill -9 run. Every round prints its seed, and
//! `--seed S --rounds 1` replays it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::process::Child;

use super::rig::{Rig, RigOptions, TOKEN};
use super::sqs_proxy::{SqsFaults, SqsProxy};
use super::views::Job;
use records_emulator::config::EmulatorConfig;

/// The worker's --job-timeout in a round; a slow job (`job_slow`) takes 2 s more.
const CHAOS_JOB_TIMEOUT_MS: u64 = 8000;

/// How long after a spawn the driver waits before a SIGTERM: enough to exec and reach `main`.
const SIGNAL_READY: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub fifo: bool,
    pub append: bool,
    pub completed: bool,
    pub batch_max_records: usize,
    pub visibility_s: u32,
    pub messages: usize,
    pub groups: usize,
    /// A standard round whose messages carry a `MessageGroupId` (a fair queue's tenant), which
    /// must not order them. Every second seed, so that no other draw of a seed's plan changes.
    pub tenants: bool,
    pub kills: usize,
    pub sigterms: usize,
    pub storm: Duration,
    pub api_faults: Value,
    pub sqs_faults: SqsFaults,
    pub blackholes: bool,
}

impl Plan {
    /// A random round. `intensity` (0..=1) scales the fault probabilities.
    pub fn random(seed: u64, messages: usize, kills: bool, intensity: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = |rng: &mut StdRng, max: f64| rng.random_range(0.0..=max * intensity);
        let fifo = rng.random_bool(0.35);
        let mut api_faults = json!({
            "statuses": {"429": p(&mut rng, 0.10), "500": p(&mut rng, 0.05), "503": p(&mut rng, 0.10)},
            "retry_after_s": 1,
            "commit_then_500": p(&mut rng, 0.10),
            "job_fail": p(&mut rng, 0.05),
            "job_unknown": p(&mut rng, 0.10),
            "reset": p(&mut rng, 0.03),
            "latency_ms": rng.random_range(0..40),
            "processing_ms": rng.random_range(50..1500),
            "apply_to": ["single", "batch", "jobs"],
        });
        // Issue 19's knobs: the order jobs finish in, a job that fails once, one slower than
        // the worker's --job-timeout, one the job store loses, odd reports, refusal storms that
        // apply to every batch, and batches too big for --request-timeout.
        let job_order = ["concurrent", "created", "random"][rng.random_range(0..3)];
        let more = json!({
            "job_order": job_order,
            "job_fail_once": p(&mut rng, 0.10),
            "job_slow": p(&mut rng, 0.05),
            "job_slow_ms": CHAOS_JOB_TIMEOUT_MS + 2000,
            "job_lost": p(&mut rng, 0.03),
            "odd_reports": rng.random_bool(0.3),
            "latency_per_record_us": if rng.random_bool(0.25) { 3000 } else { 0 },
        });
        for (status, max) in [("401", 0.03), ("403", 0.02), ("404", 0.02)] {
            api_faults["statuses"][status] = json!(p(&mut rng, max));
        }
        if let (Value::Object(faults), Value::Object(more)) = (&mut api_faults, more) {
            faults.extend(more);
        }
        let sqs_faults = SqsFaults {
            latency: Duration::from_millis(rng.random_range(0..25)),
            reset: p(&mut rng, 0.03),
            fail_entries: p(&mut rng, 0.10),
            duplicate: p(&mut rng, 0.10),
            ..SqsFaults::default()
        };
        Self {
            seed,
            fifo,
            append: rng.random_bool(0.5),
            completed: rng.random_bool(0.5),
            batch_max_records: [10, 50, 1000][rng.random_range(0..3)],
            visibility_s: [5, 30][rng.random_range(0..2)],
            messages,
            groups: if fifo {
                rng.random_range(2..10)
            } else if seed.is_multiple_of(2) {
                4
            } else {
                1
            },
            tenants: !fifo && seed.is_multiple_of(2),
            kills: if kills { rng.random_range(0..3) } else { 0 },
            sigterms: rng.random_range(0..2),
            storm: Duration::from_secs(rng.random_range(8..20)),
            api_faults,
            sqs_faults,
            blackholes: rng.random_bool(0.4 * intensity.min(1.0)),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "seed={} {} {} ack={} batch={} visibility={}s messages={} groups={} kills={} sigterms={} blackholes={}",
            self.seed,
            match (self.fifo, self.tenants) {
                (true, _) => "fifo",
                (false, true) => "standard+tenants",
                (false, false) => "standard",
            },
            if self.append { "append" } else { "upsert" },
            if self.completed {
                "completed"
            } else {
                "accepted"
            },
            self.batch_max_records,
            self.visibility_s,
            self.messages,
            self.groups,
            self.kills,
            self.sigterms,
            self.blackholes
        )
    }
}

/// What a round found.
#[derive(Debug, Default)]
pub struct RoundReport {
    pub plan: String,
    pub committed: usize,
    pub dead_lettered: usize,
    pub job_failed_valid: usize,
    pub double_commits: usize,
    pub unreported_invalid_after_kill: usize,
    /// FIFO groups whose order broke after a kill in accepted mode: a job accepted before the
    /// kill can finish after a later batch's job (docs/operations.md).
    pub reordered_after_kill: usize,
    /// Valid messages lost in accepted mode because their job failed after their delete and the
    /// worker was killed before the resubmission was accepted (docs/operations.md).
    pub lost_after_failed_job_and_kill: usize,
    /// FIFO groups whose final row is not their messages applied in order (explained only by a
    /// kill in accepted mode).
    pub stale_rows: usize,
    /// Completed jobs that carried an older value of a group than a job completed before them.
    pub stale_commits: usize,
    pub kills: usize,
    pub sigterms: usize,
    pub elapsed: Duration,
    pub violations: Vec<String>,
}

/// One message the round sends, and what must become of it.
struct Sent {
    body: String,
    /// The record's identity: the email (upsert) or session:value (append).
    identity: String,
    group: usize,
    seq: usize,
    /// None for a valid message; the DLQ reason for an invalid one.
    reason: Option<&'static str>,
}

/// The fields of a FIFO group's upserts that stop being sent at different points (a sixth of the
/// group each): a stale commit that a later one follows still shows in the final row.
const STAGGERED: [&str; 5] = ["tier", "country", "first_name", "last_seen_at", "last_name"];

/// Upsert `seq` of a FIFO group of `per_group` messages: `score` and `plan` change every time,
/// the `STAGGERED` fields stop at `per_group x (k+1) / 6`.
fn staggered_upsert(group: usize, seq: usize, per_group: usize) -> String {
    let mut record = json!({
        "email": format!("g{group}@example.com"),
        "score": seq,
        "plan": format!("p{seq}"),
    });
    for (k, field) in STAGGERED.iter().enumerate() {
        if seq * 6 < per_group.max(6) * (k + 1) {
            record[*field] = if *field == "last_seen_at" {
                json!(format!(
                    "2026-11-01T{:02}:{:02}:{:02}Z",
                    seq / 3600 % 24,
                    seq / 60 % 60,
                    seq % 60
                ))
            } else {
                json!(format!("{field}-{seq}"))
            };
        }
    }
    record.to_string()
}

fn messages(plan: &Plan, rng: &mut StdRng) -> Vec<Sent> {
    let mut sent = Vec::with_capacity(plan.messages);
    let mut seqs = vec![0usize; plan.groups];
    for i in 0..plan.messages {
        let group = i % plan.groups;
        let seq = seqs[group];
        seqs[group] += 1;
        let roll: f64 = rng.random();
        let invalid: Option<(&'static str, String)> = if roll < 0.01 {
            Some(("unparseable", format!("not json {i}")))
        } else if roll < 0.02 {
            Some(("not_an_object", format!("[{i}]")))
        } else if roll < 0.03 && !plan.append {
            Some((
                "invalid_row",
                format!(r#"{{"email":"bad{i}-at-example.com","first_name":"x"}}"#),
            ))
        } else if roll < 0.03 {
            Some((
                "invalid_row",
                format!(r#"{{"session_id":"bad{i}","event":"e","occurred_at":"yesterday"}}"#),
            ))
        } else if roll < 0.04 {
            Some((
                "unknown_field",
                format!(r#"{{"email":"u{i}@x.io","nope":1}}"#),
            ))
        } else {
            None
        };
        let (reason, body, identity) = match invalid {
            Some((reason, body)) => (Some(reason), body, format!("invalid-{i}")),
            None if plan.append => (
                None,
                format!(
                    r#"{{"session_id":"g{group}","event":"e","occurred_at":"2026-11-23T10:00:00Z","value":{seq}}}"#
                ),
                format!("g{group}:{seq}"),
            ),
            None if plan.fifo => (
                None,
                staggered_upsert(group, seq, plan.messages / plan.groups),
                format!("g{group}@example.com"),
            ),
            None => (
                None,
                format!(r#"{{"email":"u{i}@example.com","score":{seq}}}"#),
                format!("u{i}@example.com"),
            ),
        };
        sent.push(Sent {
            body,
            identity,
            group,
            seq,
            reason,
        });
    }
    sent
}

fn spawn(rig: &Rig, plan: &Plan, proxy: &SqsProxy, log: &str) -> Child {
    let records = plan.batch_max_records.to_string();
    let mut extra: Vec<(&str, &str)> = vec![
        (
            "--ack-on",
            if plan.completed {
                "completed"
            } else {
                "accepted"
            },
        ),
        ("--batch-max-records", &records),
        ("--batch-max-wait", "300ms"),
        ("--release-backoff", "1s"),
        ("--drain-timeout", "10s"),
        ("--log-format", "json"),
        ("--job-timeout", "8s"),
        ("--request-timeout", "2s"),
        ("--auth-retry", "2s"),
    ];
    if plan.append {
        extra.push(("--object", "events"));
        extra.push(("--operation", "append"));
    }
    if std::env::var_os("SBW_TEST_SQS_URL").is_some() {
        // moto's server keeps a FIFO group locked for a whole long poll that began while the
        // group was in flight (docs/benchmarks.md, "Two SQS implementations").
        extra.push(("--receive-wait", "1s"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the worker log");
    super::worker_binary()
        .env("AWS_ENDPOINT_URL", &proxy.url)
        .env("RUST_LOG", "info")
        .arg("run")
        .args(rig.args(&extra))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .expect("the worker binary starts")
}

async fn exit_code(child: &mut Child, within: Duration) -> Option<i32> {
    match tokio::time::timeout(within, child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            Some(-1)
        }
    }
}

/// The checks read every job's records (failed jobs' and double commits), which the emulator
/// drops at a job's end unless told to keep them.
fn keeping_job_records() -> EmulatorConfig {
    EmulatorConfig {
        keep_job_records: true,
        ..EmulatorConfig::for_tests(TOKEN)
    }
}

/// Runs one round and checks it. Faults rage for the plan's storm, then stop, and the worker gets
/// `settle` to finish.
pub async fn round(plan: &Plan, settle: Duration) -> RoundReport {
    let started = Instant::now();
    let mut report = RoundReport {
        plan: plan.describe(),
        ..RoundReport::default()
    };
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5eed);
    let rig = Rig::with(RigOptions {
        fifo: plan.fifo,
        visibility_s: plan.visibility_s,
        emulator: keeping_job_records(),
        ..RigOptions::default()
    })
    .await;
    let redrive = rig.attach_redrive(10).await;
    let proxy = SqsProxy::start(plan.seed).await;
    let sent = messages(plan, &mut rng);
    let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
    let url = rig.queue_url.clone();
    rig.send_grouped(&url, &bodies, plan.tenants, |i| {
        format!("g{}", sent[i].group)
    })
    .await;

    rig.faults(plan.api_faults.clone()).await;
    proxy.set(plan.sqs_faults.clone());
    let log = super::log_path(&format!("chaos-{}", plan.seed));
    let storm_end = Instant::now() + plan.storm;
    let mut child = storm(&rig, plan, &proxy, &log, &mut rng, &mut report).await;
    tokio::time::sleep_until(storm_end.into()).await;
    // The storm is over: faults stop, and the worker must converge.
    rig.faults(json!({"statuses": {}, "commit_then_500": 0.0, "job_fail": 0.0, "job_unknown": 0.0, "reset": 0.0, "latency_ms": 0, "job_fail_once": 0.0, "job_slow": 0.0, "job_lost": 0.0, "odd_reports": false, "latency_per_record_us": 0}))
        .await;
    proxy.set(SqsFaults::default());

    let mut dlq_bodies: HashMap<String, Vec<String>> = HashMap::new();
    let interrupted = report.kills + report.sigterms > 0;
    let converged = converge(&rig, plan, &sent, settle, interrupted, &mut dlq_bodies).await;
    if !converged {
        report.violations.push(format!(
            "did not converge within {settle:?} after the storm: source {:?}",
            rig.depth(&rig.queue_url).await
        ));
    }
    super::signal(&child, libc::SIGTERM);
    let code = exit_code(&mut child, Duration::from_secs(60)).await;
    if code != Some(0) {
        report.violations.push(format!(
            "the final SIGTERM ended the worker with {code:?}, not 0"
        ));
    }
    collect_dlq(&rig, &mut dlq_bodies).await;
    check(plan, &rig, &sent, &dlq_bodies, &redrive, &log, &mut report).await;
    report.elapsed = started.elapsed();
    let _ = rig.emulator.stop().await;
    report
}

/// The storm's kills, SIGTERMs and SQS black holes at random times; the worker process running
/// at its end.
async fn storm(
    rig: &Rig,
    plan: &Plan,
    proxy: &SqsProxy,
    log: &str,
    rng: &mut StdRng,
    report: &mut RoundReport,
) -> tokio::process::Child {
    let mut child = spawn(rig, plan, proxy, log);
    let mut events: Vec<(Duration, &'static str)> = Vec::new();
    for _ in 0..plan.kills {
        events.push((rng.random_range(plan.storm / 10..plan.storm), "kill"));
    }
    for _ in 0..plan.sigterms {
        events.push((rng.random_range(plan.storm / 10..plan.storm), "term"));
    }
    if plan.blackholes {
        let at = rng.random_range(plan.storm / 10..plan.storm);
        events.push((at, "blackhole"));
    }
    events.sort();
    let storm_started = Instant::now();
    let mut spawned_at = Instant::now();
    for (at, what) in events {
        tokio::time::sleep_until((storm_started + at).into()).await;
        match what {
            "kill" => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                report.kills += 1;
                child = spawn(rig, plan, proxy, log);
                spawned_at = Instant::now();
            }
            "term" => {
                // A process that has not yet reached its `main` cannot have a handler; a
                // supervisor's SIGTERM within microseconds of exec kills any program. Give it
                // the time to start, as a real stop would.
                tokio::time::sleep_until((spawned_at + SIGNAL_READY).into()).await;
                super::signal(&child, libc::SIGTERM);
                let code = exit_code(&mut child, Duration::from_secs(60)).await;
                if code != Some(0) {
                    report
                        .violations
                        .push(format!("SIGTERM ended the worker with {code:?}, not 0"));
                }
                report.sigterms += 1;
                child = spawn(rig, plan, proxy, log);
                spawned_at = Instant::now();
            }
            _ => {
                proxy.update(|f| f.blackhole = true);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
                proxy.update(|f| f.blackhole = false);
            }
        }
    }
    child
}

/// Waits up to `settle` for every valid message to be committed (or its body dead-lettered),
/// every invalid one dead-lettered, and the source queue empty.
async fn converge(
    rig: &Rig,
    plan: &Plan,
    sent: &[Sent],
    settle: Duration,
    interrupted: bool,
    dlq_bodies: &mut HashMap<String, Vec<String>>,
) -> bool {
    let expected_committed: HashSet<&str> = sent
        .iter()
        .filter(|s| s.reason.is_none())
        .map(|s| s.identity.as_str())
        .collect();
    let deadline = Instant::now() + settle;
    // In accepted mode a kill can lose a message whose job failed after its delete (documented,
    // and classified by `check_valid`): nothing will ever settle it, so it is not waited for.
    let documented_loss = !plan.completed && interrupted;
    while Instant::now() < deadline {
        collect_dlq(rig, dlq_bodies).await;
        let committed = committed_identities(rig, plan).await;
        let lost = if documented_loss {
            identities_only_in_failed_jobs(rig, plan).await
        } else {
            HashSet::new()
        };
        let all_valid = expected_committed.iter().all(|identity| {
            committed.contains_key(*identity)
                || body_dead_lettered(sent, identity, dlq_bodies)
                || lost.contains(*identity)
        });
        let all_invalid = sent
            .iter()
            .filter(|s| s.reason.is_some())
            .all(|s| dlq_bodies.contains_key(&s.body) || (!plan.completed && interrupted));
        if all_valid && all_invalid && rig.source_empty().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Drains the DLQ into body -> reasons.
async fn collect_dlq(rig: &Rig, dlq_bodies: &mut HashMap<String, Vec<String>>) {
    for entry in rig.dlq().await {
        dlq_bodies
            .entry(entry.body.clone())
            .or_default()
            .push(entry.reason().to_owned());
    }
}

fn body_dead_lettered(sent: &[Sent], identity: &str, dlq: &HashMap<String, Vec<String>>) -> bool {
    sent.iter()
        .filter(|s| s.identity == identity)
        .any(|s| dlq.contains_key(&s.body))
}

/// Identity -> the values committed for it, in commit order.
async fn committed_identities(rig: &Rig, plan: &Plan) -> HashMap<String, Vec<u64>> {
    let mut committed: HashMap<String, Vec<u64>> = HashMap::new();
    if plan.append {
        for row in rig.rows("events").await {
            let session = row["session_id"].as_str().unwrap_or_default();
            let value = row["value"].as_u64().unwrap_or(u64::MAX);
            committed
                .entry(format!("{session}:{value}"))
                .or_default()
                .push(value);
        }
    } else {
        for row in rig.rows("profiles").await {
            let email = row["email"].as_str().unwrap_or_default().to_owned();
            let score = row["score"].as_u64().unwrap_or(u64::MAX);
            committed.entry(email).or_default().push(score);
        }
    }
    committed
}

async fn check(
    plan: &Plan,
    rig: &Rig,
    sent: &[Sent],
    dlq: &HashMap<String, Vec<String>>,
    redrive: &str,
    log: &str,
    report: &mut RoundReport,
) {
    check_valid(plan, rig, sent, dlq, report).await;
    check_invalid(plan, sent, dlq, report);
    // Order: FIFO groups commit in sequence; an upsert key ends at its group's last message.
    if plan.fifo {
        check_order(plan, rig, sent, dlq, report).await;
    }
    // Double commits: a record in two completed jobs under different keys. An append written
    // twice without a kill is a violation; an upsert written twice (a lost job's resubmission, a
    // committed-then-refused batch formed again) writes the same values and is only counted.
    let doubles = double_commits(rig, plan).await;
    report.double_commits = doubles;
    if doubles > 0 && plan.append && report.kills + report.sigterms == 0 {
        report.violations.push(format!(
            "{doubles} appends were written by two jobs under different keys without a kill"
        ));
    }
    let redriven = rig.drain(redrive).await;
    if !redriven.is_empty() {
        report.violations.push(format!(
            "{} messages reached the redrive DLQ",
            redriven.len()
        ));
    }
    let output = std::fs::read_to_string(log).unwrap_or_default();
    if output.contains("panicked") {
        report
            .violations
            .push(format!("the worker panicked (log {log})"));
    }
    if output.contains(TOKEN) {
        report
            .violations
            .push(format!("the token is in the worker's output (log {log})"));
    }
}

/// DLQ reasons of a valid message whose job's fate the worker could not know (a failed or lost
/// job, one past its timeout, a key used before with other bytes): kept, never lost.
const AMBIGUOUS_REASONS: [&str; 4] = ["job_failed", "job_timeout", "job_unknown", "key_reused"];

/// Valid messages: committed, or dead-lettered for a reason the faults explain.
async fn check_valid(
    plan: &Plan,
    rig: &Rig,
    sent: &[Sent],
    dlq: &HashMap<String, Vec<String>>,
    report: &mut RoundReport,
) {
    let committed = committed_identities(rig, plan).await;
    let only_in_failed_jobs = identities_only_in_failed_jobs(rig, plan).await;
    let mut seen = HashSet::new();
    for s in sent.iter().filter(|s| s.reason.is_none()) {
        if !seen.insert(s.identity.clone()) {
            continue;
        }
        if committed.contains_key(&s.identity) {
            report.committed += 1;
        } else if let Some(reasons) = dlq.get(&s.body) {
            if reasons
                .iter()
                .all(|r| AMBIGUOUS_REASONS.contains(&r.as_str()))
            {
                report.job_failed_valid += 1;
            } else {
                report
                    .violations
                    .push(format!("valid {} dead-lettered as {reasons:?}", s.identity));
            }
        } else if accepted_and_killed(plan, report) && only_in_failed_jobs.contains(&s.identity) {
            report.lost_after_failed_job_and_kill += 1;
        } else {
            report
                .violations
                .push(format!("valid {} was lost", s.identity));
        }
    }
}

/// Invalid messages: in the DLQ with their reason and exact body.
fn check_invalid(
    plan: &Plan,
    sent: &[Sent],
    dlq: &HashMap<String, Vec<String>>,
    report: &mut RoundReport,
) {
    // A kill, or a drain that ran out of time, may leave a job unfollowed.
    let killed = report.kills + report.sigterms > 0;
    for s in sent.iter().filter(|s| s.reason.is_some()) {
        let expected = s.reason.unwrap_or_default();
        match dlq.get(&s.body) {
            Some(reasons) if reasons.iter().any(|r| r == expected) => report.dead_lettered += 1,
            Some(reasons)
                if reasons
                    .iter()
                    .all(|r| AMBIGUOUS_REASONS.contains(&r.as_str())) =>
            {
                report.dead_lettered += 1
            }
            Some(reasons) => report.violations.push(format!(
                "invalid message {:?} dead-lettered as {reasons:?}, not {expected}",
                s.body
            )),
            None if killed && !plan.completed && expected == "invalid_row" => {
                report.unreported_invalid_after_kill += 1
            }
            None => report.violations.push(format!(
                "invalid message {:?} ({expected}) is not in the DLQ",
                s.body
            )),
        }
    }
}

async fn check_order(
    plan: &Plan,
    rig: &Rig,
    sent: &[Sent],
    dlq: &HashMap<String, Vec<String>>,
    report: &mut RoundReport,
) {
    let dead: HashSet<(usize, usize)> = sent
        .iter()
        .filter(|s| dlq.contains_key(&s.body))
        .map(|s| (s.group, s.seq))
        .collect();
    if plan.append {
        let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for row in rig.rows("events").await {
            let session = row["session_id"].as_str().unwrap_or_default().to_owned();
            if session.starts_with('g') {
                by_group
                    .entry(session)
                    .or_default()
                    .push(row["value"].as_u64().unwrap_or(0));
            }
        }
        for (group, values) in by_group {
            let mut first_seen = Vec::new();
            let mut seen = HashSet::new();
            for value in values {
                if seen.insert(value) {
                    first_seen.push(value);
                }
            }
            if first_seen.windows(2).any(|w| w[0] > w[1]) {
                if accepted_and_killed(plan, report) {
                    report.reordered_after_kill += 1;
                } else {
                    report.violations.push(format!(
                        "group {group} was committed out of order: {first_seen:?}"
                    ));
                }
            }
        }
    } else {
        let rows = rig.rows("profiles").await;
        for group in 0..plan.groups {
            let Some(want) = newest_row(sent, group, &dead) else {
                continue;
            };
            let email = format!("g{group}@example.com");
            let got = rows.iter().find(|r| r["email"] == email.as_str());
            let stale: Vec<String> = want
                .iter()
                .filter(|(field, value)| got.map(|row| &row[field.as_str()]) != Some(*value))
                .map(|(field, value)| {
                    let had = got.map_or(Value::Null, |row| row[field.as_str()].clone());
                    format!("{field}={had} (want {value})")
                })
                .collect();
            if stale.is_empty() {
                continue;
            }
            report.stale_rows += 1;
            // A job abandoned by a kill can still finish after the restarted worker's newer job
            // (in either mode): the one way a row may end stale.
            if report.kills + report.sigterms > 0 {
                report.reordered_after_kill += 1;
            } else {
                report.violations.push(format!(
                    "group {group}'s row is not its messages applied in order: {}",
                    stale.join(", ")
                ));
            }
        }
        count_stale_commits(plan, rig, report).await;
    }
}

/// A FIFO group's row as its valid, not dead-lettered messages make it, applied in order.
fn newest_row(
    sent: &[Sent],
    group: usize,
    dead: &HashSet<(usize, usize)>,
) -> Option<serde_json::Map<String, Value>> {
    let mut row = serde_json::Map::new();
    let mut any = false;
    for s in sent
        .iter()
        .filter(|s| s.group == group && s.reason.is_none())
    {
        if dead.contains(&(s.group, s.seq)) {
            continue;
        }
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&s.body) {
            row.extend(fields);
            any = true;
        }
    }
    any.then_some(row)
}

/// Stale commits, which a later one may hide: a completed job that holds a lower `score` for a
/// group than a job of that group that completed before it. Each must be explained by a crash
/// (a kill or a drain that ran out of time); without one it is a violation.
async fn count_stale_commits(plan: &Plan, rig: &Rig, report: &mut RoundReport) {
    let mut jobs: Vec<(i64, Job)> = rig
        .jobs_with_records()
        .await
        .into_iter()
        .filter(|job| job.state == "completed")
        .map(|job| (job.completed_at_ms.unwrap_or(0), job))
        .collect();
    jobs.sort_by_key(|(at, _)| *at);
    let mut newest: HashMap<String, u64> = HashMap::new();
    let mut stale = Vec::new();
    for (_, job) in &jobs {
        for record in job.records.iter().flatten() {
            let (Some(email), Some(score)) = (record["email"].as_str(), record["score"].as_u64())
            else {
                continue;
            };
            let seen = newest.entry(email.to_owned()).or_insert(score);
            if score < *seen {
                stale.push(format!("{email}: {score} after {seen}"));
            }
            *seen = (*seen).max(score);
        }
    }
    report.stale_commits = stale.len();
    if !stale.is_empty() && report.kills + report.sigterms == 0 {
        report.violations.push(format!(
            "{} stale commits without a crash (plan {}): {}",
            stale.len(),
            plan.describe(),
            stale.join("; ")
        ));
    }
}

/// In accepted mode a kill (or a drain that ran out of time) abandons jobs that may still finish
/// after a later batch's job: the one case where FIFO order is not kept.
fn accepted_and_killed(plan: &Plan, report: &RoundReport) -> bool {
    !plan.completed && report.kills + report.sigterms > 0
}

/// The record identity of a job's record, as `committed_identities` names it.
fn identity_of(record: &Value, plan: &Plan) -> String {
    if plan.append {
        format!(
            "{}:{}",
            record["session_id"].as_str().unwrap_or(""),
            record["value"]
        )
    } else {
        record["email"].as_str().unwrap_or("").to_owned()
    }
}

/// Identities that some failed job held and no completed job did.
async fn identities_only_in_failed_jobs(rig: &Rig, plan: &Plan) -> HashSet<String> {
    let mut failed = HashSet::new();
    let mut completed = HashSet::new();
    for job in rig.jobs_with_records().await {
        let target = if job.state == "completed" {
            &mut completed
        } else if job.state == "failed" {
            &mut failed
        } else {
            continue;
        };
        for record in job.records.iter().flatten() {
            target.insert(identity_of(record, plan));
        }
    }
    failed.difference(&completed).cloned().collect()
}

/// Records committed by more than one completed job under different keys.
async fn double_commits(rig: &Rig, plan: &Plan) -> usize {
    let mut keys_of: HashMap<String, HashSet<String>> = HashMap::new();
    for job in rig.jobs_with_records().await {
        if job.state != "completed" {
            continue;
        }
        let key = job.idempotency_key.as_deref().unwrap_or("none").to_owned();
        for record in job.records.iter().flatten() {
            let identity = if plan.append {
                format!(
                    "{}:{}",
                    record["session_id"].as_str().unwrap_or(""),
                    record["value"]
                )
            } else {
                format!(
                    "{}:{}",
                    record["email"].as_str().unwrap_or(""),
                    record["score"]
                )
            };
            keys_of.entry(identity).or_default().insert(key.clone());
        }
    }
    keys_of.values().filter(|keys| keys.len() > 1).count()
}

/// Prints a round's report in one block.
pub fn print(report: &RoundReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "chaos round {}: {:.1}s committed={} dead_lettered={} valid_job_failed={} double_commits={} unreported_invalid_after_kill={} reordered_after_kill={} lost_after_failed_job_and_kill={} stale_rows={} stale_commits={} kills={} sigterms={} violations={}",
        report.plan,
        report.elapsed.as_secs_f64(),
        report.committed,
        report.dead_lettered,
        report.job_failed_valid,
        report.double_commits,
        report.unreported_invalid_after_kill,
        report.reordered_after_kill,
        report.lost_after_failed_job_and_kill,
        report.stale_rows,
        report.stale_commits,
        report.kills,
        report.sigterms,
        report.violations.len()
    );
    for violation in &report.violations {
        let _ = writeln!(text, "  VIOLATION: {violation}");
    }
    text
}

impl Plan {
    /// No faults, no kills: what a run changes from it.
    fn calm() -> Self {
        Plan {
            seed: 0,
            fifo: false,
            append: false,
            completed: false,
            batch_max_records: 1000,
            visibility_s: 5,
            messages: 0,
            groups: 1,
            tenants: false,
            kills: 0,
            sigterms: 0,
            storm: Duration::ZERO,
            api_faults: json!({}),
            sqs_faults: SqsFaults::default(),
            blackholes: false,
        }
    }
}

/// `messages` FIFO appends spread over `groups` groups, each group's values in sequence.
fn fifo_appends(messages: usize, groups: usize) -> Vec<Sent> {
    (0..messages)
        .map(|i| {
            let (group, seq) = (i % groups, i / groups);
            Sent {
                body: format!(
                    r#"{{"session_id":"g{group}","event":"e","occurred_at":"2026-11-23T10:00:00Z","value":{seq}}}"#
                ),
                identity: format!("g{group}:{seq}"),
                group,
                seq,
                reason: None,
            }
        })
        .collect()
}

/// Waits up to `within` for every message to be committed and the source queue to be empty.
async fn all_committed(rig: &Rig, plan: &Plan, sent: &[Sent], within: Duration) {
    let deadline = Instant::now() + within;
    let expected: HashSet<&str> = sent.iter().map(|s| s.identity.as_str()).collect();
    while Instant::now() < deadline {
        let committed = committed_identities(rig, plan).await;
        if expected.iter().all(|id| committed.contains_key(*id)) && rig.source_empty().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The kill -9 run: `messages` FIFO appends over `groups` groups, the worker killed and restarted
/// `cycles` times while it works, then left to finish. Nothing may be lost or committed out of
/// order; double commits are counted.
pub async fn kill_cycles(
    seed: u64,
    messages: usize,
    groups: usize,
    cycles: usize,
    completed: bool,
) -> RoundReport {
    let started = Instant::now();
    let plan = Plan {
        seed,
        fifo: true,
        append: true,
        completed,
        messages,
        groups,
        kills: cycles,
        ..Plan::calm()
    };
    let mut report = RoundReport {
        plan: format!("kill-cycles {}", plan.describe()),
        ..RoundReport::default()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let rig = Rig::with(RigOptions {
        fifo: true,
        visibility_s: plan.visibility_s,
        emulator: keeping_job_records(),
        ..RigOptions::default()
    })
    .await;
    let redrive = rig.attach_redrive(10).await;
    let proxy = SqsProxy::start(seed).await;
    let sent = fifo_appends(messages, groups);
    let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
    let url = rig.queue_url.clone();
    rig.send_to(&url, &bodies, |i| format!("g{}", sent[i].group))
        .await;
    println!(
        "kill-cycles: {messages} messages sent in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let log = super::log_path(&format!("kill-cycles-{seed}"));
    let mut child = spawn(&rig, &plan, &proxy, &log);
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        report.kills += 1;
        child = spawn(&rig, &plan, &proxy, &log);
        if cycle % 10 == 9 {
            let (rows, source) = (
                rig.rows("events").await.len(),
                rig.depth(&rig.queue_url).await,
            );
            println!(
                "kill-cycles: {} kills, {rows} rows, source {source:?}",
                cycle + 1
            );
        }
    }
    all_committed(&rig, &plan, &sent, Duration::from_secs(600)).await;
    super::signal(&child, libc::SIGTERM);
    let code = exit_code(&mut child, Duration::from_secs(60)).await;
    if code != Some(0) {
        report
            .violations
            .push(format!("the final SIGTERM ended the worker with {code:?}"));
    }
    let dlq = HashMap::new();
    check(&plan, &rig, &sent, &dlq, &redrive, &log, &mut report).await;
    let rows = rig.rows("events").await.len();
    report.double_commits = rows.saturating_sub(messages);
    report.elapsed = started.elapsed();
    let _ = rig.emulator.stop().await;
    report
}
