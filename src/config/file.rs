//! Reading the TOML settings file (`--config FILE`); its keys come from the table (`table.rs`).
//! An error names the line and the setting, never the line's text: the file holds the token.

use std::path::Path;

use super::{ConfigError, FileSettings};

impl FileSettings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileUnreadable {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            problem: describe(&text, &e),
        })
    }
}

/// `line 3 (key batch_max_records): invalid string`: where, which setting, and what kind of
/// mistake, with anything quoted from the file left out unless it is a known key.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = line
        .and_then(|n| text.lines().nth(n - 1))
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"'))
        .filter(|key| FileSettings::KEYS.contains(key));
    let kind = error.message().lines().next().unwrap_or("unreadable");
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(" (key {key})"));
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out.push_str(&without_quotes(kind));
    out
}

/// The message with every quoted part (`…`, "…", '…') replaced by `…`, except known keys and
/// TOML punctuation (`"`, `]`, `=`).
fn without_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"', '\'']) {
        let quote = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push('…');
            return out;
        };
        let quoted = &after[..close];
        let punctuation = quoted.len() <= 3 && quoted.chars().all(|c| c.is_ascii_punctuation());
        if FileSettings::KEYS.contains(&quoted) || punctuation {
            out.push_str(&format!("`{quoted}`"));
        } else {
            out.push('…');
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tok-5ecret-in-toml";

    /// On 8f017ce a TOML syntax error printed the offending line, token and all.
    #[test]
    fn a_toml_error_names_the_line_and_key_but_never_the_text() {
        for (text, line, key) in [
            (
                format!("object = \"people\"\napi_token = \"{SECRET}\n"),
                2,
                Some("api_token"),
            ),
            (format!("api_token = {SECRET}\n"), 1, Some("api_token")),
            (
                format!("object = \"p\"\n\napi_token = '{SECRET}' x\n"),
                3,
                Some("api_token"),
            ),
            (format!("api_tokn = \"{SECRET}\"\n"), 1, None),
            (format!("api_token = [\"{SECRET}\"\n"), 1, Some("api_token")),
            (format!("[{SECRET}\n"), 1, None),
        ] {
            let error = toml::from_str::<FileSettings>(&text).unwrap_err();
            let said = describe(&text, &error);
            assert!(!said.contains(SECRET), "{said}");
            assert!(!said.contains("5ecret"), "{said}");
            assert!(
                said.starts_with(&format!("line {line}")),
                "{text:?}: {said}"
            );
            if let Some(key) = key {
                assert!(said.contains(key), "{said}");
            }
        }
    }
}
