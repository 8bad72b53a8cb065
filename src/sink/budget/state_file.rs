//! `--state-dir`: the local budget saved as each call is paid for, so that a restart does not hand
//! the new process a full bucket that the last one already spent.
//!
//! - One process per directory: `budget.lock` is locked (`flock`) for the life of the process, and
//!   a second process is refused at start-up, because two processes that share one saved budget
//!   would each spend the full quota.
//! - The file is written off the runtime, by one writer thread that always writes the latest
//!   state, so a stalled NFS or EFS mount delays the save, never the heartbeat or `/healthz`.
//! - Each save goes to a temporary file of this process, created exclusively (never through a
//!   link) with mode 0600, synced, and renamed over `budget.json`; the directory is synced after
//!   it. A crash of the process or the machine leaves the old state or the new one.
//! - A file that cannot be read is treated as an empty bucket: the conservative reading of "we do
//!   not know what was spent".

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::BudgetError;
use crate::telemetry::Telemetry;

const FILE: &str = "budget.json";
const LOCK: &str = "budget.lock";

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
    /// Held (locked) until the process exits.
    _lock: File,
    writer: Arc<Writer>,
}

/// The writer thread's mailbox: only the latest state is kept.
#[derive(Default)]
struct Writer {
    slot: Mutex<Slot>,
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    latest: Option<Vec<u8>>,
    writing: bool,
    closing: bool,
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
    /// Creates the directory if needed, takes its lock, and starts the writer thread.
    pub fn open(dir: &Path, telemetry: Arc<Telemetry>) -> Result<Self, BudgetError> {
        let unusable = |problem: &'static str| {
            move |source: std::io::Error| BudgetError::StateDir {
                dir: dir.display().to_string(),
                problem,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(unusable("cannot create it"))?;
        let lock_path = dir.join(LOCK);
        let lock = private(OpenOptions::new().read(true).write(true).create(true))
            .open(&lock_path)
            .map_err(unusable("cannot write budget.lock there"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BudgetError::StateDirInUse {
                    dir: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(unusable("cannot lock budget.lock")(e));
            }
        }
        sweep_leftovers(dir);
        let path = dir.join(FILE);
        let writer = Arc::new(Writer::default());
        let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let thread = (writer.clone(), path.clone(), dir.to_owned());
        std::thread::Builder::new()
            .name("sbw-state-dir".into())
            .spawn(move || {
                let (writer, path, dir) = thread;
                writer.run(|bytes| {
                    write_atomically(&dir, &tmp, &path, bytes)
                        .map_err(|e| format!("{}: {e}", path.display()))
                        .map_err(|problem| telemetry.budget_state_unsaved(&problem))
                });
            })
            .map_err(unusable("cannot start its writer thread"))?;
        Ok(Self {
            path,
            _lock: lock,
            writer,
        })
    }

    pub fn load(&self) -> Restored {
        let read = private(OpenOptions::new().read(true))
            .open(&self.path)
            .and_then(|mut file| {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes).map(|_| bytes)
            });
        let limits = match read {
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

    /// Hands the buckets' tokens to the writer thread; never waits for the disk.
    pub fn save(&self, limits: &[(String, f64)]) {
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
        if let Ok(bytes) = serde_json::to_vec(&saved) {
            self.writer.offer(bytes);
        }
    }

    /// Waits up to `within` for the last state handed over to reach the disk; true when it did.
    pub fn flush(&self, within: Duration) -> bool {
        self.writer.flushed(within)
    }

    /// `flush`, detached from `self`, for a blocking thread.
    pub fn flusher(&self) -> impl FnOnce(Duration) -> bool + Send + 'static {
        let writer = self.writer.clone();
        move |within| writer.flushed(within)
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.writer.offer_close();
    }
}

impl Writer {
    fn offer(&self, bytes: Vec<u8>) {
        self.lock().latest = Some(bytes);
        self.changed.notify_all();
    }

    /// Asks the thread to stop once the disk has the last state.
    fn offer_close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, mut write: impl FnMut(&[u8]) -> Result<(), ()>) {
        loop {
            let mut slot = self.lock();
            while slot.latest.is_none() && !slot.closing {
                slot = self.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            let Some(bytes) = slot.latest.take() else {
                return;
            };
            slot.writing = true;
            drop(slot);
            let _ = write(&bytes);
            self.lock().writing = false;
            self.changed.notify_all();
        }
    }

    fn flushed(&self, within: Duration) -> bool {
        let slot = self.lock();
        let (slot, _) = self
            .changed
            .wait_timeout_while(slot, within, |slot| slot.writing || slot.latest.is_some())
            .unwrap_or_else(|p| p.into_inner());
        !slot.writing && slot.latest.is_none()
    }
}

/// Options that create files for this user only and never open through a symbolic link.
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    options
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

/// `bytes` to `tmp` (this process's own name, created exclusively), synced, renamed over `path`,
/// and the directory synced so that the rename survives a crash of the machine.
fn write_atomically(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A leftover from a crashed process with our pid: removing it removes a link, not its target.
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = private(OpenOptions::new().write(true).create_new(true)).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    match File::open(dir)?.sync_all() {
        // Some filesystems (FUSE, 9p) cannot sync a directory; the rename itself went through.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => Ok(()),
        synced => synced,
    }
}

/// Temporary files that crashed processes left (`.budget.json.<pid>.tmp`); removed once the lock
/// makes this process the directory's only writer.
fn sweep_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!(".{FILE}.")) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("sbw-state-{}", uuid::Uuid::new_v4()))
    }

    fn open(dir: &Path) -> Result<StateFile, BudgetError> {
        StateFile::open(dir, Arc::new(Telemetry::new()))
    }

    #[test]
    fn a_saved_budget_comes_back_refilled_by_the_time_since() {
        let dir = scratch();
        let file = open(&dir).unwrap();
        assert!(file.load().tokens("6/min", 0.1).is_none());
        file.save(&[("6/min".into(), 0.25)]);
        assert!(file.flush(Duration::from_secs(5)));
        let tokens = file.load().tokens("6/min", 0.1).unwrap();
        assert!((0.25..0.3).contains(&tokens), "{tokens}");
        assert!(file.load().tokens("7/min", 0.1).is_none());
        std::fs::write(dir.join(FILE), b"{torn").unwrap();
        assert!(file.load().tokens("6/min", 0.1).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// On 8f017ce two processes on one directory both ran, wrote the same
    /// `budget.json.tmp`, and each spent the full quota.
    #[test]
    fn a_second_owner_of_the_directory_is_refused() {
        let dir = scratch();
        let first = open(&dir).unwrap();
        let error = open(&dir).err().expect("the lock is held").to_string();
        assert!(
            error.contains("--state-dir") && error.contains("--budget-queue"),
            "{error}"
        );
        drop(first);
        std::thread::sleep(Duration::from_millis(50));
        assert!(open(&dir).is_ok(), "the lock goes with its owner");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `File::create` followed a planted link, and the file had the umask's mode.
    #[test]
    fn saves_never_follow_a_link_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch();
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(FILE)).unwrap();
        let file = open(&dir).unwrap();
        assert!(
            file.load().tokens("1/s", 1.0).is_none(),
            "a link is not read"
        );
        file.save(&[("1/s".into(), 1.0)]);
        assert!(file.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let saved = std::fs::symlink_metadata(dir.join(FILE)).unwrap();
        assert!(saved.file_type().is_file());
        assert_eq!(saved.permissions().mode() & 0o777, 0o600);
        let lock = std::fs::metadata(dir.join(LOCK)).unwrap();
        assert_eq!(lock.permissions().mode() & 0o777, 0o600);
        drop(file);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
