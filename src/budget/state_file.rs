//! `--state-dir`: the local budget saved after every call, so that a restart does not hand the
//! new process a full bucket that the last one already spent. The file is small JSON, written
//! to a temporary file and renamed over the old one, so a crash of the process leaves either the
//! old state or the new one. It is not fsynced: the save sits between taking a token and sending
//! the call, and a sync's variable delay would eat the pacing margin; after a crash of the whole
//! machine the last seconds of spending may be forgotten. A file that cannot be read is treated as
//! an empty bucket: the conservative reading of "we do not know what was spent".

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const FILE: &str = "budget.json";

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    limits: Vec<SavedLimit>,
}

#[derive(Serialize, Deserialize)]
struct SavedLimit {
    limit: String,
    tokens: f64,
    at_unix_ms: u64,
}

pub struct StateFile {
    path: PathBuf,
}

/// What the last process left: tokens per limit label, and when.
pub struct Restored {
    limits: HashMap<String, (f64, u64)>,
    /// No file yet: the buckets start full, as without `--state-dir`.
    pub first_start: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Restored {
    /// The tokens a limit holds now: what was saved plus what refilled since (a clock that went
    /// back refills nothing). `None` when the limit was not saved.
    pub fn tokens(&self, label: &str, per_second: f64) -> Option<f64> {
        let (tokens, at) = *self.limits.get(label)?;
        let elapsed_s = unix_ms().saturating_sub(at) as f64 / 1000.0;
        Some(tokens + elapsed_s * per_second)
    }
}

impl StateFile {
    /// Checks that the directory exists and can be written.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| format!("cannot write there: {e}"))?;
        let _ = std::fs::remove_file(probe);
        Ok(Self {
            path: dir.join(FILE),
        })
    }

    pub fn load(&self) -> Restored {
        let limits = match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => saved
                    .limits
                    .into_iter()
                    .filter(|l| l.tokens.is_finite())
                    .map(|l| (l.limit, (l.tokens, l.at_unix_ms)))
                    .collect(),
                Err(error) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        %error,
                        "the saved budget is unreadable; every limit starts empty and refills"
                    );
                    HashMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %self.path.display(), "no saved budget: a first start");
                return Restored {
                    limits: HashMap::new(),
                    first_start: true,
                };
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot read the saved budget; every limit starts empty");
                HashMap::new()
            }
        };
        Restored {
            limits,
            first_start: false,
        }
    }

    /// Writes the buckets' tokens, atomically.
    pub fn save(&self, limits: &[(String, f64)]) -> Result<(), String> {
        let at_unix_ms = unix_ms();
        let saved = Saved {
            version: 1,
            limits: limits
                .iter()
                .map(|(limit, tokens)| SavedLimit {
                    limit: limit.clone(),
                    tokens: *tokens,
                    at_unix_ms,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_budget_comes_back_refilled_by_the_time_since() {
        let dir = std::env::temp_dir().join(format!("sbw-state-{}", uuid::Uuid::new_v4()));
        let file = StateFile::open(&dir).unwrap();
        assert!(file.load().tokens("6/min", 0.1).is_none());
        file.save(&[("6/min".into(), 0.25)]).unwrap();
        let tokens = file.load().tokens("6/min", 0.1).unwrap();
        assert!((0.25..0.3).contains(&tokens), "{tokens}");
        assert!(file.load().tokens("7/min", 0.1).is_none());
        std::fs::write(dir.join(FILE), b"{torn").unwrap();
        assert!(file.load().tokens("6/min", 0.1).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
