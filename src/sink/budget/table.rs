//! A quota shared by every replica in a DynamoDB table (`--budget-table`): one item per limit,
//! keyed by the limit as written (`6/min:2`), holding the bucket's level (`tokens`), the moment
//! it was last refilled to (`stamp_ms`), a version (`ver`) and the end of a 429's pause
//! (`paused_until_ms`). A call is paid by a token of every limit's item, each taken by an update
//! on the condition that its version is still the one read: it never overspends, and replicas
//! with different limit sets spend each limit's one item. (Single-item conditional updates, not
//! a transaction: moto's server, which the tests run on, restores a snapshot of every table when
//! a transaction is cancelled, undoing other replicas' spends made meanwhile.)
//!
//! Clocks: the refill since an item's version was first read is measured on this replica's
//! monotonic clock, so a wall clock stepped back or forward changes nothing for a replica that
//! spends alone. An item another replica wrote is refilled from its `stamp_ms` by this replica's
//! wall clock: a clock X behind the writer's credits less (calls wait longer), one X ahead
//! credits up to X's worth more, never more than the burst (keep clocks in step with NTP).
//!
//! Why a table: the usual AWS pattern for a shared quota. It cannot overspend, it can be read to
//! show what is left (`sbw_budget_remaining`), a refund is one conditional write, and a 429 pauses
//! every replica through the same items.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::Spending;

const KEY: &str = "limit";
/// One attempt of a table call; the SDK retries within the operation's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// How much later than its token a call may reach the API: the scheduling of several replicas
/// on a busy host. The shared bucket holds this much less than the burst, so that calls whose
/// tokens were taken apart but which arrive together still fit the API's own bucket.
const ARRIVAL_SPREAD_S: f64 = 0.3;

/// What the shared bucket of `limit` holds at most: its burst less the arrival spread's worth
/// (and the gathering's, where calls gather), never less than one call.
fn capacity(limit: &Spending) -> f64 {
    // A gathered call leaves up to `GATHERING_CEILING` after its take (`Budget::gathering`).
    let gathering = if super::gathers(limit) {
        super::GATHERING_CEILING.as_secs_f64()
    } else {
        0.0
    };
    (f64::from(limit.burst) - limit.per_second * (ARRIVAL_SPREAD_S + gathering)).max(1.0)
}

/// One limit's item as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// False for an item that a pause wrote before any spend.
    pub versioned: bool,
    /// Which take wrote this version, for the confirming read.
    pub writer: Option<String>,
    pub tokens: f64,
    pub stamp_ms: f64,
    pub version: u64,
    pub paused_until_ms: f64,
}

/// When this replica first read an item's version: how far its stamp lay behind the wall clock
/// then, and the monotonic instant.
#[derive(Clone, Copy, Debug)]
struct Seen {
    version: u64,
    behind_ms: f64,
    at: Instant,
}

/// A limit's level now, and the stamp that level is good to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub tokens: f64,
    pub stamp_ms: f64,
}

/// The refill of `item` for `limit` at wall time `now_ms`: from the monotonic clock when this
/// replica already saw the item's version, otherwise from the wall clock (never negative).
fn level(
    limit: &Spending,
    item: Option<&Item>,
    seen: Option<&Seen>,
    now_ms: f64,
    mono: Instant,
) -> Level {
    let Some(item) = item else {
        return Level {
            tokens: capacity(limit),
            stamp_ms: now_ms,
        };
    };
    let elapsed_ms = match seen.filter(|seen| seen.version == item.version) {
        Some(seen) => {
            seen.behind_ms + mono.saturating_duration_since(seen.at).as_secs_f64() * 1000.0
        }
        None => (now_ms - item.stamp_ms).max(0.0),
    };
    let tokens = (item.tokens + elapsed_ms / 1000.0 * limit.per_second).min(capacity(limit));
    Level {
        tokens,
        stamp_ms: item.stamp_ms + elapsed_ms,
    }
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What one try at spending found.
#[derive(Debug, PartialEq)]
pub enum Try {
    /// Taken: every limit's level after the take.
    Taken(Vec<f64>),
    /// Not enough: try again after this long.
    Wait(Duration),
    /// Another replica wrote between the read and the write: read again.
    Raced,
}

pub struct TableTokens {
    client: Client,
    table: String,
    seen: Mutex<HashMap<String, Seen>>,
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<f64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl TableTokens {
    pub fn new(client: Client, table: String) -> Self {
        Self {
            client,
            table,
            seen: Mutex::default(),
        }
    }

    /// A client from the standard AWS chain (`AWS_ENDPOINT_URL_DYNAMODB` sets this client's
    /// endpoint alone); the SDK owns its retries.
    /// Every call has deadlines, as the SQS client's do: a store that accepts a connection and
    /// never answers is a store error (retried, counted, shown in `/readyz`), not a spend that
    /// waits forever.
    pub async fn connect(table: String) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let config = aws_sdk_dynamodb::config::Builder::from(&config)
            .timeout_config(timeouts)
            .build();
        Self::new(Client::from_conf(config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one limit's item (strongly consistent); `None` when no replica spent it yet.
    pub async fn read(&self, label: &str) -> Result<Option<Item>, String> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(label.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        Ok(Some(Item {
            versioned: item.contains_key("ver"),
            writer: item.get("writer").and_then(|w| w.as_s().ok()).cloned(),
            tokens: number(&item, "tokens").unwrap_or(0.0),
            stamp_ms: number(&item, "stamp_ms").unwrap_or(0.0),
            version: number(&item, "ver").unwrap_or(0.0) as u64,
            paused_until_ms: number(&item, "paused_until_ms").unwrap_or(0.0),
        }))
    }

    /// The levels of `limits` now, as this replica would refill them.
    pub async fn levels(&self, limits: &[Spending]) -> Result<Vec<f64>, String> {
        let mut levels = Vec::new();
        for limit in limits {
            let item = self.read(&limit.label).await?;
            let seen = self.seen().get(&limit.label).copied();
            levels.push(
                level(
                    limit,
                    item.as_ref(),
                    seen.as_ref(),
                    wall_ms(),
                    Instant::now(),
                )
                .tokens,
            );
        }
        Ok(levels)
    }

    /// One try at taking a token of every limit: limit by limit, each a conditional update of
    /// its item; if a later limit has no token, the earlier ones are given back.
    pub async fn try_take(&self, limits: &[Spending]) -> Result<Try, String> {
        let mut levels = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let taken = self.take_one(limit).await;
            match taken {
                Ok(Try::Taken(level)) => levels.extend(level),
                other => {
                    self.give_back(&limits[..index]).await?;
                    return other;
                }
            }
        }
        Ok(Try::Taken(levels))
    }

    /// Takes one token of `limit`: reads its item, refills it, and writes the level less one on
    /// the condition that the version is still the one read. The write names this try
    /// (`writer`), and a read after it confirms that the token is ours: a store whose condition
    /// check is not atomic under load (moto's server) can let two writers pass with one version,
    /// and then only the last one's write stands.
    async fn take_one(&self, limit: &Spending) -> Result<Try, String> {
        let item = self.read(&limit.label).await?;
        let (now, mono) = (wall_ms(), Instant::now());
        let level = {
            let mut seen = self.seen();
            if let Some(item) = &item
                && seen
                    .get(&limit.label)
                    .is_none_or(|s| s.version != item.version)
            {
                seen.insert(
                    limit.label.clone(),
                    Seen {
                        version: item.version,
                        behind_ms: (now - item.stamp_ms).max(0.0),
                        at: mono,
                    },
                );
            }
            level(limit, item.as_ref(), seen.get(&limit.label), now, mono)
        };
        let paused_ms = item.as_ref().map_or(0.0, |i| i.paused_until_ms - now);
        if paused_ms > 0.0 {
            return Ok(Try::Wait(Duration::from_secs_f64(paused_ms / 1000.0)));
        }
        if level.tokens < 1.0 {
            let refill = ((1.0 - level.tokens) / limit.per_second).min(86_400.0);
            return Ok(Try::Wait(Duration::from_secs_f64(refill)));
        }
        let version = item.as_ref().map_or(0, |i| i.version);
        let writer = uuid::Uuid::new_v4().simple().to_string();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(limit.label.clone()))
            .update_expression(
                "SET tokens = :tokens, stamp_ms = :stamp, ver = :next, writer = :writer",
            )
            .expression_attribute_values(":tokens", n(level.tokens - 1.0))
            .expression_attribute_values(":stamp", n(level.stamp_ms))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":writer", AttributeValue::S(writer.clone()));
        let update = match &item {
            None => update
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", KEY),
            // An item a pause created before any spend has no version yet.
            Some(item) if !item.versioned => {
                update.condition_expression("attribute_not_exists(ver)")
            }
            Some(_) => update
                .condition_expression("ver = :read")
                .expression_attribute_values(":read", n(version)),
        };
        match update.send().await {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                return Ok(Try::Raced);
            }
            Err(error) => return Err(describe(&error)),
        }
        if self.written_by(&limit.label, version + 1, &writer).await? {
            // Our own write: its level is as of `mono`, and its refill from here on is on our
            // monotonic clock, whatever the wall clock did meanwhile.
            self.seen().insert(
                limit.label.clone(),
                Seen {
                    version: version + 1,
                    behind_ms: 0.0,
                    at: mono,
                },
            );
            Ok(Try::Taken(vec![level.tokens - 1.0]))
        } else {
            Ok(Try::Raced)
        }
    }

    /// Whether the item of `label` still holds the write `writer` made as `version`. If a later
    /// version already stands on it, ours may have been overwritten in the same instant: the
    /// safe side counts the token as lost (a call's worth of quota), never as ours twice.
    async fn written_by(&self, label: &str, version: u64, writer: &str) -> Result<bool, String> {
        let item = self.read(label).await?;
        Ok(item.is_some_and(|item| {
            item.versioned && item.version == version && item.writer.as_deref() == Some(writer)
        }))
    }

    /// Gives one token back to each limit (a call that was not made), never above its burst.
    pub async fn give_back(&self, limits: &[Spending]) -> Result<(), String> {
        for limit in limits {
            for _ in 0..8 {
                let Some(item) = self.read(&limit.label).await? else {
                    break;
                };
                let tokens = (item.tokens + 1.0).min(capacity(limit));
                let written = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(KEY, AttributeValue::S(limit.label.clone()))
                    .update_expression("SET tokens = :tokens, ver = :next")
                    .condition_expression("ver = :read")
                    .expression_attribute_values(":tokens", n(tokens))
                    .expression_attribute_values(":next", n(item.version + 1))
                    .expression_attribute_values(":read", n(item.version))
                    .send()
                    .await;
                match written {
                    Ok(_) => break,
                    Err(error)
                        if error
                            .as_service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                    Err(error) => return Err(describe(&error)),
                }
            }
        }
        Ok(())
    }

    /// Pauses every replica's spending of `limits` until `for_` from now (a 429's `Retry-After`);
    /// a later pause already there stays.
    pub async fn pause(&self, limits: &[Spending], for_: Duration) -> Result<(), String> {
        let until = wall_ms() + for_.as_secs_f64() * 1000.0;
        for limit in limits {
            let written = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, AttributeValue::S(limit.label.clone()))
                .update_expression("SET paused_until_ms = :until")
                .condition_expression(
                    "attribute_not_exists(paused_until_ms) OR paused_until_ms < :until",
                )
                .expression_attribute_values(":until", n(until))
                .send()
                .await;
            match written {
                Ok(_) => {}
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(error) => return Err(describe(&error)),
            }
        }
        Ok(())
    }

    /// Reaches the table (for `check` and start-up): it exists and this role may read it.
    pub async fn reach(&self) -> Result<(), String> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// An SDK error as one line: the service's code and message, or the transport's error.
fn describe<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records_contract::quota::parse_limits;

    fn limit(spec: &str) -> Spending {
        Spending::of(&parse_limits(spec).unwrap()[0])
    }

    /// A replica that spends alone refills on its monotonic clock once it has seen the version,
    /// whatever its wall clock does; a version another replica wrote refills by the wall clock.
    #[test]
    fn refill_follows_the_monotonic_clock_for_a_version_already_seen() {
        let limit = limit("60/min:2"); // a token every 1.02 s
        let item = Item {
            versioned: true,
            writer: None,
            tokens: 0.0,
            stamp_ms: 1_000_000.0,
            version: 7,
            paused_until_ms: 0.0,
        };
        let t0 = Instant::now();
        let seen = Seen {
            version: 7,
            behind_ms: 0.0,
            at: t0,
        };
        let later = t0 + Duration::from_millis(1020);
        let cases = [
            // (wall clock now, seen, tokens): a minute back, on time, a minute ahead.
            (940_000.0, Some(seen), 1.0),
            (1_001_020.0, Some(seen), 1.0),
            (1_061_020.0, Some(seen), 1.0),
            // Not seen: the wall clock; behind the stamp credits nothing, never less.
            (940_000.0, None, 0.0),
            (1_001_020.0, None, 1.0),
            (1_061_020.0, None, 2.0 - 0.3 / 1.02),
        ];
        for (now, seen, tokens) in cases {
            let got = level(&limit, Some(&item), seen.as_ref(), now, later);
            assert!(
                (got.tokens - tokens).abs() < 1e-6,
                "{now} {seen:?}: {got:?}"
            );
        }
        // A new item starts full: the burst less 0.3 s of calls (0.98 a second).
        let fresh = level(&limit, None, None, 5.0, later);
        let full = 2.0 - 0.3 / 1.02;
        assert!(
            (fresh.tokens - full).abs() < 1e-9 && fresh.stamp_ms == 5.0,
            "{fresh:?}"
        );
    }
}
