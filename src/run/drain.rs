//! The drain on shutdown: stop receiving, flush the buffer, finish in-flight work before the
//! deadline (less a reserve for the last releases), then release whatever is still open. A
//! message whose fate is undecided becomes visible again; nothing is deleted on the way out.

use std::time::{Duration, Instant};

use super::{Running, Summary, Tasks};
use crate::config::AckOn;
use crate::lease::Ledger;

/// How much of the drain is kept for releasing what is still held at the end.
fn release_reserve(drain: Duration) -> Duration {
    (drain / 5).min(Duration::from_secs(5))
}

impl Running {
    /// Drains and stops every task; done by `deadline` (the releases under way when it passes
    /// are left to the visibility timeout).
    pub async fn shutdown(self, deadline: Instant) -> Summary {
        let Running {
            settler,
            ledger,
            budget,
            ack_on,
            mut tasks,
            telemetry,
            ..
        } = self;
        telemetry.systemd.stopping();
        let drain = deadline.saturating_duration_since(Instant::now());
        let work_deadline = deadline - release_reserve(drain);
        tracing::info!(
            drain_timeout_ms = drain.as_millis() as u64,
            "shutdown: stop receiving, flush, drain"
        );
        tasks.finish_work(&ledger, ack_on, work_deadline).await;
        // The heartbeat stops first: an extension landing after the final release would hide the
        // message again for a whole visibility timeout. It lets an orphan release under way finish.
        tasks.stop_heartbeat.cancel();
        if tokio::time::timeout_at(deadline.into(), &mut tasks.heartbeat)
            .await
            .is_err()
        {
            tasks.heartbeat.abort();
        }
        let released_at_exit =
            match tokio::time::timeout_at(deadline.into(), settler.release_everything()).await {
                Ok(count) => count,
                Err(_) => {
                    let open = ledger.len();
                    tracing::warn!(
                        open,
                        "drain timeout reached while releasing; these messages reappear when their \
                         visibility ends"
                    );
                    open
                }
            };
        budget
            .flush_state(deadline.saturating_duration_since(Instant::now()))
            .await;
        if let Some(task) = tasks.watchdog {
            let _ = task.await;
        }
        tasks.overrun.abort();
        let _ = tasks.overrun.await;
        // The telemetry server closes its connections at once; the deadline bounds it anyway, so
        // that no client of --listen can hold the process past --drain-timeout.
        tasks.stop_server.cancel();
        if tokio::time::timeout_at(deadline.into(), &mut tasks.server)
            .await
            .is_err()
        {
            tasks.server.abort();
        }
        let counts = telemetry.counts();
        tracing::info!(
            received = counts.received,
            deleted = counts.deleted,
            released = counts.released,
            released_at_exit,
            "worker stopped"
        );
        Summary {
            counts,
            released_at_exit,
        }
    }
}

impl Tasks {
    /// Stops the pollers and lets the dispatcher flush and finish its deliveries by `deadline`;
    /// past it, what is still open is abandoned to the final release.
    async fn finish_work(&mut self, ledger: &Ledger, ack_on: AckOn, deadline: Instant) {
        self.stop_receiving.cancel();
        let receiving = futures::future::join_all(self.pollers.iter_mut());
        if tokio::time::timeout_at(deadline.into(), receiving)
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached while a receive was under way; stopping it");
        }
        if self.pollers.iter().any(|poller| !poller.is_finished()) {
            ledger.close();
        }
        for poller in &self.pollers {
            poller.abort();
        }
        let drained = tokio::time::timeout_at(deadline.into(), &mut self.dispatch)
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                abandoned = ?ledger.open_jobs(),
                ack_on = ?ack_on,
                "drain timeout reached; releasing every message whose fate is still open, and no \
                 longer following these jobs (job id, messages)"
            );
            ledger.close();
            self.dispatch.abort();
            let _ = (&mut self.dispatch).await;
        }
    }
}
