//! Steady load: an open-loop producer at a fixed rate while the worker (defaults) runs, so the
//! latency is a service time, not a backlog's wait. Each message's latency runs from its send to
//! the 202 of the batch that carried it, and to the end of that batch's job (the emulator's
//! `createdAtMs` and `completedAtMs`).

use crate::open_loop::{latencies, produce, quantile};
use crate::raw::Until;
use crate::setup::Queues;
use crate::{Bench, worker};

pub struct SteadyRun {
    pub rate: f64,
    pub messages: usize,
    pub p50_accepted_ms: f64,
    pub p99_accepted_ms: f64,
    pub p50_completed_ms: f64,
    pub p99_completed_ms: f64,
    pub cpu_s_per_100k: f64,
    pub peak_rss_mb: f64,
}

pub async fn run(bench: &Bench, binary: &str, rate: f64, seconds: f64) -> SteadyRun {
    let queues = Queues::create(&bench.sqs, "steady").await;
    bench.control.reset(None).await;
    let total = (rate * seconds) as usize;
    let producer = {
        let (sqs, url) = (bench.sqs.clone(), queues.source.clone());
        tokio::spawn(async move { produce(&sqs, &url, rate, seconds).await })
    };
    let log = bench.out.join("steady.log").display().to_string();
    let api = bench.emulator.api_url();
    let outcome = worker::run(binary, &queues, &api, &[], Until::Count(total), &log, 1).await;
    let sent_at = producer.await.expect("the producer finishes");
    let mut lat = latencies(&bench.emulator.base_url(), &sent_at).await;
    queues.delete().await;
    let run = SteadyRun {
        rate,
        messages: outcome.messages,
        p50_accepted_ms: quantile(&mut lat.to_accepted_ms, 0.5),
        p99_accepted_ms: quantile(&mut lat.to_accepted_ms, 0.99),
        p50_completed_ms: quantile(&mut lat.to_completed_ms, 0.5),
        p99_completed_ms: quantile(&mut lat.to_completed_ms, 0.99),
        cpu_s_per_100k: outcome.cpu_s * 100_000.0 / outcome.messages.max(1) as f64,
        peak_rss_mb: outcome.peak_rss_mb,
    };
    eprintln!(
        "steady: {:.0} msgs/s: p99 sent->202 {:.0} ms, p99 sent->completed {:.0} ms",
        rate, run.p99_accepted_ms, run.p99_completed_ms
    );
    run
}

pub fn print(runs: &[SteadyRun], max_wait_ms: f64) {
    println!(
        "\n{:>8} {:>9} {:>14} {:>14} {:>16} {:>16} {:>11} {:>9}",
        "rate/s",
        "messages",
        "p50 ->202 ms",
        "p99 ->202 ms",
        "p50 ->done ms",
        "p99 ->done ms",
        "cpu s/100k",
        "rss MiB"
    );
    for r in runs {
        println!(
            "{:>8.0} {:>9} {:>14.0} {:>14.0} {:>16.0} {:>16.0} {:>11.2} {:>9.1}",
            r.rate,
            r.messages,
            r.p50_accepted_ms,
            r.p99_accepted_ms,
            r.p50_completed_ms,
            r.p99_completed_ms,
            r.cpu_s_per_100k,
            r.peak_rss_mb
        );
    }
    let of = |f: fn(&SteadyRun) -> f64| crate::alternate::spread(runs.iter().map(f).collect());
    let (p99, p99_min, p99_max) = of(|r| r.p99_accepted_ms);
    let (p50c, ..) = of(|r| r.p50_completed_ms);
    let (p99c, ..) = of(|r| r.p99_completed_ms);
    let goal = max_wait_ms + 1000.0;
    println!(
        "steady: runs={} p99_sent_to_202_ms={p99:.0} [{p99_min:.0}..{p99_max:.0}] goal_ms={goal:.0} met={} p50_sent_to_completed_ms={p50c:.0} p99_sent_to_completed_ms={p99c:.0}",
        runs.len(),
        p99_max <= goal
    );
}
