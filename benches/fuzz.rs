//! A generated-input fuzzer on stable Rust for the parsers that take arbitrary bytes from outside:
//! the message decoder (MD5, JSON, match key, schema, size), the producers' envelopes (SNS,
//! EventBridge) and field mappings with message attributes, the job-report parser (and the row
//! fates computed from a report), every API answer (read in random chunks against a ceiling, so
//! truncated and oversized bodies are covered, then through the envelope and the route's parser),
//! the `statusPath` resolver (whose every result must stay on the base's origin), and config
//! parsing (every `run` setting through clap and `Settings::resolve`). Inputs are seeded mutations of valid examples plus pure noise. Every input
//! must end in a defined outcome (Ok or a typed error) without a panic; the counts are printed.
//!
//! ```text
//! cargo bench --bench fuzz -- [--inputs 10000000] [--seed S]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use aws_sdk_sqs::types::MessageAttributeValue;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use records_contract::ObjectSchema;
use sqs_batch_worker::config::cli::{Cli, Command};
use sqs_batch_worker::config::{Settings, UnknownFields};
use sqs_batch_worker::sink::api::ceiling::{Capped, Ceiling};
use sqs_batch_worker::sink::api::client::{
    accepted_data, answer_data, job_status_from_body, metadata,
};
use sqs_batch_worker::sink::api::origin::{JobRoute, Origin};
use sqs_batch_worker::sink::jobs::row_fates;
use sqs_batch_worker::source::decode::{Decoder, md5_hex};
use sqs_batch_worker::source::envelope::Envelope;
use test_rig::samples;

const BODIES: &[&str] = &[
    r#"{"email":"a@example.com","first_name":"Ada","tier":"gold","score":12,"country":"NZ"}"#,
    r#"{"email":"b@example.com","score":123456789012345678901234567890}"#,
    r#"{"email":"c@example.com","first_name":null,"score":-1.5e300}"#,
    r#"{"email":"","first_name":"\u00e9\ud83d\ude00"}"#,
    r#"[1,2,3]"#,
    r#"{"email":"d@example.com","nested":{"a":[{"b":{}}]}}"#,
    // Whitespace, escapes and a repeated field: the decoder's fast path must match its value tree.
    "{ \"email\" : \"e@example.com\" ,\n \"tier\":\"a\\\"b\\\\c\\n\", \"tier\" : \"x\" }",
    r#"{"em\u0061il":"f@example.com","score":1E+5,"country":true,"first_name":"\u00e9"}"#,
];

const REPORTS: &[&str] = &[
    r#"{"data":{"jobId":"rjob_1","state":"completed","metrics":{"totalRows":3,"validRows":2,"invalidRows":1},"errors":[{"index":1,"code":"X","message":"bad","path":"records[1].email"}]}}"#,
    r#"{"data":{"state":"failed","error":{"code":"CDP_ETL.INTERNAL.JOB_FAILED"}}}"#,
    r#"{"data":{"state":"processing","metrics":{"invalidRows":18446744073709551615}}}"#,
    r#"{"data":{"state":"completed","errors":[{"path":"records[99999999999999999999].x"},{"index":-1}]}}"#,
];

/// API answers by status: a 202, an error naming a row, a bare 5xx, and the metadata.
const ANSWERS: &[(u16, &str)] = &[
    (
        202,
        r#"{"success":true,"data":{"operation":"upsert-batch","jobId":"rjob_1","state":"queued","acceptedRecords":3,"statusPath":"/records/profiles/jobs/rjob_1"},"correlationId":"c"}"#,
    ),
    (
        202,
        r#"{"success":true,"data":{"jobId":"rjob_2","statusPath":"http://evil.example:81/x"}}"#,
    ),
    (
        422,
        r#"{"success":false,"error":{"code":"CDP_ETL.VALIDATION.REQUEST_SCHEMA","message":"m","details":{"path":"records[17].x","value":"v"}}}"#,
    ),
    (503, ""),
    (
        200,
        r#"{"success":true,"data":{"name":"profiles","matchKeys":["email"],"fields":[{"name":"email","type":"email","required":true}]}}"#,
    ),
];

const STATUS_PATHS: &[&str] = &[
    "/records/profiles/jobs/rjob_1",
    "records/profiles/jobs/rjob_1",
    "http://127.0.0.1:8080/public/v1/records/profiles/jobs/rjob_1",
    "https://evil.example/x",
    "//evil.example/x",
    "@evil.example/x",
];

const BASE: &str = "http://127.0.0.1:8080/public/v1";

const SETTINGS: &[(&str, &[&str])] = &[
    ("--batch-max-records", &["1000", "0", "10001", "-1", "1e3"]),
    (
        "--batch-max-bytes",
        &["5MiB", "1KiB", "10MB", "1e30", "12 parsecs"],
    ),
    (
        "--batch-max-wait",
        &["5s", "1.9e19", "1e19s", "NaN", "-0", "250ms"],
    ),
    ("--pollers", &["4", "0", "257", "99999999999999999999"]),
    ("--max-in-flight", &["4", "1024", "1025"]),
    (
        "--rate-limit",
        &["2/s", "100/min", "1e-300", "1e300", "inf", "none", "0/h"],
    ),
    ("--ack-on", &["accepted", "completed", "never"]),
    ("--job-timeout", &["10m", "8d", "0s"]),
    ("--visibility-timeout", &["30s", "12h", "13h", "0"]),
    ("--drain-timeout", &["25s", "0s", "13h"]),
    ("--request-timeout", &["30s", "2h"]),
    ("--retry-attempts", &["8", "0", "101"]),
    ("--auth-retry", &["30s", "1e19"]),
    ("--max-held-bytes", &["64MiB", "1KiB", "5GiB"]),
    ("--release-backoff", &["10s", "0s", "2h"]),
    ("--listen", &["127.0.0.1:0", "[::1]:9090", "nowhere"]),
    ("--operation", &["upsert", "append", "delete"]),
    ("--match-key", &["email", "", " "]),
    ("--envelope", &["none", "sns", "eventbridge", "auto"]),
    (
        "--field",
        &[
            "email=/user/email",
            "tier=attribute:tier",
            "=/x",
            "a=/b,a=/c",
            "x=/a~2",
            "x=y",
            "x=",
        ],
    ),
    ("--message-attributes", &["All", "tenant,trace.*", ",", ""]),
    ("--unknown-fields", &["reject", "drop", "keep"]),
];

/// Producers' bodies: SNS notifications and EventBridge events around nested events, and bodies
/// that are neither.
const WRAPPED: &[&str] = &[
    r#"{"Type":"Notification","MessageId":"sns-1","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"{\"user\":{\"email\":\"a@example.com\",\"name\":\"Ada\"},\"plan\":{\"tier\":\"gold\"},\"score\":12,\"tags\":[\"x\"]}","MessageAttributes":{"tier":{"Type":"String","Value":"silver"},"score":{"Type":"Number","Value":"7"}}}"#,
    r#"{"Type":"Notification","MessageId":"sns-2","TopicArn":"t","Message":"{\"email\":\"b@example.com\",\"tier\":\"gold\"}"}"#,
    r#"{"Type":"SubscriptionConfirmation","MessageId":"sns-3","TopicArn":"t","Message":"confirm","SubscribeURL":"http://x"}"#,
    r#"{"version":"0","id":"ev-1","detail-type":"signup","source":"app","time":"2026-12-03T00:00:00Z","detail":{"user":{"email":"c@example.com","name":"Cy"},"plan":{"tier":"gold"},"score":1e5,"tags":[]}}"#,
    r#"{"version":"0","id":"ev-2","detail-type":"signup","source":"app","detail":{"email":"d@example.com","country":"NZ"}}"#,
    r#"{"email":"e@example.com","tier":"raw"}"#,
];

/// The producer settings the fuzzer tries: each envelope, with and without a five-field mapping.
fn producer_decoders() -> Vec<(String, Decoder)> {
    let five = [
        ("email", "/user/email"),
        ("first_name", "/user/name"),
        ("tier", "/plan/tier"),
        ("score", "attribute:score"),
        ("country", "/tags/0"),
    ];
    let mut decoders = Vec::new();
    for envelope in [Envelope::None, Envelope::Sns, Envelope::EventBridge] {
        for mapped in [false, true] {
            let decoder = Decoder {
                envelope,
                mapping: samples::mapping(if mapped { &five } else { &[] }),
                unknown_fields: if mapped {
                    UnknownFields::Reject
                } else {
                    UnknownFields::Drop
                },
                ..decoder()
            };
            let name = format!(
                "{}{}",
                envelope.name(),
                if mapped { "+5 fields" } else { "" }
            );
            decoders.push((name, decoder));
        }
    }
    decoders
}

/// Message attributes of every kind, or none.
fn attributes(rng: &mut StdRng) -> Option<HashMap<String, MessageAttributeValue>> {
    let value = |kind: &str, text: &str| {
        MessageAttributeValue::builder()
            .data_type(kind)
            .string_value(text)
            .build()
            .expect("the type is set")
    };
    match rng.random_range(0..4) {
        0 => None,
        1 => Some([("score".to_owned(), value("Number", "12.50"))].into()),
        2 => Some([("score".to_owned(), value("Number.int", "1e999x"))].into()),
        _ => Some(
            [(
                "score".to_owned(),
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0, 1]))
                    .build()
                    .expect("the type is set"),
            )]
            .into(),
        ),
    }
}

/// A mutated producer body, with attributes, through one envelope and mapping. An unmapped
/// payload is held byte for byte to the value tree, as a plain body is.
fn fuzz_producer(decoders: &[(String, Decoder)], rng: &mut StdRng) -> String {
    let (name, decoder) = &decoders[rng.random_range(0..decoders.len())];
    let seed = WRAPPED[rng.random_range(0..WRAPPED.len())];
    let bytes = mutate(rng, seed);
    let body = String::from_utf8_lossy(&bytes);
    let attributes = attributes(rng);
    let decoded = decoder.decode(&body, None, attributes.as_ref());
    if decoder.mapping.is_empty()
        && let Ok(unwrapped) = decoder.envelope.unwrap(&body)
    {
        match (&decoded, &decoder.thorough(&unwrapped.payload)) {
            (Ok(a), Ok(b)) => assert!(a.encoded == b.encoded && a.key == b.key, "{body}"),
            (Err(a), Err(b)) => assert_eq!(a.reason, b.reason, "{body}"),
            (a, b) => panic!("decode {a:?} but the value tree {b:?}: {body}"),
        }
    }
    if let Ok(record) = &decoded {
        let value: serde_json::Value =
            serde_json::from_str(&record.encoded).expect("a record is JSON");
        assert!(value.is_object(), "a record is an object: {body}");
    }
    match decoded {
        Ok(_) => format!("producer {name} ok"),
        Err(rejection) => format!("producer {name} {}", rejection.reason.as_str()),
    }
}

/// One mutation of `seed`: bytes flipped, cut, repeated, spliced or replaced with noise.
fn mutate(rng: &mut StdRng, seed: &str) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..rng.random_range(0..4) {
        let len = bytes.len().max(1);
        match rng.random_range(0..8) {
            0 => {
                let at = rng.random_range(0..len);
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 => bytes.truncate(rng.random_range(0..len)),
            2 => {
                let at = rng.random_range(0..=bytes.len());
                let noise: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(at..at, noise);
            }
            3 => {
                let at = rng.random_range(0..=bytes.len());
                let token = [
                    "{",
                    "}",
                    "[",
                    "]",
                    "\"",
                    ",",
                    ":",
                    "null",
                    "1e999",
                    "\\u0000",
                    "-",
                    "9999999999999999999999",
                ][rng.random_range(0..12)];
                bytes.splice(at..at, token.bytes());
            }
            4 => {
                let depth = rng.random_range(1..200);
                bytes = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
            }
            5 => bytes = (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            6 => {
                let other = BODIES[rng.random_range(0..BODIES.len())].as_bytes();
                let cut = rng.random_range(0..=bytes.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[rng.random_range(0..other.len())..]);
            }
            _ => {}
        }
    }
    bytes
}

fn schema() -> ObjectSchema {
    serde_json::from_str(
        r#"{"name":"profiles","matchKeys":["email"],"fields":[{"name":"email","type":"email","required":true},{"name":"first_name","type":"string"},{"name":"tier","type":"string"},{"name":"score","type":"number"},{"name":"country","type":"string"}]}"#,
    )
    .expect("the schema parses")
}

fn decoder() -> Decoder {
    samples::decoder(schema(), 4096)
}

fn tally(outcomes: &mut BTreeMap<String, u64>, name: String) {
    *outcomes.entry(name).or_default() += 1;
}

/// A mutated body through the decoder, held byte for byte to the value tree.
fn fuzz_decode(decoder: &Decoder, rng: &mut StdRng) -> String {
    let seed = BODIES[rng.random_range(0..BODIES.len())];
    let bytes = mutate(rng, seed);
    let body = String::from_utf8_lossy(&bytes);
    let md5 = match rng.random_range(0..3) {
        0 => Some(md5_hex(body.as_bytes())),
        1 => Some("0".repeat(32)),
        _ => None,
    };
    // The fast path must give what the value tree gives: the same bytes and key, or the same
    // reason.
    let fast = decoder.decode(&body, None, None);
    match (&fast, &decoder.thorough(&body)) {
        (Ok(a), Ok(b)) => assert!(a.encoded == b.encoded && a.key == b.key, "{body}"),
        (Err(a), Err(b)) => assert_eq!(a.reason, b.reason, "{body}"),
        (a, b) => panic!("decode {a:?} but the value tree {b:?}: {body}"),
    }
    match decoder.decode(&body, md5.as_deref(), None) {
        Ok(_) => "decode ok".to_owned(),
        Err(rejection) => format!("decode {}", rejection.reason.as_str()),
    }
}

/// A mutated job report through the status parser and the row fates.
fn fuzz_job_report(rng: &mut StdRng) -> String {
    let seed = REPORTS[rng.random_range(0..REPORTS.len())];
    let bytes = mutate(rng, seed);
    match job_status_from_body(&bytes) {
        Ok(status) => {
            let rows = rng.random_range(0..50);
            let fates = row_fates(rows, &status, "rjob_fuzz");
            assert_eq!(fates.len(), rows, "one fate per row");
            format!("job {:?}", status.state)
        }
        Err(_) => "job malformed".to_owned(),
    }
}

/// A mutated answer, sometimes padded past its ceiling, read in random chunks and then parsed as
/// its route would.
fn fuzz_answer(rng: &mut StdRng) -> String {
    let (status, seed) = ANSWERS[rng.random_range(0..ANSWERS.len())];
    let mut bytes = mutate(rng, seed);
    let ceiling = Ceiling {
        route: "fuzz",
        bytes: [16, 256, 4096, 1 << 20][rng.random_range(0..4)],
    };
    if rng.random_bool(0.1) {
        bytes.resize(ceiling.bytes + rng.random_range(1..64), b' ');
    }
    let announced = rng.random_bool(0.3).then_some(bytes.len() as u64);
    let Ok(mut body) = Capped::new(ceiling, announced) else {
        return "answer too large (announced)".to_owned();
    };
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rng.random_range(1..=rest.len()));
        if body.push(chunk).is_err() {
            return "answer too large".to_owned();
        }
        rest = tail;
    }
    let body = body.finish();
    assert_eq!(&body[..], &bytes[..], "the capped reader keeps every byte");
    let data = match answer_data(status, &body, None) {
        Ok(data) => data,
        Err(error) => return format!("answer {}", error.status_label()),
    };
    match status {
        202 => match accepted_data(data) {
            Ok(accepted) => {
                stays_on_the_base(&accepted.job_id, &accepted.status_path);
                "answer accepted".to_owned()
            }
            Err(_) => "answer 202 malformed".to_owned(),
        },
        _ => match metadata(data) {
            Ok(_) => "answer metadata".to_owned(),
            Err(_) => "answer metadata malformed".to_owned(),
        },
    }
}

/// Whatever the answer names, the job is polled on the base's origin.
fn stays_on_the_base(job_id: &str, status_path: &str) {
    let base = Origin::of(BASE).expect("the base parses");
    let route = JobRoute::resolve(&base, BASE, "profiles", job_id, status_path);
    if let Some(url) = route.url() {
        assert_eq!(
            Origin::of(url).as_ref(),
            Some(&base),
            "{status_path:?} / {job_id:?} -> {route:?}"
        );
        assert!(
            url.starts_with(BASE),
            "{status_path:?} / {job_id:?} -> {route:?}"
        );
    }
}

/// A mutated `statusPath` and job ID through the resolver.
fn fuzz_status_path(rng: &mut StdRng) -> String {
    let seed = STATUS_PATHS[rng.random_range(0..STATUS_PATHS.len())];
    let path = mutate(rng, seed);
    let job_id = mutate(rng, "rjob_1");
    let (path, job_id) = (
        String::from_utf8_lossy(&path),
        String::from_utf8_lossy(&job_id),
    );
    stays_on_the_base(&job_id, &path);
    let base = Origin::of(BASE).expect("the base parses");
    match JobRoute::resolve(&base, BASE, "profiles", &job_id, &path) {
        JobRoute::Named(_) => "status path named".to_owned(),
        JobRoute::Foreign { .. } => "status path foreign".to_owned(),
        JobRoute::Unusable { .. } => "status path unusable".to_owned(),
    }
}

/// A valid command line with one to three settings set to mutated values, through clap and
/// `Settings::resolve`.
fn fuzz_settings(rng: &mut StdRng) -> String {
    let mut argv: Vec<String> = [
        "sqs-batch-worker",
        "run",
        "--queue-url",
        "http://localhost:4566/000000000000/q",
        "--dlq-url",
        "http://localhost:4566/000000000000/dlq",
        "--api-url",
        "http://127.0.0.1:8080/public/v1",
        "--api-token",
        "t",
        "--object",
        "profiles",
    ]
    .map(str::to_owned)
    .to_vec();
    for _ in 0..rng.random_range(1..4) {
        let (flag, values) = SETTINGS[rng.random_range(0..SETTINGS.len())];
        let value = values[rng.random_range(0..values.len())];
        let value = if rng.random_bool(0.5) {
            String::from_utf8_lossy(&mutate(rng, value)).into_owned()
        } else {
            value.to_owned()
        };
        argv.push(flag.to_owned());
        argv.push(value);
    }
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Run(args),
        }) => match Settings::resolve(args) {
            Ok(_) => "config ok".to_owned(),
            Err(_) => "config error".to_owned(),
        },
        Ok(_) => "config other command".to_owned(),
        Err(_) => "config clap error".to_owned(),
    }
}

fn main() {
    let mut inputs: u64 = 10_000_000;
    let mut seed: u64 = 1;
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--inputs" => inputs = pair[1].parse().expect("--inputs N"),
            "--seed" => seed = pair[1].parse().expect("--seed S"),
            _ => {}
        }
    }
    // A panic is a finding: count it, print the input, and fail at the end.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = StdRng::seed_from_u64(seed);
    let decoder = decoder();
    let producers = producer_decoders();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut panics = 0u64;
    let started = Instant::now();
    for i in 0..inputs {
        let kind = i % 10;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match kind {
            0..=2 => fuzz_decode(&decoder, &mut rng),
            3 => fuzz_producer(&producers, &mut rng),
            4..=5 => fuzz_job_report(&mut rng),
            6..=7 => fuzz_answer(&mut rng),
            8 => fuzz_status_path(&mut rng),
            _ => fuzz_settings(&mut rng),
        }));
        match result {
            Ok(outcome) => tally(&mut outcomes, outcome),
            Err(_) => {
                panics += 1;
                tally(&mut outcomes, format!("PANIC in kind {kind}"));
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz: {inputs} inputs from seed {seed} in {:.1}s ({:.0} inputs/s), {panics} panics",
        elapsed.as_secs_f64(),
        inputs as f64 / elapsed.as_secs_f64()
    );
    for (outcome, count) in &outcomes {
        println!("  {outcome:<32} {count}");
    }
    std::process::exit(i32::from(panics > 0));
}
