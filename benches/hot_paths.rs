//! Micro-benchmarks of the worker's hot pure code: decoding and validating a message, batch
//! encoding with its byte accounting, and upsert coalescing. `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use records_contract::ObjectSchema;
use sqs_batch_worker::batch::FlushReason;
use sqs_batch_worker::batch::batcher::{Batcher, Limits};
use sqs_batch_worker::config::Operation;
use sqs_batch_worker::message::Received;
use sqs_batch_worker::source::decode::{Decoder, md5_hex};
use sqs_batch_worker::source::envelope::Envelope;
use test_rig::samples;

fn profiles() -> ObjectSchema {
    serde_json::from_str(
        r#"{"name":"profiles","matchKeys":["email"],"fields":[
            {"name":"email","type":"email","required":true},
            {"name":"first_name","type":"string","required":false},
            {"name":"last_name","type":"string","required":false},
            {"name":"tier","type":"string","required":false},
            {"name":"last_seen_at","type":"timestamp","required":false},
            {"name":"plan","type":"string","required":false},
            {"name":"country","type":"string","required":false},
            {"name":"score","type":"number","required":false}]}"#,
    )
    .expect("the profiles schema parses")
}

fn body(i: usize, emails: usize) -> String {
    format!(
        r#"{{"email":"bench-user-{:07}@example.com","first_name":"Ada","last_name":"Lovelace-----------------------------------------------------------------------------------------","tier":"gold","plan":"enterprise-annual","country":"NZ","score":{i},"last_seen_at":"2026-11-23T10:00:00Z"}}"#,
        i % emails
    )
}

fn decoder() -> Decoder {
    samples::decoder(profiles(), 5 << 20)
}

fn limits() -> Limits {
    Limits {
        max_records: 1_000,
        max_bytes: 5 << 20,
        max_wait: Duration::from_secs(5),
        operation: Operation::Upsert,
        match_key: "email".into(),
    }
}

/// The decoder of `--envelope sns` with a five-field mapping.
fn sns_mapped() -> Decoder {
    Decoder {
        envelope: Envelope::Sns,
        mapping: samples::mapping(samples::FIVE_FIELDS),
        ..decoder()
    }
}

/// Decodes `n` messages and pushes them through a batcher, flushing at the end.
fn batch_of(decoder: &Decoder, messages: &[Arc<Received>]) -> usize {
    let mut batcher = Batcher::new(limits());
    let now = Instant::now();
    let mut bytes = 0;
    for message in messages {
        let decoded = decoder
            .decode(&message.body, message.md5_of_body.as_deref(), None)
            .expect("valid");
        for batch in batcher.push(decoded, (**message).clone(), now) {
            bytes += batch.body().len();
        }
    }
    if let Some(batch) = batcher.flush(FlushReason::Shutdown) {
        bytes += batch.body().len();
    }
    bytes
}

fn messages(n: usize, emails: usize) -> Vec<Arc<Received>> {
    (0..n)
        .map(|i| {
            let body = body(i, emails);
            let mut message = Received::fake(&format!("m-{i}"), &body);
            message.md5_of_body = Some(md5_hex(body.as_bytes()));
            Arc::new(message)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let decoder = decoder();
    let one = messages(1, 1).remove(0);
    c.bench_function(
        "decode+validate one 300-byte message (md5, parse, schema)",
        |b| b.iter(|| decoder.decode(black_box(&one.body), one.md5_of_body.as_deref(), None)),
    );
    let sns = sns_mapped();
    let wrapped = samples::sns_profile(1);
    let md5 = md5_hex(wrapped.as_bytes());
    c.bench_function(
        "decode+validate one SNS notification through a 5-field mapping (md5, unwrap, value tree)",
        |b| b.iter(|| sns.decode(black_box(&wrapped), Some(&md5), None)),
    );
    let distinct = messages(1_000, 1_000);
    c.bench_function("batch 1,000 distinct records and encode the body", |b| {
        b.iter(|| batch_of(&decoder, black_box(&distinct)))
    });
    let repeated = messages(1_000, 50);
    c.bench_function(
        "coalesce 1,000 records onto 50 match keys and encode",
        |b| b.iter(|| batch_of(&decoder, black_box(&repeated))),
    );
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
