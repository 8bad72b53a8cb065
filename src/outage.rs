//! The API outage gate. When a batch spends its retries on transient failures, its messages go
//! back to the queue for a while (their release visibility), and the pollers stop receiving for
//! that long too: a receive during an outage only spends a receive count, and enough of those move
//! a healthy message to the redrive DLQ. The next accepted batch opens the gate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Outage {
    until: Mutex<Option<Instant>>,
}

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API failed a batch for good at `now`: hold receives for `pause`.
    pub fn began(&self, now: Instant, pause: Duration) {
        let mut until = self.lock();
        let end = now.checked_add(pause).unwrap_or(now);
        *until = Some(until.map_or(end, |current| current.max(end)));
    }

    /// A batch was accepted: the API is back.
    pub fn ended(&self) {
        *self.lock() = None;
    }

    /// Until when receives wait, if they must.
    pub fn receives_wait_until(&self, now: Instant) -> Option<Instant> {
        self.lock().filter(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_for_the_longest_pause_and_opens_on_success() {
        let outage = Outage::default();
        let t0 = Instant::now();
        assert_eq!(outage.receives_wait_until(t0), None);
        outage.began(t0, Duration::from_secs(20));
        outage.began(t0, Duration::from_secs(10));
        assert_eq!(
            outage.receives_wait_until(t0),
            Some(t0 + Duration::from_secs(20))
        );
        assert_eq!(
            outage.receives_wait_until(t0 + Duration::from_secs(20)),
            None
        );
        outage.began(t0, Duration::from_secs(20));
        outage.ended();
        assert_eq!(outage.receives_wait_until(t0), None);
    }
}
