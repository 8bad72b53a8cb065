//! Following a job to its end, and turning a completed job's report into each row's fate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::outcome::{Fate, Reason, Rejection};
use crate::sink::api::classify::row_index;
use crate::sink::api::{Accepted, ApiError, JobState, JobStatus, Records};
use crate::telemetry::Telemetry;

pub enum JobEnd {
    Completed(JobStatus),
    Failed(String),
    /// The API stopped knowing the job (404 past `UNKNOWN_JOB_GRACE`): it may or may not have
    /// committed.
    Unknown(String),
    TimedOut,
}

/// What `--job-timeout` means for this job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overdue {
    /// Give up: the rows go to the DLQ as `job_timeout` (standard queues).
    GiveUp,
    /// Keep following it, with a warning: a FIFO group must not run ahead of a job whose outcome
    /// is unknown, since the late job would overwrite the group's newer values.
    KeepFollowing,
}

const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(5);
/// How long a job the API just accepted may answer 404 before the worker believes it is gone. A
/// job store that lags its 202 (a replica, a cache) answers 404 at first, and reading that as
/// "nothing committed" would send the batch again.
pub const UNKNOWN_JOB_GRACE: Duration = Duration::from_secs(30);

/// Polls `statusPath` with backoff until the job is terminal or `timeout` passes.
pub async fn track(
    api: &dyn Records,
    telemetry: &Telemetry,
    accepted: &Accepted,
    timeout: Duration,
    overdue: Overdue,
) -> JobEnd {
    let started = Instant::now();
    let mut deadline = Some(started.checked_add(timeout).unwrap_or(started));
    let mut delay = FIRST_POLL;
    let mut unknown_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(at) = deadline
            && now >= at
        {
            telemetry.job_poll("timeout");
            if overdue == Overdue::GiveUp {
                return JobEnd::TimedOut;
            }
            tracing::warn!(
                job_id = accepted.job_id,
                ?timeout,
                "the job is still not terminal after --job-timeout; its FIFO groups wait for it \
                 (a later batch of theirs would be overwritten by this one). Fix: find the job in \
                 the API; the worker follows it until it ends"
            );
            deadline = None;
        }
        let wait = deadline.map_or(delay, |at| delay.min(at - now));
        tokio::time::sleep(wait).await;
        delay = (delay.mul_f64(1.5)).min(MAX_POLL);
        match api.job(&accepted.job_url).await {
            Ok(status) => match status.state {
                JobState::Completed => {
                    telemetry.job_poll("completed");
                    return JobEnd::Completed(status);
                }
                JobState::Failed => {
                    telemetry.job_poll("failed");
                    return JobEnd::Failed("the job ended failed; no row was committed".into());
                }
                JobState::Queued | JobState::Processing => {
                    telemetry.job_poll("pending");
                    unknown_since = None;
                }
                JobState::Unknown(state) => {
                    telemetry.job_poll("unknown_state");
                    unknown_since = None;
                    tracing::warn!(
                        job_id = accepted.job_id,
                        state,
                        "the job reports a state the contract does not name; read as still \
                         running until --job-timeout"
                    );
                }
            },
            Err(ApiError::Status { status: 404, .. }) => {
                telemetry.job_poll("unknown_job");
                let since = *unknown_since.get_or_insert_with(Instant::now);
                // A FIFO group waits longer: a lost job that still commits after the group moved
                // on would overwrite its newer values.
                let grace = match overdue {
                    Overdue::GiveUp => UNKNOWN_JOB_GRACE,
                    Overdue::KeepFollowing => UNKNOWN_JOB_GRACE.max(timeout),
                };
                if since.elapsed() >= grace {
                    return JobEnd::Unknown(format!(
                        "the API did not know the job for {grace:?} (404); whether it committed \
                         is unknown"
                    ));
                }
                tracing::warn!(
                    job_id = accepted.job_id,
                    "the job is unknown (404); polling on"
                );
            }
            Err(error) => {
                telemetry.job_poll("error");
                tracing::warn!(%error, job_id = accepted.job_id, "job poll failed; polling on");
            }
        }
    }
}

/// Each row's fate from a completed job: rows named in `errors` are `invalid_row`; when the job
/// counted more invalid rows than it named, every row it did not name is `invalid_row_unidentified`
/// (it may or may not have been committed, and nothing may be lost).
pub fn row_fates(rows: usize, status: &JobStatus, job_id: &str) -> Vec<Fate> {
    let mut named: HashMap<usize, Rejection> = HashMap::new();
    let mut unnamed_entries = false;
    for error in &status.errors {
        let index = error
            .index
            .or_else(|| error.path.as_deref().and_then(row_index))
            .filter(|index| *index < rows);
        let Some(index) = index else {
            unnamed_entries = true;
            continue;
        };
        let message = error
            .message
            .clone()
            .unwrap_or_else(|| "the API rejected this row".into());
        let message = match &error.path {
            Some(path) => format!("{message} ({path})"),
            None => message,
        };
        named.entry(index).or_insert_with(|| {
            Rejection::new(Reason::InvalidRow, message)
                .with_code(error.code.clone())
                .in_job(job_id, Some(index))
        });
    }
    // More invalid rows than named ones: every row not named may be one of them. Without a
    // count, an entry that names no row it could mean (index -1, out of range, none) says the
    // same. With a count that the named rows account for, such an entry is a summary.
    let unidentified = if status.invalid_rows_given {
        status.invalid_rows > named.len()
    } else {
        unnamed_entries
    };
    (0..rows)
        .map(|index| match named.remove(&index) {
            Some(rejection) => Fate::Rejected(rejection),
            None if unidentified => Fate::Rejected(
                Rejection::new(
                    Reason::InvalidRowUnidentified,
                    format!(
                        "the job counted {} invalid rows but named only {}; this row was not named",
                        status.invalid_rows,
                        status.errors.len()
                    ),
                )
                .in_job(job_id, Some(index)),
            ),
            None => Fate::Delivered,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::api::JobError;

    fn error(index: Option<usize>, path: Option<&str>) -> JobError {
        JobError {
            index,
            code: Some("CDP_ETL.VALIDATION.REQUEST_INVALID".into()),
            message: Some("bad".into()),
            path: path.map(str::to_owned),
        }
    }

    fn reasons(fates: &[Fate]) -> Vec<&'static str> {
        fates
            .iter()
            .map(|fate| match fate {
                Fate::Delivered => "ok",
                Fate::Retry => "retry",
                Fate::Rejected(r) => r.reason.as_str(),
            })
            .collect()
    }

    #[test]
    fn named_rows_are_invalid_and_the_rest_delivered() {
        let status = JobStatus {
            state: JobState::Completed,
            invalid_rows: 2,
            invalid_rows_given: true,
            errors: vec![error(Some(1), None), error(None, Some("records[3].email"))],
        };
        let fates = row_fates(4, &status, "rjob_1");
        assert_eq!(reasons(&fates), ["ok", "invalid_row", "ok", "invalid_row"]);
        let Fate::Rejected(rejection) = &fates[3] else {
            panic!()
        };
        assert_eq!(rejection.row_index, Some(3));
        assert_eq!(rejection.job_id.as_deref(), Some("rjob_1"));
    }

    #[test]
    fn unnamed_invalid_rows_send_every_unnamed_row_to_the_dlq() {
        let status = JobStatus {
            state: JobState::Completed,
            invalid_rows: 2,
            invalid_rows_given: true,
            errors: vec![error(Some(0), None)],
        };
        let fates = row_fates(3, &status, "rjob_1");
        assert_eq!(
            reasons(&fates),
            [
                "invalid_row",
                "invalid_row_unidentified",
                "invalid_row_unidentified"
            ]
        );
        let status = JobStatus {
            state: JobState::Completed,
            invalid_rows: 1,
            invalid_rows_given: true,
            errors: vec![],
        };
        assert_eq!(
            reasons(&row_fates(1, &status, "j")),
            ["invalid_row_unidentified"]
        );
    }

    /// An entry naming no row (index -1) makes the unnamed rows unidentified
    /// even when the report has no `invalidRows` count.
    #[test]
    fn an_entry_without_a_row_makes_the_unnamed_rows_unidentified() {
        let status = JobStatus {
            state: JobState::Completed,
            invalid_rows: 0,
            invalid_rows_given: false,
            errors: vec![error(Some(0), None), error(None, None)],
        };
        assert_eq!(
            reasons(&row_fates(2, &status, "j")),
            ["invalid_row", "invalid_row_unidentified"]
        );
        // With a count the named rows account for, the unnamed entry is a summary.
        let status = JobStatus {
            invalid_rows: 1,
            invalid_rows_given: true,
            ..status
        };
        assert_eq!(reasons(&row_fates(2, &status, "j")), ["invalid_row", "ok"]);
    }

    #[test]
    fn out_of_range_indexes_do_not_hide_rows() {
        let status = JobStatus {
            state: JobState::Completed,
            invalid_rows: 1,
            invalid_rows_given: true,
            errors: vec![error(Some(99), None)],
        };
        assert_eq!(
            reasons(&row_fates(2, &status, "j")),
            ["invalid_row_unidentified", "invalid_row_unidentified"]
        );
    }
}
