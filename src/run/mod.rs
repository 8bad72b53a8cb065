//! `run`: start-up checks, the pipeline's tasks, and the drain on shutdown: stop receiving, flush
//! the buffer, finish in-flight work by the deadline, release whatever is still open.
//!
//! `start` returns a `Running` handle once every task runs and the telemetry server listens;
//! `Running::shutdown(deadline)` drains (`drain.rs`). `run` is the two around a shutdown future.

mod drain;
mod error;
pub mod overrun;
pub mod startup;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::batcher::{Batcher, Limits};
use crate::config::{AckOn, Concurrency, Settings};
use crate::lease::{Lease, Ledger};
use crate::pipeline::Pipeline;
use crate::sink::api::RecordsApi;
use crate::sink::concurrency::Slots;
use crate::sink::dispatch;
use crate::source::decode::{Decoded, Decoder, SchemaHandle};
use crate::source::settle::Acks;
use crate::source::{heartbeat, poll};
use crate::sqs::Queue;
use crate::telemetry::{Counts, Telemetry, server};
pub use error::RunError;
use startup::Reached;
pub use startup::{RELEASE_CAP, match_key_fits, read_ahead};

/// What the worker did, for the exit log line.
#[derive(Debug)]
pub struct Summary {
    pub counts: Counts,
    pub released_at_exit: usize,
}

/// A started worker: every task runs and the telemetry server listens at `listen`.
pub struct Running {
    pub listen: SocketAddr,
    pub telemetry: Arc<Telemetry>,
    pipeline: Arc<Pipeline>,
    ledger: Arc<Ledger>,
    tasks: Tasks,
}

impl Running {
    /// The `--drain-timeout` it was started with: what `run` gives `shutdown` after the signal.
    pub fn drain_timeout(&self) -> Duration {
        self.pipeline.settings.drain_timeout
    }
}

/// The pipeline's tasks and what stops each.
struct Tasks {
    pollers: Vec<JoinHandle<()>>,
    dispatch: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    overrun: JoinHandle<()>,
    watchdog: Option<JoinHandle<()>>,
    server: JoinHandle<()>,
    stop_receiving: CancellationToken,
    stop_heartbeat: CancellationToken,
    stop_server: CancellationToken,
}

/// Runs with an SQS client from the standard AWS chain until `shutdown` resolves, then drains
/// within `--drain-timeout`.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, RunError> {
    let running = start(settings, crate::sqs::connect().await).await?;
    shutdown.await;
    let deadline = Instant::now() + running.drain_timeout();
    Ok(running.shutdown(deadline).await)
}

/// Checks the API and the queues, then starts the pipeline with the given SQS client.
pub async fn start(settings: Settings, client: aws_sdk_sqs::Client) -> Result<Running, RunError> {
    let settings = Arc::new(settings);
    let telemetry = Arc::new(Telemetry::with_systemd());
    let budget = Arc::new(startup::budget(&settings, &client, &telemetry)?);
    let api = RecordsApi::new(&settings, budget, telemetry.clone())
        .map_err(|source| RunError::Client { source })?;
    let source = Queue::new(client.clone(), settings.queue_url.clone());
    let dlq = Queue::new(client, settings.dlq_url.clone());
    let reached = startup::reach(&settings, &api, &source, &dlq).await?;
    telemetry.api_reached();
    if settings.source_is_fifo() && settings.ack_on == AckOn::Accepted {
        tracing::warn!(
            "FIFO source with --ack-on accepted: after a crash, a job accepted before it may \
             finish after a later batch's job and reorder its group. Fix: --ack-on completed \
             keeps every group in order"
        );
    }
    let listener = server::bind(settings.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen,
            source,
        })?;
    let listen = listener
        .local_addr()
        .map_err(|source| RunError::Telemetry { source })?;
    let stop_server = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        telemetry.clone(),
        stop_server.clone(),
    ));
    let visibility = reached.visibility;
    let ledger = Ledger::new(visibility);
    let (pipeline, decoder, batcher) =
        assemble(&settings, api, reached, source, dlq, &ledger, &telemetry);
    log_start(&settings, visibility, listen);
    let tasks = spawn(
        &pipeline,
        &ledger,
        decoder,
        batcher,
        visibility,
        server,
        stop_server,
    );
    Ok(Running {
        listen,
        telemetry,
        pipeline,
        ledger,
        tasks,
    })
}

/// The shared state of the stages, the decoder and the batcher.
fn assemble(
    settings: &Arc<Settings>,
    api: RecordsApi,
    reached: Reached,
    source: Queue,
    dlq: Queue,
    ledger: &Arc<Ledger>,
    telemetry: &Arc<Telemetry>,
) -> (Arc<Pipeline>, Arc<Decoder>, Batcher) {
    let batcher = Batcher::new(Limits {
        max_records: settings.batch_max_records,
        max_bytes: settings.batch_max_bytes,
        max_wait: settings.batch_max_wait,
        operation: settings.operation,
        match_key: settings.match_key.clone(),
    });
    let schema = SchemaHandle::new(reached.schema);
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
            source,
            dlq,
            ledger: ledger.clone(),
            telemetry: telemetry.clone(),
            release_base: settings.release_backoff,
            release_cap: RELEASE_CAP,
            dlq_max_bytes: reached.dlq_max_bytes,
        },
        schema,
        telemetry: telemetry.clone(),
        outage: Default::default(),
        open_jobs: Default::default(),
        draining: CancellationToken::new(),
        sequences: Default::default(),
        slots: Slots::new(
            settings.max_in_flight,
            settings.concurrency == Concurrency::Adaptive,
            telemetry.clone(),
        ),
    });
    (pipeline, decoder, batcher)
}

/// Starts the pollers, the dispatcher, the heartbeat, the overrun watch and the watchdog.
fn spawn(
    pipeline: &Arc<Pipeline>,
    ledger: &Arc<Ledger>,
    decoder: Arc<Decoder>,
    batcher: Batcher,
    visibility: Duration,
    server: JoinHandle<()>,
    stop_server: CancellationToken,
) -> Tasks {
    let settings = &pipeline.settings;
    // Backpressure: never hold more messages than the in-flight batches can take, nor more
    // bytes of bodies than --max-held-bytes (docs/operations.md has the memory formula).
    let capacity = settings.max_in_flight * settings.batch_max_records;
    let capacity_permits = Arc::new(Semaphore::new(capacity));
    let byte_permits = Arc::new(Semaphore::new(settings.max_held_bytes));
    let (records_tx, records_rx) = mpsc::unbounded_channel::<(Decoded, Lease)>();
    // Under a quota, read ahead only what the next calls within the visibility can carry.
    let read_ahead = read_ahead(
        pipeline.api.budget(),
        visibility,
        settings.batch_max_records,
    );
    let (waiting_tx, waiting_rx) = watch::channel(0usize);
    let stop_receiving = pipeline.draining.clone();
    let stop_heartbeat = CancellationToken::new();
    let pollers = (0..settings.pollers)
        .map(|_| {
            let poller = poll::Poller {
                pipeline: pipeline.clone(),
                ledger: ledger.clone(),
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
    Tasks {
        pollers,
        dispatch: tokio::spawn(dispatch::run(
            pipeline.clone(),
            batcher,
            records_rx,
            waiting_tx,
        )),
        heartbeat: tokio::spawn(heartbeat::run(pipeline.clone(), stop_heartbeat.clone())),
        overrun: tokio::spawn(overrun::watch(pipeline.clone(), stop_heartbeat.clone())),
        watchdog: watchdog(&pipeline.telemetry, stop_heartbeat.clone()),
        server,
        stop_receiving,
        stop_heartbeat,
        stop_server,
    }
}

/// Pings systemd's watchdog while the worker runs, when the unit asks for it.
fn watchdog(telemetry: &Arc<Telemetry>, stop: CancellationToken) -> Option<JoinHandle<()>> {
    let every = telemetry.systemd.watchdog_every()?;
    let telemetry = telemetry.clone();
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticker.tick() => telemetry.systemd.watchdog_tick(),
                _ = stop.cancelled() => return,
            }
        }
    }))
}

fn log_start(settings: &Settings, visibility: Duration, listen: SocketAddr) {
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
}
