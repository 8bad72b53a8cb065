//! Reading the TOML settings file (`--config FILE`); its keys come from the table (`table.rs`).

use std::path::Path;

use super::{ConfigError, FileSettings};

impl FileSettings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            problem: format!("cannot read it: {e}"),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    }
}
