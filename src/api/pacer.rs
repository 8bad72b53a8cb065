//! Client-side pacing of batch requests: an optional steady rate (`--rate-limit`) and a shared pause
//! that a 429's `Retry-After` (or an auth failure) sets for every sender, not only the one that got
//! it. The arithmetic is pure and takes `now`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Schedule {
    interval: Option<Duration>,
    next_slot: Instant,
    paused_until: Instant,
}

impl Schedule {
    /// The instant the caller may send, reserving that slot.
    fn reserve(&mut self, now: Instant) -> Instant {
        let at = now.max(self.next_slot).max(self.paused_until);
        if let Some(interval) = self.interval {
            self.next_slot = at + interval;
        }
        at
    }
}

#[derive(Debug)]
pub struct Pacer(Mutex<Schedule>);

impl Pacer {
    pub fn new(rate_per_s: Option<f64>) -> Self {
        let now = Instant::now();
        Self(Mutex::new(Schedule {
            interval: rate_per_s.map(|rate| Duration::from_secs_f64(1.0 / rate)),
            next_slot: now,
            paused_until: now,
        }))
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this sender's turn.
    pub async fn wait(&self) {
        let at = self.schedule().reserve(Instant::now());
        tokio::time::sleep_until(at.into()).await;
    }

    /// Holds every sender back for `duration` from now.
    pub fn pause_for(&self, duration: Duration) {
        let mut schedule = self.schedule();
        schedule.paused_until = schedule.paused_until.max(Instant::now() + duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_spaces_requests() {
        let t0 = Instant::now();
        let mut s = Schedule {
            interval: Some(Duration::from_millis(500)),
            next_slot: t0,
            paused_until: t0,
        };
        assert_eq!(s.reserve(t0), t0);
        assert_eq!(s.reserve(t0), t0 + Duration::from_millis(500));
        assert_eq!(s.reserve(t0), t0 + Duration::from_millis(1000));
        // An idle sender does not bank slots.
        assert_eq!(
            s.reserve(t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(10)
        );
    }

    #[test]
    fn pause_holds_everyone() {
        let t0 = Instant::now();
        let mut s = Schedule {
            interval: None,
            next_slot: t0,
            paused_until: t0 + Duration::from_secs(2),
        };
        assert_eq!(s.reserve(t0), t0 + Duration::from_secs(2));
        assert_eq!(
            s.reserve(t0 + Duration::from_secs(3)),
            t0 + Duration::from_secs(3)
        );
    }
}
