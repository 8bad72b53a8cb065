//! Producer samples that the benches share: a decoder of the profiles object, the profile as a
//! nested event in an SNS notification, and the five-field mapping that reads it back.

use std::sync::Arc;

use records_contract::ObjectSchema;
use sqs_batch_worker::source::decode::Decoder;
use sqs_batch_worker::source::mapping::Mapping;

/// An upsert decoder on `email`, unwrapped and unmapped.
pub fn decoder(schema: ObjectSchema, max_record_bytes: usize) -> Decoder {
    Decoder::upsert_on_email(schema, max_record_bytes)
}

/// The mapping of `(field, source)` pairs.
pub fn mapping(fields: &[(&str, &str)]) -> Arc<Mapping> {
    let entries = fields
        .iter()
        .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
        .collect();
    Arc::new(Mapping::new(entries).expect("the mapping parses"))
}

/// The five fields of a profile in `sns_profile`'s event.
pub const FIVE_FIELDS: &[(&str, &str)] = &[
    ("email", "/user/email"),
    ("first_name", "/user/name/first"),
    ("tier", "/plan/tier"),
    ("country", "/geo/country"),
    ("score", "/score"),
];

/// `FIVE_FIELDS` as `--field` takes them.
pub fn field_flag(fields: &[(&str, &str)]) -> String {
    let entries: Vec<String> = fields.iter().map(|(n, s)| format!("{n}={s}")).collect();
    entries.join(",")
}

/// Profile `i` as a producer's nested event, wrapped in an SNS notification (a subscription
/// without raw delivery): about 640 bytes.
pub fn sns_profile(i: usize) -> String {
    let event = serde_json::json!({
        "user": {"email": format!("bench-user-{i:07}@example.com"), "name": {"first": "Ada", "last": "Lovelace"}},
        "plan": {"tier": "gold", "name": "enterprise-annual"},
        "geo": {"country": "NZ"},
        "score": i,
        "seen": "2026-11-23T10:00:00Z"
    });
    serde_json::json!({
        "Type": "Notification",
        "MessageId": format!("00000000-0000-4000-8000-{i:012}"),
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:profiles",
        "Message": event.to_string(),
        "Timestamp": "2026-11-23T10:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    })
    .to_string()
}
