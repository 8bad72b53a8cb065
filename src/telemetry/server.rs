//! The operations endpoints: `/healthz` (alive), `/readyz` (SQS and the API reached, token
//! accepted) and `/metrics` (Prometheus text), served to anyone who can reach `--listen`.
//!
//! Every socket has a deadline (docs/security.md): a request's head must arrive within
//! `HEAD_TIMEOUT`, its answer is ready within `REQUEST_TIMEOUT`, a connection lives at most
//! `CONNECTION_LIFETIME`, one address holds at most `MAX_PER_PEER` connections and the addresses
//! beyond loopback at most `MAX_CONNECTIONS` together (one more is closed as soon as it is
//! accepted), and a request with a body is refused. A client that sends half a request and stops
//! therefore costs one slot for a few seconds and never holds the drain; and no remote client can
//! take the slots a health check on loopback needs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Telemetry;

/// The time a client has to send a request's head (the request line and the headers).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request waits for its answer (they are rendered from memory, in microseconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection stays open, busy or idle; Prometheus simply reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections from beyond loopback open at once; a scraper, a probe and a person need a handful.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one address may hold.
pub const MAX_PER_PEER: usize = 32;

pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

fn app(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(guard))
        .with_state(telemetry)
}

/// Serves until `stop`; then closes every connection at once (a scrape in progress is cut).
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, stop: CancellationToken) {
    let app = app(telemetry.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if out_of_resources(&error) => {
                // Out of file descriptors or memory: wait for some to be freed.
                tracing::warn!(%error, "the telemetry server cannot accept a connection");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            // One connection failed (reset or aborted before it was accepted): the next may not.
            Err(_) => continue,
        };
        let Some(slot) = Slot::take(&slots, &peers, peer.ip()) else {
            telemetry.metrics_connection_refused();
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// What one connection holds: a place in its address's count, and (beyond loopback) a permit.
struct Slot {
    peers: Arc<Peers>,
    ip: IpAddr,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

impl Slot {
    fn take(slots: &Arc<Semaphore>, peers: &Arc<Peers>, ip: IpAddr) -> Option<Self> {
        // `[::]` binds see IPv4 clients as `::ffff:a.b.c.d`.
        let permit = if ip.to_canonical().is_loopback() {
            None
        } else {
            Some(slots.clone().try_acquire_owned().ok()?)
        };
        let mut open = peers.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Self {
            peers: peers.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

fn out_of_resources(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The endpoints take no input: a request that announces a body is refused before it is read;
/// and every answer is ready within `REQUEST_TIMEOUT`.
async fn guard(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if announced {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "these endpoints take no body\n",
        )
            .into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response(),
    }
}

async fn readyz(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    match telemetry.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {problem}\n"),
        ),
    }
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry.render(),
    )
}
