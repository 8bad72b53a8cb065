//! The integration tests, one binary (so the crate links once): every module runs against a real
//! LocalStack SQS on loopback and the `records-emulator` over real HTTP. `common` is the rig
//! (`crates/test-rig`).

mod chaos;
use test_rig as common;
mod container;
mod deploy_stack;
mod emulator_contract;
mod envelopes;
mod fair_queues;
mod head_of_line;
mod held_messages;
mod localstack_sqs;
mod lose_nothing;
mod operator_commands;
mod operator_kit;
mod producers;
mod quotas;
mod round_two;
mod scale_out;
mod secrets_and_config;
mod shared_budget;
mod stale_values;
mod systemd_notify;
mod trust_no_peer;
mod worker_dlq;
mod worker_happy_path;
mod worker_lifecycle;
mod worker_retries;
