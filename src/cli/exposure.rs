//! What `check` says about the worker's exposure (docs/security.md): a token sent in clear text,
//! an unauthenticated metrics port beyond loopback, and a `--state-dir` that others can write.

use crate::config::{Settings, sends_token_in_clear};

/// The one line that says all is well, or the warnings, each with its fix.
pub fn exposure(settings: &Settings) -> Result<String, Vec<String>> {
    let mut warnings = Vec::new();
    let mut warn = |warning: String| warnings.push(warning);
    if sends_token_in_clear(&settings.api_url) {
        // Only reachable with --allow-insecure-http: resolving the settings refuses it otherwise.
        warn(format!(
            "security: --allow-insecure-http is set and --api-url {} is plain http:// outside \
             loopback; the bearer token crosses the network in clear text. Fix: use https://",
            settings.api_url
        ));
    }
    if !settings.listen.ip().is_loopback() {
        warn(format!(
            "security: --listen {} serves /metrics and /readyz without authentication beyond this \
             host. Fix: expose it only to the scraper (a security group, a network policy), or \
             bind 127.0.0.1 when nothing scrapes it",
            settings.listen
        ));
    }
    if let Some((dir, problem)) = settings
        .state_dir
        .as_ref()
        .and_then(|dir| Some((dir, writable_by_others(dir)?)))
    {
        warn(format!(
            "security: --state-dir {}: {problem}. Fix: chmod 700 it (the worker's user only)",
            dir.display()
        ));
    }
    if warnings.is_empty() {
        Ok(
            "security: token only to --api-url's origin over https or loopback; metrics on \
            loopback"
                .into(),
        )
    } else {
        Err(warnings)
    }
}

/// Why others could plant or replace files in `dir`, if they can.
fn writable_by_others(dir: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| format!("its mode is {:o}: others can write there", mode & 0o7777))
}
