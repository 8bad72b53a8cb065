//! `records-emulator`: serves the Records API contract locally. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use records_contract::process::{Logs, shutdown_signal};
use records_emulator::{EmulatorConfig, EmulatorError};

#[tokio::main]
async fn main() -> ExitCode {
    let config = EmulatorConfig::parse();
    Logs::TEXT.init();
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(source) => {
            let error = EmulatorError::Bind {
                addr: config.listen.clone(),
                source,
            };
            eprintln!("records-emulator: {error}");
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("records-emulator listening on http://{addr}/public/v1"),
        Err(e) => eprintln!("records-emulator: cannot read the bound address: {e}"),
    }
    match records_emulator::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ EmulatorError::Schemas(_)) => {
            eprintln!("records-emulator: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("records-emulator: {error}");
            ExitCode::FAILURE
        }
    }
}
