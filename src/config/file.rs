//! The TOML settings file (`--config FILE`): the same settings as the flags, keys spelled with `_`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// Every key is optional; unknown keys are an error so that a typo does not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    pub api_url: Option<String>,
    pub api_token: Option<String>,
    pub api_token_file: Option<String>,
    pub object: Option<String>,
    pub operation: Option<String>,
    pub match_key: Option<String>,
    pub batch_max_records: Option<toml::Value>,
    pub batch_max_bytes: Option<toml::Value>,
    pub batch_max_wait: Option<toml::Value>,
    pub pollers: Option<toml::Value>,
    pub worker_threads: Option<toml::Value>,
    pub max_in_flight: Option<toml::Value>,
    pub rate_limit: Option<toml::Value>,
    pub concurrency: Option<String>,
    pub state_dir: Option<String>,
    pub budget_queue: Option<String>,
    pub ack_on: Option<String>,
    pub job_timeout: Option<toml::Value>,
    pub visibility_timeout: Option<toml::Value>,
    pub drain_timeout: Option<toml::Value>,
    pub listen: Option<String>,
    pub log_format: Option<String>,
    pub request_timeout: Option<toml::Value>,
    pub retry_attempts: Option<toml::Value>,
    pub auth_retry: Option<toml::Value>,
    pub max_held_bytes: Option<toml::Value>,
    pub release_backoff: Option<toml::Value>,
}

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

/// A TOML scalar as the text a flag would carry: `1000`, `"5MiB"` and `2.5` all work.
pub fn scalar(value: Option<toml::Value>) -> Option<String> {
    value.map(|value| match value {
        toml::Value::String(text) => text,
        other => other.to_string(),
    })
}
