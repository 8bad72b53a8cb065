//! records-contract: what the worker and `records-emulator` share, so that neither depends on the
//! other. The wire contract of the Records API (`wire`, re-exported at the root), the units and
//! quotas that flags and TOML spell (`units`, `quota`), and the process conventions of both
//! binaries (`process`).

pub mod process;
pub mod quota;
pub mod units;
pub mod wire;

pub use wire::*;
