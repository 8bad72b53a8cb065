//! What `start` checks and reads before the pipeline runs: the budget, the object's schema and
//! the match key, the queues' visibility timeout and the DLQ's size limit.

use std::sync::Arc;
use std::time::Duration;

use records_contract::ObjectSchema;

use super::RunError;
use crate::config::{Operation, Settings};
use crate::sink::api::{ApiError, RecordsApi};
use crate::sink::budget::{Budget, SharedTokens, TableTokens};
use crate::source::dlq;
use crate::source::poll::ReadAhead;
use crate::sqs::Queue;
use crate::sqs::clock::ClockCheck;
use crate::telemetry::Telemetry;

/// The most a release's visibility grows to.
pub const RELEASE_CAP: Duration = Duration::from_secs(15 * 60);

/// What start-up learned from the API and the queues.
pub struct Reached {
    pub schema: ObjectSchema,
    pub visibility: Duration,
    pub dlq_max_bytes: usize,
}

/// The budget: shared through `--budget-table` or `--budget-queue`, or local (saved to
/// `--state-dir` when given).
pub async fn budget(
    settings: &Settings,
    client: &aws_sdk_sqs::Client,
    telemetry: &Arc<Telemetry>,
) -> Result<Budget, RunError> {
    if let Some(table) = &settings.budget_table {
        if settings.state_dir.is_some() {
            tracing::warn!(
                "--state-dir is not used with --budget-table: the table holds the shared budget"
            );
        }
        let tokens = TableTokens::connect(table.clone()).await;
        return Ok(Budget::table(
            tokens,
            &settings.rate_limit,
            telemetry.clone(),
        ));
    }
    if let Some(url) = &settings.budget_queue {
        if settings.state_dir.is_some() {
            tracing::warn!(
                "--state-dir is not used with --budget-queue: the queue holds the shared budget"
            );
        }
        let queue = Queue::new(client.clone(), url.clone());
        check_clock(&queue).await?;
        let tokens = SharedTokens::new(queue, settings.rate_limit.len());
        return Ok(Budget::shared(
            tokens,
            &settings.rate_limit,
            telemetry.clone(),
        ));
    }
    Ok(Budget::local(
        &settings.rate_limit,
        settings.state_dir.as_deref(),
        telemetry.clone(),
    )?)
}

/// The budget queue's assumption that replicas' clocks agree, checked where it can be: this
/// host against SQS. Too far off refuses to start; an unreachable queue is the store's failure
/// to report later (`/readyz`), not a reason to refuse.
async fn check_clock(queue: &Queue) -> Result<(), RunError> {
    let Some(offset_s) = crate::sqs::clock::offset_from_sqs(queue).await else {
        tracing::warn!("--budget-queue: could not read SQS's clock; the clock check is skipped");
        return Ok(());
    };
    match crate::sqs::clock::judge(offset_s) {
        ClockCheck::InStep => {
            tracing::info!(
                offset_s,
                "--budget-queue: this host's clock is in step with SQS's"
            )
        }
        ClockCheck::Drifting => tracing::warn!(
            offset_s,
            "--budget-queue: this host's clock is off SQS's; keep clocks in step (NTP), or use \
             --budget-table"
        ),
        ClockCheck::TooFar => return Err(RunError::ClockOffset { offset_s }),
    }
    Ok(())
}

/// The API's schema for the object, the source's visibility and the DLQ's size limit.
pub async fn reach(
    settings: &Settings,
    api: &RecordsApi,
    source: &Queue,
    dlq: &Queue,
) -> Result<Reached, RunError> {
    let schema = fetch_schema(api, settings).await?;
    match_key_fits(settings, &schema)?;
    let queue_visibility = source
        .visibility_timeout()
        .await
        .map_err(|source| RunError::Queue {
            setting: "--queue-url",
            source,
        })?;
    let dlq_max = dlq_max_bytes(dlq).await;
    // Compared only when both sizes were read: a DLQ the worker may only send to is not refused
    // for a size it assumed.
    if let Some(read) = max_message_bytes(dlq).await {
        dlq_fits_the_source(max_message_bytes(source).await, read)?;
    }
    Ok(Reached {
        schema,
        visibility: settings.visibility_timeout.unwrap_or(queue_visibility),
        dlq_max_bytes: dlq_max,
    })
}

/// Every message the source takes must fit the DLQ (bodies of up to 1 MiB since August 2025);
/// `check` asks the same question. `None`: the source's size could not be read.
pub fn dlq_fits_the_source(source_max: Option<usize>, dlq_max: usize) -> Result<(), RunError> {
    match source_max {
        Some(source_max) if source_max > dlq_max => Err(RunError::DlqTooSmall {
            dlq: dlq_max,
            source_max,
        }),
        _ => Ok(()),
    }
}

/// A queue's `MaximumMessageSize`, if it can be read.
pub async fn max_message_bytes(queue: &Queue) -> Option<usize> {
    queue
        .attribute(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
        .await
        .ok()
        .flatten()
        .and_then(|value| value.parse().ok())
}

/// Messages the pollers may hold waiting for a slot: what the calls the budget allows within one
/// visibility timeout carry, plus the open batch. `None` without a quota.
///
/// Where shared calls gather (`Budget::gathering`; not on a FIFO source, whose open batch can
/// wait on a busy group and must keep filling) a replica holds one receive's worth while it
/// waits for a token, and one call's worth while it holds one: the rest stays in the queue for whichever replica takes the
/// next token, so every call carries what arrived, not a third of it.
pub fn read_ahead(
    budget: &Budget,
    visibility: Duration,
    max_records: usize,
    per_receive: usize,
    gathering: Duration,
) -> Option<ReadAhead> {
    let calls = crate::sink::budget::calls_within(budget.limits(), visibility)?;
    let full = (calls.floor().max(1.0) as usize + 1).saturating_mul(max_records);
    if gathering.is_zero() {
        return Some(ReadAhead {
            waiting: full,
            holding: full,
        });
    }
    Some(ReadAhead {
        waiting: per_receive.clamp(1, full),
        holding: max_records.saturating_add(per_receive).min(full),
    })
}

async fn fetch_schema(api: &RecordsApi, settings: &Settings) -> Result<ObjectSchema, RunError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.metadata().await {
            Ok(schema) => return Ok(schema),
            Err(ApiError::Status { status: 404, .. }) => {
                return Err(RunError::UnknownObject {
                    object: settings.object.clone(),
                    api_url: settings.api_url.clone(),
                });
            }
            Err(ApiError::Status {
                status: status @ (401 | 403),
                ..
            }) => {
                return Err(RunError::TokenRefused { status });
            }
            Err(source) if attempt >= 5 => return Err(RunError::Metadata { source }),
            Err(error) => {
                tracing::warn!(%error, attempt, "metadata fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
        }
    }
}

/// An upsert needs a match key the object has; `check` asks the same question.
pub fn match_key_fits(settings: &Settings, schema: &ObjectSchema) -> Result<(), RunError> {
    if settings.operation == Operation::Upsert && !schema.match_keys.contains(&settings.match_key) {
        return Err(RunError::NotAMatchKey {
            match_key: settings.match_key.clone(),
            object: schema.name.clone(),
            match_keys: schema.match_keys.clone(),
        });
    }
    Ok(())
}

/// The DLQ's `MaximumMessageSize`, or SQS's default when it cannot be read.
async fn dlq_max_bytes(dlq: &Queue) -> usize {
    match dlq
        .attribute(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
        .await
    {
        Ok(Some(value)) => value.parse().unwrap_or(dlq::DEFAULT_MAX_MESSAGE_BYTES),
        Ok(None) => dlq::DEFAULT_MAX_MESSAGE_BYTES,
        Err(error) => {
            tracing::warn!(%error, "cannot read the DLQ's MaximumMessageSize; assuming 256 KiB");
            dlq::DEFAULT_MAX_MESSAGE_BYTES
        }
    }
}
