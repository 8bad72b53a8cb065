//! Operator subcommands other than `run`: `check`, `enqueue`, `redrive`, `healthcheck`.

pub mod check;
pub mod enqueue;
pub mod healthcheck;
pub mod redrive;
