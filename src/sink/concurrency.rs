//! How many batches may be in flight: a fixed `--max-in-flight`, or (the default) an adaptive
//! limit below it, the way Vector's adaptive request concurrency works. The arithmetic (`Aimd`)
//! is pure and tested from a table; `Slots` is the async gate the dispatcher waits on.
//!
//! The rule: start at 1 and double on every clean window (slow start) until the first overload
//! or the ceiling; after that add 1 per clean window. A window is as many answers as the limit.
//! An overload (429, 503, 504, a timeout) or an answer slower than usual halves the limit, once
//! per window. Slower than usual means both per call (twice the usual and 100 ms more) and per
//! record (twice the usual time a record): an API's answer time grows with the batch (seed 003),
//! so a full batch after small age-flushed ones is slower per call but not per record, and a
//! small one after full ones is slower per record but not per call. Neither is load. After an overload, probing above the level
//! that overloaded waits 2, 4, 8 ... up to 64 clean windows: against an API that can take one
//! request at a time, the 503s that probing costs become rarer and rarer.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::sink::api::Signal;
use crate::telemetry::Telemetry;

const MAX_PROBE_WAIT: u32 = 64;
const SLOW_FACTOR: f64 = 2.0;
/// Below this much extra time, a slower answer is jitter, not load.
const SLOW_FLOOR_S: f64 = 0.1;

/// Moving averages of clean answers: seconds and records per call. Their ratio is the usual time
/// a record (a ratio of averages, so small batches, slow per record by nature, do not swamp it).
#[derive(Clone, Copy, Debug)]
struct Usual {
    secs: f64,
    records: f64,
}

impl Usual {
    fn of(secs: f64, records: usize) -> Self {
        Self {
            secs,
            records: records.max(1) as f64,
        }
    }

    fn per_record(&self) -> f64 {
        self.secs / self.records
    }

    /// Slower than usual per call and per record alike: the API, not the batch size.
    fn is_slow(&self, answer: Usual) -> bool {
        let per_call =
            answer.secs > self.secs * SLOW_FACTOR && answer.secs > self.secs + SLOW_FLOOR_S;
        per_call && answer.per_record() > self.per_record() * SLOW_FACTOR
    }

    fn updated(self, answer: Usual) -> Self {
        Self {
            secs: self.secs * 0.8 + answer.secs * 0.2,
            records: self.records * 0.8 + answer.records * 0.2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Aimd {
    limit: usize,
    ceiling: usize,
    slow_start: bool,
    /// Answers counted in this window, and whether one of them was an overload.
    answered: usize,
    /// Usual answer time per call and per record: moving averages of clean answers.
    usual: Option<Usual>,
    /// The level that last overloaded, and the clean windows to wait before probing it again.
    overloaded_at: Option<usize>,
    probe_wait: u32,
    clean_windows: u32,
    /// Answers still due from before the last decrease; they cannot decrease it again.
    stale: usize,
}

impl Aimd {
    pub fn new(ceiling: usize) -> Self {
        Self {
            limit: 1,
            ceiling: ceiling.max(1),
            slow_start: true,
            answered: 0,
            usual: None,
            overloaded_at: None,
            probe_wait: 1,
            clean_windows: 0,
            stale: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Feeds one answer; `still_out` is how many other calls were awaiting theirs when it came.
    pub fn observe(&mut self, signal: Signal, still_out: usize) -> &'static str {
        let stale = self.stale > 0;
        self.stale = self.stale.saturating_sub(1);
        let slow = match signal {
            Signal::Answered { took, records } => {
                let answer = Usual::of(took.as_secs_f64(), records);
                let slow = self.usual.is_some_and(|usual| usual.is_slow(answer));
                // Slow answers feed the averages too: a lasting rise (a slower API) becomes the
                // new usual instead of pinning the limit at 1.
                self.usual = Some(self.usual.map_or(answer, |usual| usual.updated(answer)));
                slow
            }
            Signal::Overloaded => true,
            Signal::Neutral => return "neutral",
        };
        if stale {
            return "answer to a call sent before the last decrease";
        }
        if slow {
            self.overloaded_at = Some(self.limit);
            self.probe_wait = (self.probe_wait * 2).min(MAX_PROBE_WAIT);
            self.clean_windows = 0;
            self.slow_start = false;
            self.limit = (self.limit / 2).max(1);
            self.answered = 0;
            self.stale = still_out;
            return if signal == Signal::Overloaded {
                "overloaded"
            } else {
                "latency rose"
            };
        }
        self.answered += 1;
        if self.answered < self.limit {
            return "clean answer";
        }
        self.answered = 0;
        self.clean_windows += 1;
        if self.overloaded_at.is_some_and(|at| self.limit >= at) {
            // A clean window at the level that once overloaded: that was passing load.
            self.overloaded_at = None;
            self.probe_wait = (self.probe_wait / 2).max(1);
        }
        let next = if self.slow_start {
            self.limit * 2
        } else {
            self.limit + 1
        };
        let blocked = self
            .overloaded_at
            .is_some_and(|at| next >= at && self.clean_windows < self.probe_wait);
        if blocked {
            return "clean window; waiting before probing the level that overloaded";
        }
        if self.overloaded_at.is_some_and(|at| next >= at) {
            self.clean_windows = 0;
        }
        self.limit = next.min(self.ceiling);
        "clean window"
    }
}

struct Gate {
    aimd: Option<Aimd>,
    ceiling: usize,
    in_flight: usize,
}

impl Gate {
    fn limit(&self) -> usize {
        self.aimd.as_ref().map_or(self.ceiling, Aimd::limit)
    }
}

/// The dispatcher's in-flight slots. Cloned handles share one gate.
#[derive(Clone)]
pub struct Slots {
    gate: Arc<Mutex<Gate>>,
    freed: Arc<Notify>,
    telemetry: Arc<Telemetry>,
}

/// One batch in flight; dropping it frees the slot.
pub struct Slot(Slots);

impl Slots {
    pub fn new(ceiling: usize, adaptive: bool, telemetry: Arc<Telemetry>) -> Self {
        let gate = Gate {
            aimd: adaptive.then(|| Aimd::new(ceiling)),
            ceiling,
            in_flight: 0,
        };
        telemetry.set_concurrency_limit(gate.limit(), "start");
        Self {
            gate: Arc::new(Mutex::new(gate)),
            freed: Arc::new(Notify::new()),
            telemetry,
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.gate().in_flight
    }

    pub async fn acquire(&self) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut gate = self.gate();
                if gate.in_flight < gate.limit() {
                    gate.in_flight += 1;
                    self.telemetry.set_in_flight(gate.in_flight);
                    return Slot(self.clone());
                }
            }
            freed.await;
        }
    }

    /// Feeds one batch call's answer to the adaptive limit; `still_out` calls await theirs.
    pub fn observe(&self, signal: Signal, still_out: usize) {
        let mut gate = self.gate();
        let Some(aimd) = gate.aimd.as_mut() else {
            return;
        };
        let before = aimd.limit();
        let why = aimd.observe(signal, still_out);
        let after = aimd.limit();
        if after != before {
            self.telemetry.set_concurrency_limit(after, why);
            if after > before {
                self.freed.notify_waiters();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut gate = self.0.gate();
        gate.in_flight = gate.in_flight.saturating_sub(1);
        self.0.telemetry.set_in_flight(gate.in_flight);
        drop(gate);
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FAST: Signal = answered(100, 1);

    const fn answered(ms: u64, records: usize) -> Signal {
        Signal::Answered {
            took: Duration::from_millis(ms),
            records,
        }
    }

    fn feed(aimd: &mut Aimd, signals: &[Signal]) -> Vec<usize> {
        signals
            .iter()
            .map(|signal| {
                aimd.observe(*signal, aimd.limit() - 1);
                aimd.limit()
            })
            .collect()
    }

    #[test]
    fn the_limit_moves_as_the_table_says() {
        let slow = answered(500, 1);
        let o = Signal::Overloaded;
        // (signals, limit after each)
        let cases: Vec<(usize, Vec<Signal>, Vec<usize>)> = vec![
            // Slow start doubles per clean window, up to the ceiling.
            (4, vec![FAST; 7], vec![2, 2, 4, 4, 4, 4, 4]),
            // An overload halves it; the answers already out cannot halve it again.
            (
                8,
                vec![FAST, FAST, FAST, FAST, FAST, FAST, FAST, o, o, o, o],
                vec![2, 2, 4, 4, 4, 4, 8, 4, 4, 4, 4],
            ),
            // A slow answer counts as an overload; neutral answers count for nothing.
            (4, vec![FAST, slow, Signal::Neutral], vec![2, 1, 1]),
        ];
        for (ceiling, signals, expected) in cases {
            let mut aimd = Aimd::new(ceiling);
            assert_eq!(feed(&mut aimd, &signals), expected, "{signals:?}");
        }
    }

    #[test]
    fn against_a_one_at_a_time_api_probing_gets_rarer() {
        // Every time the limit reaches 2 the API answers 503.
        let mut aimd = Aimd::new(4);
        let mut overloads = Vec::new();
        for call in 0..2_000 {
            let signal = if aimd.limit() >= 2 {
                Signal::Overloaded
            } else {
                FAST
            };
            aimd.observe(signal, aimd.limit() - 1);
            if signal == Signal::Overloaded {
                overloads.push(call);
            }
        }
        assert!(
            overloads.len() <= 45,
            "{} overloads: {overloads:?}",
            overloads.len()
        );
        let gaps: Vec<_> = overloads.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.last().unwrap() >= &60, "{gaps:?}");
        assert_eq!(aimd.limit(), 1);
    }

    #[test]
    fn a_lasting_rise_in_latency_becomes_the_usual() {
        let mut aimd = Aimd::new(4);
        feed(&mut aimd, &[FAST; 3]);
        let slower = answered(600, 1);
        // The first slow answers halve the limit; then the new latency is the usual and it climbs.
        let limits = feed(&mut aimd, &[slower; 12]);
        assert_eq!(limits[0], 2);
        assert_eq!(*limits.last().unwrap(), 4, "{limits:?}");
    }

    #[test]
    fn a_clean_window_at_the_level_that_overloaded_forgets_it() {
        let mut aimd = Aimd::new(8);
        feed(&mut aimd, &[FAST; 3]); // 1 -> 2 -> 4
        aimd.observe(Signal::Overloaded, 0); // 4 -> 2, remembers 4
        // Two clean windows at 2, then the probe to 3, 4; a clean window at 4 clears the memory.
        let limits = feed(&mut aimd, &[FAST; 16]);
        assert!(limits.contains(&5), "{limits:?}");
    }

    #[test]
    fn a_fixed_gate_stays_at_its_ceiling() {
        let slots = Slots::new(3, false, Arc::new(Telemetry::new()));
        slots.observe(Signal::Overloaded, 0);
        assert_eq!(slots.gate().limit(), 3);
    }

    /// An API that takes 20 ms plus 1 ms a record, fed a mix of full and age-flushed batches:
    /// the limit climbs to its ceiling and stays. Read per call alone (records: 1 each), every
    /// full batch after small ones looked like load and halved it.
    #[test]
    fn a_big_batch_is_not_a_slow_api() {
        let sizes = [1000, 5, 10, 1000, 20, 1000, 1000, 3, 500, 1000];
        let mixed = |per_record: bool| {
            let mut aimd = Aimd::new(8);
            let mut halvings = 0;
            for size in sizes.iter().cycle().take(200) {
                let records = if per_record { *size } else { 1 };
                let before = aimd.limit();
                aimd.observe(answered(20 + *size as u64, records), 0);
                halvings += usize::from(aimd.limit() < before);
            }
            (halvings, aimd.limit())
        };
        assert_eq!(mixed(true), (0, 8), "per record");
        let (halvings, _) = mixed(false);
        assert!(halvings >= 10, "per call alone halves it: {halvings}");
        // A slower API is still seen: the same mix, three times slower per record.
        let mut aimd = Aimd::new(8);
        for size in sizes.iter().cycle().take(40) {
            aimd.observe(answered(20 + *size as u64, *size), 0);
        }
        assert_eq!(aimd.limit(), 8);
        aimd.observe(answered(20 + 3 * 1000, 1000), 0);
        assert_eq!(aimd.limit(), 4, "a full batch three times slower halves it");
    }
}
