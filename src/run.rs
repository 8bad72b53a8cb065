//! `run`: start-up checks, the pipeline's tasks, and the drain on shutdown: stop receiving, flush
//! the buffer, finish in-flight work within `--drain-timeout`, release whatever is still open.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, RecordsApi};
use crate::batch::batcher::{Batcher, Limits};
use crate::budget::{Budget, SharedTokens};
use crate::config::{Concurrency, Operation, Settings};
use crate::contract::ObjectSchema;
use crate::decode::{Decoder, SchemaHandle};
use crate::lease::Lease;
use crate::pipeline::concurrency::Slots;
use crate::pipeline::settle::Acks;
use crate::pipeline::{Pipeline, dispatch, heartbeat, overrun, poll};
use crate::sqs::{Holdings, Queue, SqsError, dlq};
use crate::telemetry::{Counts, Telemetry, server};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Exit code 2: the configuration cannot work; the message names the setting.
    #[error("{0}")]
    Config(String),
    /// Exit code 1.
    #[error("{0}")]
    Fatal(String),
}

/// What the worker did, for the exit log line.
#[derive(Debug)]
pub struct Summary {
    pub counts: Counts,
    pub released_at_exit: usize,
}

/// Hooks for embedding: where the telemetry server listens, and the telemetry itself.
pub struct Started {
    pub listen: SocketAddr,
    pub telemetry: Arc<Telemetry>,
}

/// Runs with an SQS client from the standard AWS chain until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, RunError> {
    let client = crate::sqs::connect().await;
    run_with(settings, client, shutdown, |_| {}).await
}

/// The budget: shared through `--budget-queue`, or local (saved to `--state-dir` when given).
fn budget(
    settings: &Settings,
    client: &aws_sdk_sqs::Client,
    telemetry: &Arc<Telemetry>,
) -> Result<Budget, RunError> {
    if let Some(url) = &settings.budget_queue {
        if settings.state_dir.is_some() {
            tracing::warn!(
                "--state-dir is not used with --budget-queue: the queue holds the shared budget"
            );
        }
        let tokens = SharedTokens::new(
            Queue::new(client.clone(), url.clone()),
            settings.rate_limit.len(),
        );
        return Ok(Budget::shared(
            tokens,
            &settings.rate_limit,
            telemetry.clone(),
        ));
    }
    Budget::local(
        &settings.rate_limit,
        settings.state_dir.as_deref(),
        telemetry.clone(),
    )
    .map_err(|e| RunError::Config(e.to_string()))
}

/// Messages the pollers may hold waiting for a slot: what the calls the budget allows within one
/// visibility timeout carry, plus the open batch. `None` without a quota.
pub fn read_ahead(budget: &Budget, visibility: Duration, max_records: usize) -> Option<usize> {
    let calls = crate::budget::calls_within(budget.limits(), visibility)?;
    Some((calls.floor().max(1.0) as usize + 1).saturating_mul(max_records))
}

async fn fetch_schema(api: &RecordsApi, settings: &Settings) -> Result<ObjectSchema, RunError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.metadata().await {
            Ok(schema) => return Ok(schema),
            Err(ApiError::Status { status: 404, .. }) => {
                return Err(RunError::Config(format!(
                    "--object (env RECORDS_OBJECT) = {:?}: the Records API has no such object. Fix: name an object that GET {}/metadata/objects/{{object}} knows",
                    settings.object, settings.api_url
                )));
            }
            Err(ApiError::Status {
                status: status @ (401 | 403),
                ..
            }) => {
                return Err(RunError::Config(format!(
                    "--api-token / --api-token-file: the Records API answered {status} to the token. Fix: give a valid token with read and write scope"
                )));
            }
            Err(error) if attempt >= 5 => {
                return Err(RunError::Fatal(format!(
                    "cannot fetch the object's metadata: {error}"
                )));
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "metadata fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
        }
    }
}

fn check_schema(settings: &Settings, schema: &ObjectSchema) -> Result<(), RunError> {
    if settings.operation == Operation::Upsert && !schema.match_keys.contains(&settings.match_key) {
        return Err(RunError::Config(format!(
            "--match-key (env RECORDS_MATCH_KEY) = {:?} is not a match key of '{}' (it has {:?}). Fix: use one of those, or --operation append",
            settings.match_key, schema.name, schema.match_keys
        )));
    }
    Ok(())
}

fn unreachable_queue(setting: &str, error: SqsError) -> RunError {
    RunError::Fatal(format!("{setting}: {error}"))
}

/// The most a release's visibility grows to.
pub const RELEASE_CAP: Duration = Duration::from_secs(15 * 60);

/// How much of `--drain-timeout` is kept for releasing what is still held at the end.
fn release_reserve(drain_timeout: Duration) -> Duration {
    (drain_timeout / 5).min(Duration::from_secs(5))
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

/// Runs with the given SQS client; `started` is called once the telemetry server listens.
pub async fn run_with(
    settings: Settings,
    client: aws_sdk_sqs::Client,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(Started),
) -> Result<Summary, RunError> {
    let settings = Arc::new(settings);
    let telemetry = Arc::new(Telemetry::with_systemd());
    let budget = Arc::new(budget(&settings, &client, &telemetry)?);
    let api = RecordsApi::new(&settings, budget, telemetry.clone())
        .map_err(|e| RunError::Fatal(e.to_string()))?;
    let source = Queue::new(client.clone(), settings.queue_url.clone());
    let dlq = Queue::new(client, settings.dlq_url.clone());

    let schema = fetch_schema(&api, &settings).await?;
    check_schema(&settings, &schema)?;
    telemetry.api_reached();
    let queue_visibility = source
        .visibility_timeout()
        .await
        .map_err(|e| unreachable_queue("--queue-url", e))?;
    let visibility = settings.visibility_timeout.unwrap_or(queue_visibility);
    let dlq_max_bytes = dlq_max_bytes(&dlq).await;
    if settings.source_is_fifo() && settings.ack_on == crate::config::AckOn::Accepted {
        tracing::warn!(
            "FIFO source with --ack-on accepted: after a crash, a job accepted before it may \
             finish after a later batch's job and reorder its group. Fix: --ack-on completed \
             keeps every group in order"
        );
    }

    let listener = server::bind(settings.listen).await.map_err(|e| {
        RunError::Config(format!(
            "--listen (env WORKER_LISTEN) = {}: cannot listen there: {e}. Fix: pick a free port",
            settings.listen
        ))
    })?;
    let listen = listener
        .local_addr()
        .map_err(|e| RunError::Fatal(e.to_string()))?;
    let stop_server = CancellationToken::new();
    let server_task = tokio::spawn(server::serve(
        listener,
        telemetry.clone(),
        stop_server.clone(),
    ));
    started(Started {
        listen,
        telemetry: telemetry.clone(),
    });

    let holdings = Holdings::new(visibility);
    let limits = Limits {
        max_records: settings.batch_max_records,
        max_bytes: settings.batch_max_bytes,
        max_wait: settings.batch_max_wait,
        operation: settings.operation,
        match_key: settings.match_key.clone(),
    };
    let batcher = Batcher::new(limits);
    let schema = SchemaHandle::new(schema);
    let decoder = Arc::new(Decoder {
        operation: settings.operation,
        match_key: settings.match_key.clone(),
        schema: schema.clone(),
        max_record_bytes: batcher.max_record_bytes(),
    });
    let pipeline = Arc::new(Pipeline {
        settings: settings.clone(),
        api,
        acks: Acks {
            source: source.clone(),
            dlq,
            holdings: holdings.clone(),
            telemetry: telemetry.clone(),
            release_base: settings.release_backoff,
            release_cap: RELEASE_CAP,
            dlq_max_bytes,
        },
        schema,
        telemetry: telemetry.clone(),
        outage: Default::default(),
        open_jobs: Default::default(),
        slots: Slots::new(
            settings.max_in_flight,
            settings.concurrency == Concurrency::Adaptive,
            telemetry.clone(),
        ),
    });
    tracing::info!(
        queue = settings.queue_url,
        dlq = settings.dlq_url,
        api = settings.api_url,
        object = settings.object,
        operation = ?settings.operation,
        batch_max_records = settings.batch_max_records,
        batch_max_bytes = settings.batch_max_bytes,
        batch_max_wait_ms = settings.batch_max_wait.as_millis() as u64,
        pollers = settings.pollers,
        max_in_flight = settings.max_in_flight,
        ack_on = ?settings.ack_on,
        max_held_bytes = settings.max_held_bytes,
        release_backoff_ms = settings.release_backoff.as_millis() as u64,
        visibility_s = visibility.as_secs(),
        listen = %listen,
        "worker started"
    );

    // Backpressure: never hold more messages than the in-flight batches can take, nor more
    // bytes of bodies than --max-held-bytes (docs/operations.md has the memory formula).
    let capacity = settings.max_in_flight * settings.batch_max_records;
    let capacity_permits = Arc::new(Semaphore::new(capacity));
    let byte_permits = Arc::new(Semaphore::new(settings.max_held_bytes));
    let (records_tx, records_rx) = mpsc::unbounded_channel::<(crate::decode::Decoded, Lease)>();
    // Under a quota, read ahead only what the next calls within the visibility can carry.
    let read_ahead = read_ahead(
        pipeline.api.budget(),
        visibility,
        settings.batch_max_records,
    );
    let (waiting_tx, waiting_rx) = watch::channel(0usize);
    let stop_receiving = CancellationToken::new();
    let stop_heartbeat = CancellationToken::new();

    let pollers: Vec<_> = (0..settings.pollers)
        .map(|_| {
            let poller = poll::Poller {
                pipeline: pipeline.clone(),
                holdings: holdings.clone(),
                decoder: decoder.clone(),
                capacity: capacity_permits.clone(),
                bytes: byte_permits.clone(),
                bytes_budget: settings.max_held_bytes,
                per_receive: capacity.min(10),
                records: records_tx.clone(),
                waiting: waiting_rx.clone(),
                read_ahead,
            };
            tokio::spawn(poller.run(stop_receiving.clone()))
        })
        .collect();
    drop(records_tx);
    let mut dispatch_task = tokio::spawn(dispatch::run(
        pipeline.clone(),
        batcher,
        records_rx,
        waiting_tx,
    ));
    let heartbeat_task = tokio::spawn(heartbeat::run(pipeline.clone(), stop_heartbeat.clone()));
    let overrun_task = tokio::spawn(overrun::watch(pipeline.clone(), stop_heartbeat.clone()));

    let watchdog_task = telemetry.systemd.watchdog_every().map(|every| {
        let telemetry = telemetry.clone();
        let stop = stop_heartbeat.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticker.tick() => telemetry.systemd.watchdog_tick(),
                    _ = stop.cancelled() => return,
                }
            }
        })
    });

    shutdown.await;
    telemetry.systemd.stopping();
    let deadline = Instant::now() + settings.drain_timeout;
    let work_deadline = deadline - release_reserve(settings.drain_timeout);
    tracing::info!(
        drain_timeout_ms = settings.drain_timeout.as_millis() as u64,
        "shutdown: stop receiving, flush, drain"
    );
    stop_receiving.cancel();
    let mut pollers = pollers;
    let receiving = futures::future::join_all(pollers.iter_mut());
    if tokio::time::timeout_at(work_deadline.into(), receiving)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached while a receive was under way; stopping it");
    }
    for poller in &pollers {
        poller.abort();
    }
    let drained = tokio::time::timeout_at(work_deadline.into(), &mut dispatch_task)
        .await
        .is_ok();
    if !drained {
        let abandoned = pipeline.open_jobs.snapshot();
        tracing::warn!(
            ?abandoned,
            ack_on = ?settings.ack_on,
            "drain timeout reached; releasing every message whose fate is still open, and no \
             longer following these jobs (job id, messages)"
        );
        dispatch_task.abort();
        let _ = dispatch_task.await;
    }
    // The heartbeat stops first: an extension landing after the final release would hide the
    // message again for a whole visibility timeout. It lets an orphan release under way finish.
    stop_heartbeat.cancel();
    let mut heartbeat_task = heartbeat_task;
    if tokio::time::timeout_at(deadline.into(), &mut heartbeat_task)
        .await
        .is_err()
    {
        heartbeat_task.abort();
    }
    let released_at_exit =
        match tokio::time::timeout_at(deadline.into(), pipeline.acks.release_everything()).await {
            Ok(count) => count,
            Err(_) => {
                let open = holdings.len();
                tracing::warn!(
                    open,
                    "drain timeout reached while releasing; these messages reappear when their \
                     visibility ends"
                );
                open
            }
        };
    if let Some(task) = watchdog_task {
        let _ = task.await;
    }
    overrun_task.abort();
    let _ = overrun_task.await;
    stop_server.cancel();
    let _ = server_task.await;
    let counts = telemetry.counts();
    tracing::info!(
        received = counts.received,
        deleted = counts.deleted,
        released = counts.released,
        released_at_exit,
        "worker stopped"
    );
    Ok(Summary {
        counts,
        released_at_exit,
    })
}
