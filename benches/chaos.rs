//! The chaos suite's long run and the kill -9 run, against LocalStack and the emulator, with the
//! real (release) worker binary. Prints every round's seed and findings; exits 1 on a violation.
//!
//! ```text
//! cargo bench --bench chaos -- --minutes 30 [--seed S] [--messages 400] [--intensity 1.0]
//! cargo bench --bench chaos -- --seed S --rounds 1            # replay one round
//! cargo bench --bench chaos -- --kill-cycles 100 --messages 100000 [--groups 100] [--ack accepted]
//! ```

use test_rig as common;

use std::time::{Duration, Instant};

use common::chaos::{Plan, kill_cycles, print, round};

struct Options {
    minutes: f64,
    rounds: Option<usize>,
    seed: u64,
    messages: usize,
    intensity: f64,
    kill_cycles: Option<usize>,
    groups: usize,
    completed: bool,
}

fn options() -> Options {
    let mut options = Options {
        minutes: 5.0,
        rounds: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        messages: 400,
        intensity: 1.0,
        kill_cycles: None,
        groups: 100,
        completed: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--minutes" => options.minutes = value.parse().expect("--minutes N"),
            "--rounds" => options.rounds = Some(value.parse().expect("--rounds N")),
            "--seed" => options.seed = value.parse().expect("--seed S"),
            "--messages" => options.messages = value.parse().expect("--messages N"),
            "--intensity" => options.intensity = value.parse().expect("--intensity X"),
            "--kill-cycles" => options.kill_cycles = Some(value.parse().expect("--kill-cycles N")),
            "--groups" => options.groups = value.parse().expect("--groups N"),
            "--ack" => options.completed = value == "completed",
            _ => {
                // cargo bench passes --bench; ignore what is not ours.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    if let Some(cycles) = options.kill_cycles {
        let report = kill_cycles(
            options.seed,
            options.messages,
            options.groups,
            cycles,
            options.completed,
        )
        .await;
        print!("{}", print(&report));
        std::process::exit(i32::from(!report.violations.is_empty()));
    }
    let started = Instant::now();
    let budget = Duration::from_secs_f64(options.minutes * 60.0);
    let mut violations = 0;
    let mut rounds = 0;
    let mut doubles = [0usize; 2];
    let mut reordered = 0;
    let mut lost_after_kill = 0;
    let mut kills = 0;
    while options
        .rounds
        .map_or(started.elapsed() < budget, |r| rounds < r)
    {
        let seed = options.seed + rounds as u64;
        let plan = Plan::random(seed, options.messages, true, options.intensity);
        println!("chaos: starting {}", plan.describe());
        let report = round(&plan, Duration::from_secs(240)).await;
        print!("{}", print(&report));
        violations += report.violations.len();
        doubles[usize::from(plan.completed)] += report.double_commits;
        kills += report.kills;
        reordered += report.reordered_after_kill;
        lost_after_kill += report.lost_after_failed_job_and_kill;
        rounds += 1;
    }
    println!(
        "chaos: {rounds} rounds in {:.1} min from seed {}: {violations} violations, {kills} kills, double commits accepted-mode {} completed-mode {}, FIFO groups reordered after a kill in accepted mode {reordered}, messages lost to a failed job and a kill in accepted mode {lost_after_kill}",
        started.elapsed().as_secs_f64() / 60.0,
        options.seed,
        doubles[0],
        doubles[1]
    );
    std::process::exit(i32::from(violations > 0));
}
