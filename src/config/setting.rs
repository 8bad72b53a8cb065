//! One setting's raw text after precedence, and the typed parsing of it: every error names the
//! setting in all three spellings (flag, environment variable, TOML key) and the fix.

use std::time::Duration;

use super::ConfigError;

/// A setting as the table (`table.rs`) describes it, with the text that won precedence.
#[derive(Clone, Debug)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    /// The TOML key.
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub text: Option<String>,
}

impl Setting {
    /// `--batch-max-records (env BATCH_MAX_RECORDS, TOML batch_max_records)`.
    pub fn describe(&self) -> String {
        format!("{} (env {}, TOML {})", self.flag, self.env, self.key)
    }

    pub fn invalid(
        &self,
        value: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            setting: self.describe(),
            value: value.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The text that was set, trimmed; empty counts as unset.
    pub fn given(&self) -> Option<String> {
        self.text
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    }

    pub fn required(&self, fix: &'static str) -> Result<String, ConfigError> {
        self.given().ok_or_else(|| ConfigError::Missing {
            setting: self.describe(),
            fix,
        })
    }

    /// The value, from the text or else the table's default.
    pub fn parse<T>(
        &self,
        parse: impl Fn(&str) -> Result<T, String>,
        fix: &str,
    ) -> Result<T, ConfigError> {
        let default = self.default.unwrap_or_default();
        self.parse_or(default, parse, fix)
    }

    /// The value, from the text or else `default` (a default computed from other settings).
    pub fn parse_or<T>(
        &self,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        fix: &str,
    ) -> Result<T, ConfigError> {
        let text = self.text.clone().unwrap_or_else(|| default.to_owned());
        parse(&text).map_err(|problem| self.invalid(&text, problem, fix))
    }

    /// The value when one was set; nothing otherwise.
    pub fn optional<T>(
        &self,
        parse: impl Fn(&str) -> Result<T, String>,
        fix: &str,
    ) -> Result<Option<T>, ConfigError> {
        match &self.text {
            Some(text) => parse(text)
                .map(Some)
                .map_err(|problem| self.invalid(text, problem, fix)),
            None => Ok(None),
        }
    }

    /// An http(s) URL without its trailing slash.
    pub fn url(&self, missing: &'static str, malformed: &str) -> Result<String, ConfigError> {
        let value = self.required(missing)?;
        if value.starts_with("http://") || value.starts_with("https://") {
            Ok(value.trim_end_matches('/').to_owned())
        } else {
            Err(self.invalid(&value, "not an http(s) URL", malformed))
        }
    }
}

/// A whole number from `low` to `high`.
pub fn count(low: usize, high: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |text| {
        let value = text
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("'{text}' is not a whole number"))?;
        within(low, high, value)
    }
}

pub fn within(low: usize, high: usize, value: usize) -> Result<usize, String> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between {low} and {high}"))
    }
}

/// A duration longer than zero and at most `max`. Every duration is bounded, so that no deadline
/// computed from one can overflow.
pub fn duration_up_to(max: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |text| {
        let value = records_contract::units::parse_duration(text)?;
        if value.is_zero() {
            Err("must be longer than zero".into())
        } else if value > max {
            Err(format!(
                "must be at most {}",
                humantime::format_duration(max)
            ))
        } else {
            Ok(value)
        }
    }
}

/// One of `choices`, each a spelling and its value.
pub fn one_of<T: Copy>(
    choices: &'static [(&'static str, T)],
) -> impl Fn(&str) -> Result<T, String> {
    move |text| {
        choices
            .iter()
            .find(|(spelling, _)| *spelling == text.trim())
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<_> = choices.iter().map(|(name, _)| *name).collect();
                format!("must be one of {}", names.join(", "))
            })
    }
}

/// A size such as `5MiB` from `low` to `high` bytes.
pub fn size_within(low: usize, high: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |text| {
        let bytes = records_contract::units::parse_size(text)?;
        within(low, high, bytes.min(u64::MAX >> 1) as usize)
    }
}
