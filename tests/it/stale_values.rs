//! Issue 19's headline: FIFO upserts under a fault storm must end on each group's newest values.
//! Every message changes `score` and `plan`; the other fields stop being sent at different points
//! (`tier` after 5, `country` after 10, `first_name` after 15, `last_seen_at` after 20,
//! `last_name` after 25), so a stale commit that a later one follows still shows in the final
//! row. The emulator completes jobs strictly in the order they were created, so a stale job
//! created late also commits late.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::rig::{Rig, RigOptions, wait_for};

pub const GROUPS: usize = 20;
pub const PER_GROUP: usize = 30;

/// The n-th (1-based) upsert of group `g`.
pub fn stale_upsert(g: usize, n: usize) -> String {
    let mut record = json!({
        "email": format!("g{g}@stale.io"),
        "score": n,
        "plan": format!("p{n}"),
    });
    let fields: [(&str, usize, String); 5] = [
        ("tier", 5, format!("t{n}")),
        ("country", 10, format!("c{n}")),
        ("first_name", 15, format!("f{n}")),
        ("last_seen_at", 20, format!("2026-11-01T00:00:{n:02}Z")),
        ("last_name", 25, format!("s{n}")),
    ];
    for (field, last, value) in fields {
        if n <= last {
            record[field] = json!(value);
        }
    }
    record.to_string()
}

/// The row a group of `per_group` upserts must end on: each field from the last message that
/// carried it.
pub fn newest_row(g: usize, per_group: usize) -> Value {
    let mut row = serde_json::Map::new();
    for n in 1..=per_group {
        let Value::Object(fields) = serde_json::from_str(&stale_upsert(g, n)).unwrap() else {
            unreachable!()
        };
        row.extend(fields);
    }
    Value::Object(row)
}

/// Each group's fields that differ from its newest values, as "email: field=got (want)".
pub fn stale_fields(rows: &[Value], groups: usize, per_group: usize) -> Vec<String> {
    let mut stale = Vec::new();
    for g in 0..groups {
        let want = newest_row(g, per_group);
        let email = want["email"].as_str().unwrap();
        let Some(got) = rows.iter().find(|r| r["email"] == email) else {
            stale.push(format!("{email}: no row"));
            continue;
        };
        for (field, value) in want.as_object().unwrap() {
            if &got[field] != value {
                stale.push(format!("{email}: {field}={} ({value})", got[field]));
            }
        }
    }
    stale
}

/// Waits until no job in the emulator is still queued or processing (a commit-then-500 job
/// commits after the worker gave up on its answer).
pub async fn jobs_settled(rig: &Rig) {
    wait_for("every job to end", Duration::from_secs(120), || async {
        rig.jobs()
            .await
            .iter()
            .all(|job| matches!(job.state.as_str(), "completed" | "failed"))
    })
    .await;
}

/// The storm, flags and all; returns the stale fields.
async fn storm_round(seed: u64) -> Vec<String> {
    let seed = seed.to_string();
    let rig = Rig::with(RigOptions {
        fifo: true,
        emulator: records_emulator::EmulatorConfig::with_flags(
            crate::common::rig::TOKEN,
            &["--seed", &seed],
        ),
        ..RigOptions::default()
    })
    .await;
    rig.faults(json!({
        "statuses": {"503": 0.22, "429": 0.10, "500": 0.12, "409": 0.03},
        "retry_after_s": 1,
        "commit_then_500": 0.10,
        "job_fail_once": 0.10,
        "job_order": "created",
        "processing_ms": 150,
    }))
    .await;
    let bodies: Vec<String> = (1..=PER_GROUP)
        .flat_map(|n| (0..GROUPS).map(move |g| stale_upsert(g, n)))
        .collect();
    let url = rig.queue_url.clone();
    rig.send_to(&url, &bodies, |index| format!("g{}", index % GROUPS))
        .await;
    let worker = rig
        .start(&[
            ("--batch-max-records", "3"),
            ("--max-in-flight", "64"),
            ("--batch-max-wait", "300ms"),
            ("--retry-attempts", "2"),
            ("--ack-on", "completed"),
            ("--release-backoff", "1s"),
        ])
        .await;
    rig.finish(worker, Duration::from_secs(600)).await;
    jobs_settled(&rig).await;
    let dlq = rig.dlq().await;
    assert!(
        dlq.is_empty(),
        "nothing is dead-lettered in this storm: {:?}",
        dlq.iter()
            .map(|e| e.reason().to_owned())
            .collect::<Vec<_>>()
    );
    stale_fields(&rig.rows("profiles").await, GROUPS, PER_GROUP)
}

#[test]
fn the_newest_row_takes_each_field_from_its_last_message() {
    let row = newest_row(3, PER_GROUP);
    assert_eq!(row["tier"], "t5");
    assert_eq!(row["last_name"], "s25");
    assert_eq!(row["score"], 30);
    let stale = json!([{"email": "g0@stale.io", "tier": "t3"}]);
    let found = stale_fields(stale.as_array().unwrap(), 1, PER_GROUP);
    assert!(found.iter().any(|s| s.contains("tier=\"t3\"")), "{found:?}");
}

/// 20 FIFO groups of 30 upserts to one key, the storm and flags: every group ends on its
/// newest values. On 8f017ce 2 to 3 groups of 20 ended stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_upserts_end_on_their_newest_values_through_a_fault_storm() {
    let seeds: Vec<u64> = match std::env::var("STALE_SEEDS") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => vec![19_001],
    };
    let mut stale = Vec::new();
    for seed in seeds {
        let found = storm_round(seed).await;
        eprintln!(
            "stale_values: seed {seed}: {} stale fields {found:?}",
            found.len()
        );
        stale.extend(found);
    }
    assert!(stale.is_empty(), "stale values: {stale:#?}");
}
