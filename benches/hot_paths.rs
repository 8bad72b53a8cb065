//! Micro-benchmarks of the worker's hot pure code: decoding and validating a message, batch
//! encoding with its byte accounting, and upsert coalescing. `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use records_contract::ObjectSchema;
use sqs_batch_worker::batch::FlushReason;
use sqs_batch_worker::batch::batcher::{Batcher, Limits};
use sqs_batch_worker::config::{Operation, UnknownFields};
use sqs_batch_worker::message::Received;
use sqs_batch_worker::schema::SchemaHandle;
use sqs_batch_worker::source::decode::{Decoder, md5_hex};
use sqs_batch_worker::source::envelope::Envelope;
use sqs_batch_worker::source::mapping::Mapping;

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
    Decoder {
        operation: Operation::Upsert,
        unknown_fields: UnknownFields::Reject,
        telemetry: std::sync::Arc::new(sqs_batch_worker::telemetry::Telemetry::new()),
        match_key: "email".into(),
        schema: SchemaHandle::new(profiles()),
        max_record_bytes: 5 << 20,
        envelope: Default::default(),
        mapping: Default::default(),
    }
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
    let fields = [
        ("email", "/user/email"),
        ("first_name", "/user/name/first"),
        ("tier", "/plan/tier"),
        ("country", "/geo/country"),
        ("score", "/score"),
    ]
    .iter()
    .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
    .collect();
    Decoder {
        envelope: Envelope::Sns,
        mapping: Arc::new(Mapping::new(fields).expect("the mapping parses")),
        ..decoder()
    }
}

/// The profile of `body` as a nested event in an SNS notification (about 600 bytes).
fn sns_body() -> String {
    let event = r#"{"user":{"email":"bench-user-0000001@example.com","name":{"first":"Ada","last":"Lovelace"}},"plan":{"tier":"gold","name":"enterprise-annual"},"geo":{"country":"NZ"},"score":1,"seen":"2026-11-23T10:00:00Z"}"#;
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "00000000-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:profiles",
        "Message": event,
        "Timestamp": "2026-11-23T10:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    })
    .to_string()
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
    let wrapped = sns_body();
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
