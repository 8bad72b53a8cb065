//! Token buckets, one per token and endpoint class. Pure: the caller passes `now`.

use std::time::Instant;

#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A bucket that holds one second of traffic (at least one request).
    pub fn new(rate_per_s: f64, now: Instant) -> Self {
        let capacity = rate_per_s.ceil().max(1.0);
        Self {
            rate: rate_per_s,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token, or says in whole seconds (at least 1) when one will be there.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(2.0, t0);
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        assert_eq!(bucket.take(t0), Err(1));
        assert!(bucket.take(t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn slow_rates_ask_for_longer_waits() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(100.0 / 60.0, t0);
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        assert_eq!(bucket.take(t0), Err(1));
        let mut slow = Bucket::new(0.1, t0);
        assert!(slow.take(t0).is_ok());
        assert_eq!(slow.take(t0), Err(10));
    }
}
