//! `records-emulator`: serves the Records API contract locally. See `--help`.

use clap::Parser;
use sqs_batch_worker::emulator::{self, EmulatorConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = EmulatorConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "records-emulator: --listen {}: cannot listen there: {e}. Fix: pick a free port.",
                config.listen
            );
            return std::process::ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("records-emulator listening on http://{addr}/public/v1"),
        Err(e) => eprintln!("records-emulator: cannot read the bound address: {e}"),
    }
    match emulator::serve(config, listener, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(emulator::EmulatorError::Schemas(problem)) => {
            eprintln!("records-emulator: {problem}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("records-emulator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
