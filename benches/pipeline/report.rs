//! The figures of one run, the table, and the summary line the outside checks parse.

#[derive(Clone)]
pub struct Row {
    pub name: String,
    pub messages: usize,
    pub seconds: f64,
    /// Write requests (batch or single), retries included.
    pub write_calls: u64,
    pub records_accepted: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The worker process only.
    pub cpu_s: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

impl Row {
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    pub fn calls_per_10k(&self) -> f64 {
        self.write_calls as f64 * 10_000.0 / self.messages.max(1) as f64
    }

    pub fn records_per_call(&self) -> f64 {
        if self.write_calls == 0 {
            return 0.0;
        }
        self.records_accepted as f64 / self.write_calls as f64
    }

    pub fn cpu_s_per_100k(&self) -> Option<f64> {
        self.cpu_s
            .map(|cpu| cpu * 100_000.0 / self.messages.max(1) as f64)
    }
}

/// The p-th percentile (0..=100) of samples, by nearest rank.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

pub fn print_table(rows: &[Row]) {
    println!(
        "\n{:<34} {:>9} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>9}",
        "run",
        "messages",
        "secs",
        "msgs/s",
        "calls/10k",
        "recs/call",
        "p50 ms",
        "p99 ms",
        "cpu s/100k",
        "rss MiB"
    );
    for row in rows {
        println!(
            "{:<34} {:>9} {:>8.1} {:>10.0} {:>10.1} {:>10.1} {:>9.0} {:>9.0} {:>11} {:>9}",
            row.name,
            row.messages,
            row.seconds,
            row.msgs_per_s(),
            row.calls_per_10k(),
            row.records_per_call(),
            row.p50_ms,
            row.p99_ms,
            opt(row.cpu_s_per_100k(), 2),
            opt(row.peak_rss_mb, 1),
        );
    }
}

pub struct Summary<'a> {
    pub ceiling: &'a Row,
    pub worker: &'a Row,
    pub per_message: &'a Row,
    pub per_receive: &'a Row,
    pub ratelimited_worker_per_min: f64,
    pub ratelimited_per_message_per_min: f64,
    pub ratelimited_per_receive_per_min: f64,
}

impl Summary<'_> {
    pub fn line(&self) -> String {
        let w = self.worker;
        format!(
            "pipeline: worker_msgs_per_s={:.0} ceiling_msgs_per_s={:.0} ceiling_ratio={:.3} calls_per_10k={:.2} records_per_call={:.1} p99_ms={:.0} cpu_s_per_100k={:.2} peak_rss_mb={:.1} per_message_msgs_per_s={:.0} per_receive_msgs_per_s={:.0} ratelimited_worker_per_min={:.0} ratelimited_per_message_per_min={:.0} ratelimited_per_receive_per_min={:.0}",
            w.msgs_per_s(),
            self.ceiling.msgs_per_s(),
            w.msgs_per_s() / self.ceiling.msgs_per_s().max(1e-9),
            w.calls_per_10k(),
            w.records_per_call(),
            w.p99_ms,
            w.cpu_s_per_100k().unwrap_or(f64::NAN),
            w.peak_rss_mb.unwrap_or(f64::NAN),
            self.per_message.msgs_per_s(),
            self.per_receive.msgs_per_s(),
            self.ratelimited_worker_per_min,
            self.ratelimited_per_message_per_min,
            self.ratelimited_per_receive_per_min,
        )
    }
}
