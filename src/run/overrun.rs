//! The warning that arrivals outrun the quota. Once a minute it compares what arrived (messages
//! received plus the growth of the source queue's backlog) with what the quota carries at
//! `--batch-max-records` per call, and when arrivals are higher it logs the backlog's growth per
//! hour: the operator hears it long before the queue fills. The arithmetic (`Overrun`) is pure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;

use crate::sink::budget::Budget;
use crate::sqs::Queue;
use crate::telemetry::Telemetry;

/// How often arrivals are compared with what the quota carries.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// While arrivals stay above the quota, the warning repeats this often.
const REPEAT: Duration = Duration::from_secs(3600);

/// One sample: messages received so far, and the backlog (visible messages) if SQS said.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub received: u64,
    pub backlog: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finding {
    pub arrivals_per_s: f64,
    pub carried_per_s: f64,
    pub growth_per_hour: f64,
}

pub struct Overrun {
    carried_per_s: f64,
    last: Sample,
    warned: Option<Instant>,
}

impl Overrun {
    pub fn new(carried_per_s: f64, first: Sample) -> Self {
        Self {
            carried_per_s,
            last: first,
            warned: None,
        }
    }

    /// Arrivals over the window since the last sample; `Some` when they outran the quota and the
    /// operator has not heard it within the hour.
    pub fn check(&mut self, now: Sample) -> Option<Finding> {
        let window = now.at.saturating_duration_since(self.last.at).as_secs_f64();
        let received = now.received.saturating_sub(self.last.received) as f64;
        let growth = match (now.backlog, self.last.backlog) {
            (Some(now), Some(before)) => now as f64 - before as f64,
            _ => 0.0,
        };
        self.last = now;
        if window <= 0.0 {
            return None;
        }
        let arrivals_per_s = ((received + growth) / window).max(0.0);
        if arrivals_per_s <= self.carried_per_s {
            self.warned = None;
            return None;
        }
        if self
            .warned
            .is_some_and(|at| now.at.saturating_duration_since(at) < REPEAT)
        {
            return None;
        }
        self.warned = Some(now.at);
        Some(Finding {
            arrivals_per_s,
            carried_per_s: self.carried_per_s,
            growth_per_hour: (arrivals_per_s - self.carried_per_s) * 3600.0,
        })
    }
}

/// What the watch reads: the source queue's depth, what was received, and the quota.
pub struct Watch {
    pub queue: Queue,
    pub budget: Arc<Budget>,
    pub telemetry: Arc<Telemetry>,
    pub batch_max_records: usize,
}

async fn sample(watch: &Watch) -> Sample {
    let backlog = watch
        .queue
        .attribute(QueueAttributeName::ApproximateNumberOfMessages)
        .await
        .ok()
        .flatten()
        .and_then(|depth| depth.parse().ok());
    Sample {
        at: Instant::now(),
        received: watch.telemetry.counts().received,
        backlog,
    }
}

/// Watches until `stop`; does nothing without a quota.
pub async fn watch(watch: Watch, stop: CancellationToken) {
    let limits = watch.budget.limits();
    let Some(per_s) = limits.iter().map(|l| l.per_second).reduce(f64::min) else {
        return;
    };
    let carried = per_s * watch.batch_max_records as f64;
    let mut overrun = Overrun::new(carried, sample(&watch).await);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        // The shared table's levels for `sbw_budget_remaining`; an unreachable store shows in
        // `/readyz` even while no call is being paid for.
        watch.budget.read_remaining().await;
        if let Some(found) = overrun.check(sample(&watch).await) {
            watch.telemetry.quota_overrun(
                found.arrivals_per_s,
                found.carried_per_s,
                found.growth_per_hour,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_warns_once_an_hour_while_arrivals_outrun_the_quota() {
        let t0 = Instant::now();
        let at = |minute: u64, received: u64, backlog: Option<u64>| Sample {
            at: t0 + Duration::from_secs(60 * minute),
            received,
            backlog,
        };
        // The quota carries 10 a second (600 a minute).
        let mut watch = Overrun::new(10.0, at(0, 0, Some(0)));
        // (sample, warns?)
        let cases = [
            (at(1, 300, Some(0)), false),
            // 600 received and the backlog grew by 600: 1,200 arrived, 20 a second.
            (at(2, 900, Some(600)), true),
            (at(3, 1_500, Some(1_200)), false),
            // A backlog that shrinks as fast as receiving: nothing new arrived.
            (at(4, 2_100, Some(600)), false),
            (at(5, 2_700, Some(1_800)), true),
            // Without a backlog reading, receiving alone must show it.
            (at(6, 3_000, None), false),
        ];
        for (sample, warns) in cases {
            assert_eq!(watch.check(sample).is_some(), warns, "{sample:?}");
        }
        let mut again = Overrun::new(10.0, at(0, 0, Some(0)));
        let found = again.check(at(1, 600, Some(1_200))).unwrap();
        assert_eq!(found.arrivals_per_s, 30.0);
        assert_eq!(found.growth_per_hour, 20.0 * 3600.0);
    }
}
