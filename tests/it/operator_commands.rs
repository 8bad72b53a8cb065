//! The operator subcommands on LocalStack, through the real binary: `check` passes a sound setup
//! and names each problem, `redrive` moves DLQ messages back without losing one, and `healthcheck`
//! follows the worker's `/healthz`.

use crate::common;

use std::collections::HashMap;

use crate::common::rig::{Rig, profile};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

async fn run(args: &[String]) -> (Option<i32>, String) {
    let mut command = common::worker_binary();
    command.args(args);
    common::output_text(command).await
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn attach_redrive(rig: &Rig) {
    rig.attach_redrive(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_sound_setup() {
    let rig = Rig::new().await;
    attach_redrive(&rig).await;
    let mut args = strings(&["check"]);
    args.extend(rig.args(&[]));
    let (code, out) = run(&args).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("redrive policy: "), "{out}");
    assert!(out.contains("maxReceiveCount"), "{out}");
    assert!(out.contains("Records API: object 'profiles'"), "{out}");
    assert!(out.contains("0 problem(s)"), "{out}");
    assert!(
        !out.contains(common::rig::TOKEN),
        "the token is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_problem_and_exits_non_zero() {
    let rig = Rig::new().await;
    let mut args = strings(&["check"]);
    args.extend(rig.args(&[("--object", "unicorns")]));
    let (code, out) = run(&args).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PROBLEM: the source queue has no RedrivePolicy"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM: GET ") && out.contains("unicorns"),
        "{out}"
    );
    assert!(out.contains("2 problem(s)"), "{out}");

    let mut args = strings(&["check"]);
    args.extend(rig.args(&[("--batch-max-records", "0")]));
    let (code, out) = run(&args).await;
    assert_eq!(code, Some(2), "a configuration error: {out}");
    assert!(out.contains("--batch-max-records"), "{out}");
}

fn attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("type and value")
}

/// Puts `n` DLQ-shaped messages in the rig's DLQ: reason `invalid_row` for even i, else
/// `unknown_field`, with a producer attribute that must survive the trip.
async fn fill_dlq(rig: &Rig, n: usize) -> HashMap<String, &'static str> {
    let mut expected = HashMap::new();
    for start in (0..n).step_by(10) {
        let mut request = rig.sqs.send_message_batch().queue_url(&rig.dlq_url);
        for i in start..(start + 10).min(n) {
            let reason = if i % 2 == 0 {
                "invalid_row"
            } else {
                "unknown_field"
            };
            let body = profile(i);
            expected.insert(body.clone(), reason);
            request = request.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_attributes("dlq-reason", attribute(reason))
                    .message_attributes("dlq-error-message", attribute("bad"))
                    .message_attributes("producer", attribute("billing"))
                    .build()
                    .expect("entry"),
            );
        }
        let output = request.send().await.expect("SendMessageBatch");
        assert!(output.failed.is_empty());
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_a_thousand_dlq_messages_back_without_losing_one() {
    let rig = Rig::new().await;
    let expected = fill_dlq(&rig, 1_000).await;
    let redrive = |reason: Option<&str>| {
        let mut args = strings(&["redrive", "--from", &rig.dlq_url, "--to", &rig.queue_url]);
        if let Some(reason) = reason {
            args.extend(strings(&["--reason", reason]));
        }
        args
    };

    let (code, out) = run(&redrive(Some("invalid_row"))).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("moved 500 messages"), "{out}");
    let moved = rig.drain(&rig.queue_url).await;
    assert_eq!(moved.len(), 500);
    for entry in &moved {
        assert_eq!(
            expected.get(&entry.body),
            Some(&"invalid_row"),
            "body unchanged"
        );
        assert_eq!(
            entry.attr("producer"),
            Some("billing"),
            "other attributes kept"
        );
        assert_eq!(entry.attr("dlq-reason"), None, "dlq-* attributes dropped");
    }

    let (code, out) = run(&redrive(None)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("moved 500 messages"), "{out}");
    let rest = rig.drain(&rig.queue_url).await;
    assert_eq!(rest.len(), 500);
    assert!(
        rest.iter()
            .all(|e| expected.get(&e.body) == Some(&"unknown_field"))
    );
    assert_eq!(rig.depth(&rig.dlq_url).await, (0, 0), "the DLQ is empty");

    let (code, out) = run(&redrive(Some("no_such_reason"))).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("invalid_row_unidentified"),
        "lists the reasons: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_respects_max() {
    let rig = Rig::new().await;
    fill_dlq(&rig, 30).await;
    let args = strings(&[
        "redrive",
        "--from",
        &rig.dlq_url,
        "--to",
        &rig.queue_url,
        "--max",
        "12",
    ]);
    let (code, out) = run(&args).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rig.drain(&rig.queue_url).await.len(), 12);
    assert_eq!(rig.drain(&rig.dlq_url).await.len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_the_workers_healthz() {
    let rig = Rig::new().await;
    let worker = rig.start(&[]).await;
    let listen = worker.listen.to_string();
    let (code, out) = run(&strings(&["healthcheck", "--listen", &listen])).await;
    assert_eq!(code, Some(0), "{out}");
    worker.stop().await;
    let (code, out) = run(&strings(&["healthcheck", "--listen", &listen])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("did not answer"), "{out}");
}

/// `man` and `completions` come from the same clap definitions as `--help`: every `run` flag is
/// in both, and the token's value never is.
#[tokio::test]
async fn the_man_page_and_completions_name_every_run_flag() {
    let secret = "man-page-secret-41c9";
    let output = |args: &'static [&'static str]| async move {
        let output = common::worker_binary()
            .args(args)
            .env("RECORDS_API_TOKEN", secret)
            .output()
            .await
            .expect("the binary runs");
        assert!(output.status.success(), "{args:?} exits 0");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let man = output(&["man"]).await;
    let bash = output(&["completions", "bash"]).await;
    assert!(
        man.contains(".TH sqs-batch-worker 1"),
        "a roff page: {}",
        &man[..200.min(man.len())]
    );
    for flag in [
        "queue-url",
        "batch-max-records",
        "rate-limit",
        "worker-threads",
        "drain-timeout",
    ] {
        assert!(
            man.contains(&format!("\\-\\-{}", flag.replace('-', "\\-"))),
            "man names --{flag}"
        );
        assert!(
            bash.contains(&format!("--{flag}")),
            "bash completion names --{flag}"
        );
    }
    assert!(
        !man.contains(secret) && !bash.contains(secret),
        "no token value"
    );
}
