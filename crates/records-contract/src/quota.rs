//! Quotas as `--rate-limit` spells them, for the worker and the emulator alike: a list of limits
//! (`100/min,2000/day`), each a token bucket with a stated burst (`2000/day:50`). The bucket is
//! pure: every call takes `now`.
//!
//! A limit `N/PERIOD:B` refills N tokens per PERIOD, evenly, and holds at most B (default 1: calls
//! spaced evenly, nothing banked while idle). A call takes one token from every limit.

use std::fmt;
use std::time::{Duration, Instant};

use crate::units::parse_duration;

/// The slowest rate a limit may have: one call a week (a timer can wait that long).
pub const SLOWEST_PER_S: f64 = 1.0 / (7.0 * 86_400.0);
pub const FASTEST_PER_S: f64 = 1e6;
const MAX_BURST: u32 = 1_000_000;
/// The longest period a limit may name: a year.
const LONGEST_PERIOD: Duration = Duration::from_secs(366 * 86_400);

#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub calls: f64,
    pub period: Duration,
    /// Set explicitly with `:B`; otherwise the caller's default applies.
    pub burst: Option<u32>,
}

impl Limit {
    pub fn per_second(&self) -> f64 {
        self.calls / self.period.as_secs_f64()
    }

    /// The time one token takes to refill.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second())
    }

    /// The same limit with its period divided by `factor` (the emulator's `--time-scale`).
    pub fn scaled(&self, factor: f64) -> Self {
        let secs = self.period.as_secs_f64() / factor;
        Self {
            period: Duration::try_from_secs_f64(secs).unwrap_or(LONGEST_PERIOD),
            ..self.clone()
        }
    }
}

impl fmt::Display for Limit {
    /// The label used in metrics and logs: `100/min`, `2000/day:50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = match self.period.as_secs_f64() {
            1.0 => "s".to_owned(),
            60.0 => "min".to_owned(),
            3600.0 => "h".to_owned(),
            86_400.0 => "day".to_owned(),
            secs => format!("{secs}s"),
        };
        write!(f, "{}/{period}", self.calls)?;
        if let Some(burst) = self.burst {
            write!(f, ":{burst}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn period(unit: &str) -> Option<Duration> {
    let secs = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        other => return parse_duration(other).ok().filter(|d| !d.is_zero()),
    };
    Some(Duration::from_secs(secs))
}

fn parse_one(text: &str) -> Result<Limit, String> {
    let bad = || {
        format!(
            "'{text}' is not a limit; write N/PERIOD with an optional :BURST, such as 2/s, \
             100/min, 3600/h, 2000/day, 500/15min or 2000/day:50"
        )
    };
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => {
            let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
            if !(1..=MAX_BURST).contains(&burst) {
                return Err(format!("'{text}': the burst must be from 1 to {MAX_BURST}"));
            }
            (rate, Some(burst))
        }
        None => (text, None),
    };
    let (calls, period) = match rate.split_once('/') {
        Some((calls, unit)) => (calls, period(unit.trim()).ok_or_else(bad)?),
        None => (rate, Duration::from_secs(1)),
    };
    let calls: f64 = calls.trim().parse().map_err(|_| bad())?;
    let limit = Limit {
        calls,
        period,
        burst,
    };
    if limit.period > LONGEST_PERIOD {
        return Err(format!("'{text}': the period must be at most a year"));
    }
    let per_s = limit.per_second();
    if calls > 0.0 && (SLOWEST_PER_S..=FASTEST_PER_S).contains(&per_s) {
        Ok(limit)
    } else {
        Err(format!(
            "'{text}' is outside what the worker can pace: from 1/week to 1000000/s"
        ))
    }
}

/// Parses `100/min,2000/day:50`. `none` or an empty string is no limit.
pub fn parse_limits(text: &str) -> Result<Vec<Limit>, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(Vec::new());
    }
    let limits: Vec<Limit> = text
        .split(',')
        .map(|item| parse_one(item.trim()))
        .collect::<Result<_, _>>()?;
    for (index, limit) in limits.iter().enumerate() {
        if limits[..index]
            .iter()
            .any(|l| l.to_string() == limit.to_string())
        {
            return Err(format!("'{limit}' is given twice; give each limit once"));
        }
    }
    Ok(limits)
}

/// A list of limits as one value (a flag's type).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quota(pub Vec<Limit>);

pub fn parse_quota(text: &str) -> Result<Quota, String> {
    parse_limits(text).map(Quota)
}

/// One limit's bucket: `rate` tokens a second, at most `capacity`. Starts full.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(rate_per_s: f64, capacity: u32, now: Instant) -> Self {
        Self::with_tokens(rate_per_s, capacity, f64::from(capacity), now)
    }

    /// A bucket restored from saved state; `tokens` is clamped to what it can hold.
    pub fn with_tokens(rate_per_s: f64, capacity: u32, tokens: f64, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            rate: rate_per_s,
            capacity,
            tokens: tokens.clamp(0.0, capacity),
            updated: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Tokens there at `now` (fractional).
    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// When one whole token is there: `now` if it already is.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        // Rounded up by a microsecond, so that at the instant returned the token is whole.
        let wait = Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate)
            .unwrap_or(LONGEST_PERIOD)
            .min(LONGEST_PERIOD);
        now + wait + Duration::from_micros(1)
    }

    /// Whether a whole token is there at `now`.
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.tokens(now) >= 1.0
    }

    /// Takes a token if one is there.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Puts back a token taken for a call that was never made; never above the capacity.
    pub fn give_back(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    /// The calls the bucket allows within `horizon` from `now`: what it holds plus what refills.
    pub fn calls_within(&mut self, now: Instant, horizon: Duration) -> f64 {
        self.tokens(now) + self.rate * horizon.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_from_a_table() {
        let day = Duration::from_secs(86_400);
        type Parsed = Option<(f64, Duration, Option<u32>)>;
        let cases: &[(&str, Parsed)] = &[
            ("2", Some((2.0, Duration::from_secs(1), None))),
            ("1.5/s", Some((1.5, Duration::from_secs(1), None))),
            ("100/min", Some((100.0, Duration::from_secs(60), None))),
            ("3600/h", Some((3600.0, Duration::from_secs(3600), None))),
            ("2000/day", Some((2000.0, day, None))),
            ("2000/day:50", Some((2000.0, day, Some(50)))),
            ("500/15min", Some((500.0, Duration::from_secs(900), None))),
            ("6 / min : 2", Some((6.0, Duration::from_secs(60), Some(2)))),
            ("0/min", None),
            ("-1/min", None),
            ("1/fortnight", None),
            ("5/min:0", None),
            ("5/min:x", None),
            ("1e-300", None),
            ("1e300/s", None),
            ("1/0s", None),
            ("fast", None),
        ];
        for (text, expected) in cases {
            let got = parse_one(text).ok().map(|l| (l.calls, l.period, l.burst));
            assert_eq!(&got, expected, "{text}");
        }
        let both = parse_limits("100/min, 2000/day").unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].to_string(), "2000/day");
        assert!(parse_limits("none").unwrap().is_empty());
        assert!(parse_limits("100/min,,").is_err());
        assert!(
            parse_limits("100/min,100/60s").is_err(),
            "the same limit twice"
        );
        assert!(parse_one("1e18/1e18s").is_err(), "a period past a year");
    }

    #[test]
    fn a_bucket_spends_its_burst_then_refills_evenly() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (offset from t0, take?, expected result)
        let mut bucket = Bucket::new(0.1, 2, t0);
        let steps = [
            (0, true),
            (0, true),
            (0, false),
            (9, false),
            (10, true),
            (10, false),
            (40, true),
            (40, true),
            (40, false),
        ];
        for (at, expected) in steps {
            assert_eq!(bucket.take(t0 + s(at)), expected, "at {at}s");
        }
        assert!((bucket.calls_within(t0 + s(40), s(60)) - 6.0).abs() < 1e-9);
        let ready = bucket.ready_at(t0 + s(40));
        assert!(ready > t0 + s(50) && ready < t0 + s(50) + Duration::from_millis(1));
        assert!(bucket.has_token(ready));
    }

    #[test]
    fn restored_tokens_are_clamped() {
        let t0 = Instant::now();
        let mut bucket = Bucket::with_tokens(1.0, 3, 99.0, t0);
        assert_eq!(bucket.tokens(t0), 3.0);
        let mut empty = Bucket::with_tokens(1.0, 3, -5.0, t0);
        let ready = empty.ready_at(t0);
        assert!(ready > t0 + Duration::from_secs(1) && empty.has_token(ready));
    }
}
