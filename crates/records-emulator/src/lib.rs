//! `records-emulator`: a faithful in-memory Records API (docs/emulator.md) with async jobs,
//! idempotency, rate limits and seeded faults, for the tests, the demo and the benchmarks.
//! It depends on `records-contract` only; the worker reaches it as a dev-dependency, for its tests.

pub mod config;
mod envelope;
mod faults;
mod hostile;
mod jobs;
mod listener;
mod routes;
mod schema;
mod state;
mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::EmulatorConfig;
use listener::{ConnectionHandle, ResettableListener};
use state::Emulator;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{0}")]
    Schemas(String),
    #[error(
        "--listen {addr}: cannot listen there: {source}. Fix: pick a free port, or 127.0.0.1:0"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A running emulator: where it listens, and how to stop it.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: JoinHandle<Result<(), EmulatorError>>,
}

impl RunningEmulator {
    /// The base URL of the API, e.g. `http://127.0.0.1:8080/public/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}/public/v1", self.addr)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) -> Result<(), EmulatorError> {
        self.stop.cancel();
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Binds `config.listen` and serves in a background task.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener.local_addr().map_err(EmulatorError::Serve)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(serve(
        config,
        listener,
        async move { signal.cancelled().await },
    ));
    Ok(RunningEmulator { addr, stop, task })
}

/// Serves on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    config: EmulatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let schemas = match &config.schemas {
        Some(path) => schema::load(path).map_err(EmulatorError::Schemas)?,
        None => schema::defaults(),
    };
    let emulator = Arc::new(Emulator::new(config, schemas));
    let app = routes::router(emulator.clone());
    let stopping = emulator.shutdown.clone();
    axum::serve(
        ResettableListener(listener),
        app.into_make_service_with_connect_info::<ConnectionHandle>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stopping.cancel();
    })
    .await
    .map_err(EmulatorError::Serve)
}
