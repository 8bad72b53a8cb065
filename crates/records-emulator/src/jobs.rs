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
    timeline(&emu, &id, number, generation, queued, processing).await;
    // Finished or dropped, it no longer holds up the jobs created after it.
    emu.finished_turn(number, generation);
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
