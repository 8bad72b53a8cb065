//! The alternating method. LocalStack drifts within a session (its ceiling fell from 1,551 to
//! 1,011 msgs/s in one day), so one run of each configuration compares nothing. Every run here
//! sits between two ceiling runs, each configuration runs `--repeat` times, and each run's ratio
//! is its throughput over the mean of the ceilings on either side of it. The figures are the
//! median and the spread (min to max) of the runs.

use crate::raw::Mode;
use crate::report::Row;
use crate::{Bench, WorkerSpec};

/// What one slot of the sequence runs.
pub enum Entry<'a> {
    Worker(WorkerSpec<'a>),
    PerReceive,
}

impl Entry<'_> {
    fn name(&self) -> &str {
        match self {
            Entry::Worker(spec) => spec.name,
            Entry::PerReceive => "baseline: per receive",
        }
    }
}

/// One configuration's runs and, per run, its ratio to the neighbouring ceilings.
pub struct Series {
    pub name: String,
    pub rows: Vec<Row>,
    pub ratios: Vec<f64>,
}

/// ceiling, then `repeat` times: each entry followed by a ceiling. Returns the ceilings' series
/// first, then one per entry.
pub async fn run(bench: &Bench, entries: &[Entry<'_>], repeat: usize, n: usize) -> Vec<Series> {
    let ceiling = || bench.raw("ceiling (receive+delete)", Mode::Ceiling, n, None);
    let mut ceilings = vec![ceiling().await];
    let mut series: Vec<Series> = entries
        .iter()
        .map(|e| Series {
            name: e.name().to_owned(),
            rows: Vec::new(),
            ratios: Vec::new(),
        })
        .collect();
    for round in 0..repeat {
        for (entry, out) in entries.iter().zip(&mut series) {
            eprintln!("alternate: round {} of {repeat}: {}", round + 1, out.name);
            let row = match entry {
                Entry::Worker(spec) => bench.worker_run(spec, n, None).await,
                Entry::PerReceive => bench.raw(&out.name, Mode::PerReceive, n, None).await,
            };
            let before = ceilings.last().map_or(f64::NAN, Row::msgs_per_s);
            let after = ceiling().await;
            let around = (before + after.msgs_per_s()) / 2.0;
            out.ratios.push(row.msgs_per_s() / around.max(1e-9));
            out.rows.push(row);
            ceilings.push(after);
        }
    }
    let ceiling_series = Series {
        name: "ceiling (receive+delete)".to_owned(),
        ratios: vec![1.0; ceilings.len()],
        rows: ceilings,
    };
    std::iter::once(ceiling_series).chain(series).collect()
}

/// (median, min, max), NaN-free samples assumed.
pub fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.retain(|v| v.is_finite());
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    let median = if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    };
    (median, samples[0], samples[samples.len() - 1])
}

fn cell(samples: Vec<f64>, decimals: usize) -> String {
    let (median, min, max) = spread(samples);
    if !median.is_finite() {
        return "-".to_owned();
    }
    format!("{median:.decimals$} ({min:.decimals$}-{max:.decimals$})")
}

/// The table (median and min-max per figure) and one `alternate:` line per configuration.
pub fn print(series: &[Series]) {
    println!(
        "\n{:<36} {:>3} {:>22} {:>22} {:>20} {:>20} {:>10}",
        "configuration",
        "n",
        "msgs/s",
        "ratio to ceilings",
        "cpu s/100k",
        "peak rss MiB",
        "calls/10k"
    );
    for s in series {
        let of = |f: fn(&Row) -> Option<f64>| s.rows.iter().filter_map(f).collect::<Vec<f64>>();
        let msgs = of(|r| Some(r.msgs_per_s()));
        let cpu = of(Row::cpu_s_per_100k);
        let rss = of(|r| r.peak_rss_mb);
        let calls = of(|r| Some(r.calls_per_10k()));
        println!(
            "{:<36} {:>3} {:>22} {:>22} {:>20} {:>20} {:>10}",
            s.name,
            s.rows.len(),
            cell(msgs.clone(), 0),
            cell(s.ratios.clone(), 3),
            cell(cpu.clone(), 2),
            cell(rss.clone(), 1),
            cell(calls, 1),
        );
    }
    for s in series {
        let of = |f: fn(&Row) -> Option<f64>| s.rows.iter().filter_map(f).collect::<Vec<f64>>();
        let (msgs, ratio, cpu, rss) = (
            spread(of(|r| Some(r.msgs_per_s()))),
            spread(s.ratios.clone()),
            spread(of(Row::cpu_s_per_100k)),
            spread(of(|r| r.peak_rss_mb)),
        );
        println!(
            "alternate: {}: runs={} msgs_per_s={:.0} [{:.0}..{:.0}] ratio={:.3} [{:.3}..{:.3}] cpu_s_per_100k={:.2} [{:.2}..{:.2}] peak_rss_mb={:.1} [{:.1}..{:.1}]",
            s.name,
            s.rows.len(),
            msgs.0,
            msgs.1,
            msgs.2,
            ratio.0,
            ratio.1,
            ratio.2,
            cpu.0,
            cpu.1,
            cpu.2,
            rss.0,
            rss.1,
            rss.2
        );
    }
}
