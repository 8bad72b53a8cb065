//! The operations endpoints: `/healthz` (alive), `/readyz` (SQS and the API reached, token
//! accepted) and `/metrics` (Prometheus text), served to anyone who can reach `--listen`.
//!
//! Every socket has a deadline (docs/security.md): a request's head must arrive within
//! `HEAD_TIMEOUT`, a connection lives at most `CONNECTION_LIFETIME`, at most `MAX_CONNECTIONS`
//! are open at once (one more is closed as soon as it is accepted), and a request with a body is
//! refused. A client that sends half a request and stops therefore costs one slot for a few
//! seconds, and never holds the drain.

use std::net::SocketAddr;
use std::sync::Arc;
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
/// The longest a connection stays open, busy or idle; Prometheus simply reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections open at once; a scraper, a health check and a person need a handful.
pub const MAX_CONNECTIONS: usize = 256;

pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

fn app(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(no_bodies))
        .with_state(telemetry)
}

/// Serves until `stop`; then closes every connection at once (a scrape in progress is cut).
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, stop: CancellationToken) {
    let app = app(telemetry.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(%error, "the telemetry server cannot accept a connection");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
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

/// The endpoints take no input: a request that announces a body is refused before it is read.
async fn no_bodies(request: Request, next: Next) -> Response {
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
    next.run(request).await
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
