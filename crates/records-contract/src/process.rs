//! What both binaries (and the tests) share about being a process: the shutdown signal and the
//! log subscriber. One copy each, so the worker and the emulator stop and log the same way.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed now, not when the future
/// is first polled (after start-up), so a signal during start-up ends the run with a clean drain
/// instead of killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |stream: Option<Signal>| async move {
            match stream {
                Some(mut stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {}
            () = wait(interrupt) => {}
        }
    }
}

/// Where log lines go, and in what shape. The level comes from `RUST_LOG`, else `default_level`.
#[derive(Clone, Copy, Debug)]
pub struct Logs {
    pub json: bool,
    pub default_level: &'static str,
    /// Through the test harness's capture instead of straight to stderr.
    pub test_writer: bool,
}

impl Logs {
    /// Text on stderr at `info`: the binaries' default.
    pub const TEXT: Logs = Logs {
        json: false,
        default_level: "info",
        test_writer: false,
    };

    pub fn init(self) {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(self.default_level));
        let writer = if self.test_writer {
            BoxMakeWriter::new(tracing_subscriber::fmt::TestWriter::new())
        } else {
            BoxMakeWriter::new(std::io::stderr)
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        // A second init (tests running several workers in one process) keeps the first subscriber.
        let _ = if self.json {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init()
        } else {
            builder.try_init()
        };
    }
}
