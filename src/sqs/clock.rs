//! How far this host's wall clock is from SQS's: read from the `Date` header of one SQS answer
//! (the clock that stamps `SentTimestamp`). The budget queue's slots are wall-clock, so its
//! replicas must agree with each other; each one checks itself against SQS at start-up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use aws_sdk_sqs::primitives::{DateTime, DateTimeFormat};

use super::Queue;

/// Keeps the `Date` header of the answer it sees.
#[derive(Debug, Default)]
struct DateHeader(Arc<Mutex<Option<String>>>);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "DateHeader"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(date.to_owned());
        }
        Ok(())
    }
}

/// This host's clock minus SQS's, in seconds (positive: this host runs ahead); `None` when the
/// queue could not be reached or its answer had no readable `Date`. The header has a resolution
/// of a second, so the figure is good to about a second plus the round trip.
pub async fn offset_from_sqs(queue: &Queue) -> Option<f64> {
    let seen = Arc::new(Mutex::new(None));
    let before = SystemTime::now();
    queue
        .client()
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .customize()
        .interceptor(DateHeader(seen.clone()))
        .send()
        .await
        .ok()?;
    let after = SystemTime::now();
    let header = seen.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    let theirs = DateTime::from_str(&header, DateTimeFormat::HttpDate).ok()?;
    let ours = before + after.duration_since(before).unwrap_or(Duration::ZERO) / 2;
    let ours = DateTime::from(ours);
    // The header drops the sub-second part: compare from the middle of its second.
    Some(ours.as_secs_f64() - (theirs.as_secs_f64() + 0.5))
}

/// What a clock offset means for the budget queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockCheck {
    InStep,
    /// Off by more than `WARN_S`: say so, and go on.
    Drifting,
    /// Off by more than `REFUSE_S`: two such replicas could be twice as far apart, beyond what
    /// the token slots tolerate.
    TooFar,
}

pub const WARN_S: f64 = 10.0;
pub const REFUSE_S: f64 = 60.0;

pub fn judge(offset_s: f64) -> ClockCheck {
    match offset_s.abs() {
        off if off > REFUSE_S => ClockCheck::TooFar,
        off if off > WARN_S => ClockCheck::Drifting,
        _ => ClockCheck::InStep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_a_table() {
        let cases = [
            (0.0, ClockCheck::InStep),
            (-9.9, ClockCheck::InStep),
            (10.5, ClockCheck::Drifting),
            (-59.0, ClockCheck::Drifting),
            (60.5, ClockCheck::TooFar),
            (-600.0, ClockCheck::TooFar),
        ];
        for (offset, verdict) in cases {
            assert_eq!(judge(offset), verdict, "{offset}");
        }
    }
}
