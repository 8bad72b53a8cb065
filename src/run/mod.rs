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

use crate::batch::Decoded;
use crate::batch::batcher::{Batcher, Limits};
use crate::config::{AckOn, Concurrency, Settings};
use crate::lease::{Lease, Ledger};
use crate::outage::Outage;
use crate::schema::SchemaHandle;
use crate::sink::api::RecordsApi;
use crate::sink::budget::Budget;
use crate::sink::concurrency::Slots;
use crate::sink::deliver::{Delivery, Policy};
use crate::sink::dispatch::{Backlog, Dispatch};
use crate::source::decode::Decoder;
use crate::source::heartbeat::Heartbeat;
use crate::source::poll::Poller;
use crate::source::sequence::Sequences;
use crate::source::settle::Settler;
use crate::sqs::Queue;
use crate::telemetry::{Counts, Telemetry, server};
pub use error::RunError;
use overrun::Watch;
use startup::Reached;
pub use startup::{RELEASE_CAP, match_key_fits, read_ahead};

/// What the worker did, for the exit log line.
#[derive(Debug)]
pub struct Summary {
    pub counts: Counts,
    pub released_at_exit: usize,
}

/// A started worker: every task runs and the telemetry server listens at `listen`. It keeps what
/// the drain needs: the settler and the ledger for the final release (the ledger also names the
/// open jobs), and the budget to save.
pub struct Running {
    pub listen: SocketAddr,
    pub telemetry: Arc<Telemetry>,
    settler: Arc<Settler>,
    ledger: Arc<Ledger>,
    budget: Arc<Budget>,
    ack_on: AckOn,
    drain_timeout: Duration,
    tasks: Tasks,
}

impl Running {
    /// The `--drain-timeout` it was started with: what `run` gives `shutdown` after the signal.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
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

/// The batcher of these settings, and the decoder that fits records to it: `run` uses both, and
/// `check --sample` the decoder, so that a sample meets the worker's own checks.
pub fn batcher_and_decoder(
    settings: &Settings,
    telemetry: Arc<Telemetry>,
    schema: SchemaHandle,
) -> (Batcher, Decoder) {
    let batcher = Batcher::new(Limits {
        max_records: settings.batch_max_records,
        max_bytes: settings.batch_max_bytes,
        max_wait: settings.batch_max_wait,
        operation: settings.operation,
        match_key: settings.match_key.clone(),
    });
    let decoder = Decoder {
        operation: settings.operation,
        unknown_fields: settings.unknown_fields,
        telemetry,
        match_key: settings.match_key.clone(),
        schema,
        max_record_bytes: batcher.max_record_bytes(),
        envelope: settings.envelope,
        mapping: Arc::new(settings.fields.clone()),
    };
    (batcher, decoder)
}

/// Checks the API and the queues, then starts the pipeline with the given SQS client.
pub async fn start(settings: Settings, client: aws_sdk_sqs::Client) -> Result<Running, RunError> {
    let telemetry = Arc::new(Telemetry::with_systemd());
    let budget = Arc::new(startup::budget(&settings, &client, &telemetry).await?);
    let api = RecordsApi::new(&settings, budget.clone(), telemetry.clone())
        .map_err(|source| RunError::Client { source })?;
    let source = Queue::new(client.clone(), settings.queue_url.clone())
        .with_message_attributes(&settings.message_attributes);
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
    log_start(&settings, reached.visibility, listen);
    let parts = Parts {
        api: Arc::new(api),
        budget,
        source,
        dlq,
        telemetry,
    };
    Ok(wire(&settings, parts, reached, server, stop_server, listen))
}

/// The handles `start` made before wiring: the API, the quota, both queues, telemetry.
struct Parts {
    api: Arc<RecordsApi>,
    budget: Arc<Budget>,
    source: Queue,
    dlq: Queue,
    telemetry: Arc<Telemetry>,
}

/// Builds the stages and starts their tasks, with every channel and bound in plain sight:
///
/// ```text
/// pollers ×--pollers --(records: unbounded mpsc)--> dispatcher --(a task per batch)--> deliveries
///    ^  bounded by: capacity (max-in-flight × batch-max-records messages), bytes (max-held-bytes),
///    |              read-ahead (under a quota), outage (the API is out)
///    +--(waiting: watch, messages waiting for a slot)-- dispatcher
/// deliveries: in flight ≤ slots (adaptive or fixed), each call paid by a budget ticket
/// settler <- pollers (undecodable) and deliveries (every fate); heartbeat and overrun on the side
/// ```
fn wire(
    settings: &Settings,
    parts: Parts,
    reached: Reached,
    server: JoinHandle<()>,
    stop_server: CancellationToken,
    listen: SocketAddr,
) -> Running {
    let Parts {
        api,
        budget,
        source,
        dlq,
        telemetry,
    } = parts;
    let visibility = reached.visibility;
    // Shared state: who holds which message, and what the sink tells the source.
    let ledger = Ledger::new(visibility);
    let schema = SchemaHandle::new(reached.schema);
    let outage = Arc::new(Outage::default());
    let draining = CancellationToken::new();
    // Bounds: never hold more messages than the in-flight batches can take, nor more bytes of
    // bodies than --max-held-bytes (docs/operations.md has the memory formula); under a quota,
    // read ahead only what the next calls within the visibility can carry.
    let capacity = settings.max_in_flight * settings.batch_max_records;
    let capacity_permits = Arc::new(Semaphore::new(capacity));
    let byte_permits = Arc::new(Semaphore::new(settings.max_held_bytes));
    let per_receive = capacity.min(10);
    let gathering = if settings.source_is_fifo() {
        Duration::ZERO
    } else {
        budget.gathering(settings.batch_max_wait)
    };
    let read_ahead = read_ahead(
        &budget,
        visibility,
        settings.batch_max_records,
        per_receive,
        gathering,
    );
    let slots = Slots::new(
        settings.max_in_flight,
        settings.concurrency == Concurrency::Adaptive,
        telemetry.clone(),
    );
    // Channels: records from the source to the sink, and how many wait for a slot back.
    let (records_tx, records_rx) = mpsc::unbounded_channel::<(Decoded, Lease)>();
    let (waiting_tx, waiting_rx) = watch::channel(Backlog::default());

    let settler = Arc::new(Settler {
        source: Arc::new(source.clone()),
        dlq: Arc::new(dlq),
        ledger: ledger.clone(),
        telemetry: telemetry.clone(),
        release_base: settings.release_backoff,
        release_cap: RELEASE_CAP,
        dlq_max_bytes: reached.dlq_max_bytes,
        envelope: settings.envelope,
    });
    let (batcher, decoder) = batcher_and_decoder(settings, telemetry.clone(), schema.clone());
    let decoder = Arc::new(decoder);
    let sequences = Arc::new(Sequences::default());
    let stop_receiving = draining.clone();
    let pollers = (0..settings.pollers)
        .map(|_| {
            let poller = Poller {
                queue: source.clone(),
                settler: settler.clone(),
                ledger: ledger.clone(),
                outage: outage.clone(),
                sequences: sequences.clone(),
                telemetry: telemetry.clone(),
                visibility: settings.visibility_timeout,
                receive_wait: settings.receive_wait,
                decoder: decoder.clone(),
                capacity: capacity_permits.clone(),
                bytes: byte_permits.clone(),
                bytes_budget: settings.max_held_bytes,
                per_receive,
                records: records_tx.clone(),
                waiting: waiting_rx.clone(),
                read_ahead,
            };
            tokio::spawn(poller.run(stop_receiving.clone()))
        })
        .collect();
    drop(records_tx);
    let delivery = Arc::new(Delivery {
        api,
        settler: settler.clone(),
        budget: budget.clone(),
        slots: slots.clone(),
        ledger: ledger.clone(),
        schema,
        outage,
        draining,
        telemetry: telemetry.clone(),
        policy: Policy {
            fifo: settings.source_is_fifo(),
            ack_on: settings.ack_on,
            operation: settings.operation,
            job_timeout: settings.job_timeout,
            auth_retry: settings.auth_retry,
            release_base: settings.release_backoff,
            release_cap: RELEASE_CAP,
        },
    });
    let dispatch = Dispatch {
        delivery,
        budget: budget.clone(),
        slots,
        telemetry: telemetry.clone(),
        fifo: settings.source_is_fifo(),
        gathering,
    };
    let heartbeat = Heartbeat {
        queue: Arc::new(source.clone()),
        ledger: ledger.clone(),
        settler: settler.clone(),
        telemetry: telemetry.clone(),
    };
    let overrun = Watch {
        queue: source,
        budget: budget.clone(),
        telemetry: telemetry.clone(),
        batch_max_records: settings.batch_max_records,
    };
    let stop_heartbeat = CancellationToken::new();
    let tasks = Tasks {
        pollers,
        dispatch: tokio::spawn(dispatch.run(batcher, records_rx, waiting_tx)),
        heartbeat: tokio::spawn(heartbeat.run(stop_heartbeat.clone())),
        overrun: tokio::spawn(overrun::watch(overrun, stop_heartbeat.clone())),
        watchdog: watchdog(&telemetry, stop_heartbeat.clone()),
        server,
        stop_receiving,
        stop_heartbeat,
        stop_server,
    };
    Running {
        listen,
        telemetry,
        settler,
        ledger,
        budget,
        ack_on: settings.ack_on,
        drain_timeout: settings.drain_timeout,
        tasks,
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
