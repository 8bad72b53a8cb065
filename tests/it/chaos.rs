//! The chaos suite's short run, in CI: a few seeded rounds that between them cover both ack modes,
//! standard and FIFO queues, upsert and append, kill -9 and SIGTERM, with storms on the API side
//! and the SQS side. Each round prints its seed; `cargo bench --bench chaos -- --seed S --rounds 1`
//! replays one. The long run is `cargo bench --bench chaos -- --minutes 30`.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::chaos::{Plan, print, round};

/// The first seeds from `base` whose plans cover every (queue kind, ack mode) pair and both
/// operations.
fn covering_plans(base: u64, messages: usize) -> Vec<Plan> {
    let mut wanted: HashSet<(bool, bool)> =
        [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .collect();
    let mut operations = HashSet::new();
    let mut plans = Vec::new();
    for seed in base.. {
        let plan = Plan::random(seed, messages, true, 1.0);
        let kind = (plan.fifo, plan.completed);
        if wanted.remove(&kind)
            || (wanted.is_empty() && operations.len() < 2 && !operations.contains(&plan.append))
        {
            operations.insert(plan.append);
            plans.push(plan);
        }
        if wanted.is_empty() && operations.len() == 2 {
            // Every other round black-holes SQS for a while, whatever its seed said.
            for plan in plans.iter_mut().skip(1).step_by(2) {
                plan.blackholes = true;
            }
            return plans;
        }
    }
    unreachable!("the seeds run out before the plans cover every case")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_run_loses_nothing() {
    let base: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    let mut failures = Vec::new();
    for plan in covering_plans(base, 300) {
        println!("chaos: starting {}", plan.describe());
        let report = round(&plan, Duration::from_secs(150)).await;
        let text = print(&report);
        println!("{text}");
        if !report.violations.is_empty() {
            failures.push(text);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
