//! Operator subcommands other than `run`.

pub mod enqueue;
pub mod healthcheck;
