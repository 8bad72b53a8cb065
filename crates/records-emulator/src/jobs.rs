//! A job's own timeline: `queued`, then `processing`, then `completed` or `failed`, whether or not
//! anyone polls it. Rows are validated outside the state lock.

use std::sync::Arc;
use std::time::Duration;

use super::state::Emulator;
use super::validate::validate_row;

pub async fn run(
    emu: Arc<Emulator>,
    id: String,
    number: u64,
    generation: u64,
    queued: Duration,
    processing: Duration,
) {
    // Finished, dropped or panicked, it no longer holds up the jobs created after it.
    let _turn = Turn {
        emu: emu.clone(),
        number,
        generation,
    };
    timeline(&emu, &id, number, generation, queued, processing).await;
}

/// Gives up a job's turn (`job_order: created`) however its timeline ends.
struct Turn {
    emu: Arc<Emulator>,
    number: u64,
    generation: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.emu.finished_turn(self.number, self.generation);
    }
}

async fn timeline(
    emu: &Arc<Emulator>,
    id: &str,
    number: u64,
    generation: u64,
    queued: Duration,
    processing: Duration,
) {
    let pause = |duration| {
        let emu = emu.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => true,
                _ = emu.shutdown.cancelled() => false,
            }
        }
    };
    if !pause(queued).await {
        return;
    }
    let Some(input) = emu.start_job(id, generation) else {
        return;
    };
    if !pause(processing).await {
        return;
    }
    let Some(schema) = emu.schema(&input.object) else {
        return;
    };
    let outcomes = input
        .records
        .iter()
        .enumerate()
        .map(|(index, record)| validate_row(&schema, input.match_key.as_deref(), index, record))
        .collect();
    emu.turn_to_finish(number, generation).await;
    emu.finish_job(id, generation, outcomes);
}
