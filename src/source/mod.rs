//! The source: the SQS side of the pipeline. Pollers receive, lease and decode (`poll`,
//! `decode`, with the producer's `envelope` and field `mapping`, `sequence`); the heartbeat keeps held messages invisible (`heartbeat`); the settler
//! carries out each message's fate: delete, release, or dead-letter (`settle`, `dlq`).

pub mod decode;
pub mod dlq;
pub mod envelope;
pub mod heartbeat;
pub mod mapping;
pub mod poll;
pub mod sequence;
pub mod settle;
