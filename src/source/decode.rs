//! Decoding a message body into a record: MD5 check, the producer's envelope off, the field
//! mapping (if any), then JSON object, match key, field names against the object's schema, and
//! size. A failure here goes to the DLQ without any API call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::types::MessageAttributeValue;

use md5::{Digest, Md5};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::envelope::Envelope;
use super::mapping::{Attributes, Mapping};
use crate::batch::Decoded;
use crate::config::{Operation, UnknownFields};
use crate::outcome::{Reason, Rejection};
use crate::schema::SchemaHandle;
use crate::telemetry::Telemetry;

pub struct Decoder {
    pub operation: Operation,
    /// `--unknown-fields`: reject the message, or drop the field (counted in `telemetry`).
    pub unknown_fields: UnknownFields,
    pub telemetry: Arc<Telemetry>,
    pub match_key: String,
    pub schema: SchemaHandle,
    /// The largest encoded record that fits in an otherwise empty batch.
    pub max_record_bytes: usize,
    /// `--envelope`: what wraps the record in a body.
    pub envelope: Envelope,
    /// `--field`: where each record field comes from; empty, the body is the record.
    pub mapping: Arc<Mapping>,
}

pub fn md5_hex(body: &[u8]) -> String {
    let digest = Md5::digest(body);
    let mut hex = String::with_capacity(32);
    for byte in digest {
        use std::fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether `expected` (hex, any case) is the MD5 of `body`, without formatting the digest.
fn md5_matches(body: &[u8], expected: &str) -> bool {
    let digest = Md5::digest(body);
    let hex = expected.as_bytes();
    let nibble = |c: u8| (c as char).to_digit(16);
    hex.len() == 32
        && digest.iter().enumerate().all(|(i, byte)| {
            match (nibble(hex[2 * i]), nibble(hex[2 * i + 1])) {
                (Some(high), Some(low)) => (high << 4 | low) as u8 == *byte,
                _ => false,
            }
        })
}

impl Decoder {
    /// An upsert decoder on `email` for unit tests and benches: unwrapped, unmapped, rejecting
    /// unknown fields.
    pub fn upsert_on_email(
        schema: records_contract::ObjectSchema,
        max_record_bytes: usize,
    ) -> Self {
        Self {
            operation: Operation::Upsert,
            unknown_fields: UnknownFields::Reject,
            telemetry: Arc::new(Telemetry::new()),
            match_key: "email".into(),
            schema: SchemaHandle::new(schema),
            max_record_bytes,
            envelope: Envelope::None,
            mapping: Arc::default(),
        }
    }

    /// The record in a message's body; `attributes` are its message attributes, which a mapping
    /// may read.
    pub fn decode(
        &self,
        body: &str,
        md5_of_body: Option<&str>,
        attributes: Option<&HashMap<String, MessageAttributeValue>>,
    ) -> Result<Decoded, Rejection> {
        if let Some(expected) = md5_of_body
            && !md5_matches(body.as_bytes(), expected)
        {
            let actual = md5_hex(body.as_bytes());
            return Err(Rejection::new(
                Reason::Md5Mismatch,
                format!("MD5OfBody is {expected} but the body hashes to {actual}"),
            ));
        }
        let unwrapped = self.envelope.unwrap(body)?;
        if !self.mapping.is_empty() {
            let attributes = Attributes {
                sqs: attributes,
                sns: unwrapped.sns_attributes,
            };
            return self.mapped(&unwrapped.payload, &attributes);
        }
        let payload = unwrapped.payload.as_ref();
        // The fast path accepts only what the thorough path accepts, with the same bytes; any
        // doubt, and every rejection, goes the thorough way, which words the reason.
        match self.fast(payload) {
            Some(decoded) => Ok(decoded),
            None => self.thorough(payload),
        }
    }

    /// The record the mapping takes from the payload's value tree, held to every check of an
    /// unmapped one.
    fn mapped(&self, payload: &str, attributes: &Attributes<'_>) -> Result<Decoded, Rejection> {
        let value: Value = serde_json::from_str(payload).map_err(|e| {
            Rejection::new(Reason::Unparseable, format!("the body is not JSON: {e}"))
        })?;
        let record = self.mapping.apply(&value, attributes)?;
        self.checked(record)
    }

    /// A valid record decoded without building a value tree: field names and values are
    /// borrowed from the body and copied once into the encoding.
    fn fast(&self, body: &str) -> Option<Decoded> {
        let RawObject(fields) = serde_json::from_str(body).ok()?;
        let schema = self.schema.current();
        // A field to drop takes the thorough path, which counts it.
        if !fields.iter().all(|(name, _)| schema.has_field(name)) {
            return None;
        }
        let key = match self.operation {
            Operation::Upsert => {
                let (_, raw) = fields.iter().find(|(name, _)| name == &self.match_key)?;
                let key = plain_string(raw.get())?;
                (!key.is_empty()).then_some(key)?
            }
            Operation::Append => String::new(),
        };
        let mut encoded = String::with_capacity(body.len());
        encoded.push('{');
        for (index, (name, raw)) in fields.iter().enumerate() {
            if index > 0 {
                encoded.push(',');
            }
            match name {
                // Borrowed means the body wrote the name without escapes: it is canonical.
                Cow::Borrowed(name) => {
                    encoded.push('"');
                    encoded.push_str(name);
                    encoded.push('"');
                }
                Cow::Owned(name) => encoded.push_str(&serde_json::to_string(name).ok()?),
            }
            encoded.push(':');
            push_canonical(&mut encoded, raw.get())?;
        }
        encoded.push('}');
        if encoded.len() > self.max_record_bytes {
            return None;
        }
        let key = (self.operation == Operation::Upsert).then_some(key);
        Some(Decoded { key, encoded })
    }

    /// Parses the whole body into a value tree: every check, and the reason for a rejection.
    /// Public so that the fuzzer can hold `decode` to it.
    pub fn thorough(&self, body: &str) -> Result<Decoded, Rejection> {
        let value: Value = serde_json::from_str(body).map_err(|e| {
            Rejection::new(Reason::Unparseable, format!("the body is not JSON: {e}"))
        })?;
        let Value::Object(record) = value else {
            return Err(Rejection::new(
                Reason::NotAnObject,
                format!(
                    "the body is JSON but not an object (it is {})",
                    kind(&value)
                ),
            ));
        };
        self.checked(record)
    }

    /// A record's match key, field names, numbers and size checked, and its canonical encoding.
    fn checked(&self, record: serde_json::Map<String, Value>) -> Result<Decoded, Rejection> {
        let key = match self.operation {
            Operation::Upsert => match record.get(&self.match_key) {
                Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
                _ => {
                    return Err(Rejection::new(
                        Reason::MissingMatchKey,
                        format!(
                            "match key '{}' is missing, empty or not a string",
                            self.match_key
                        ),
                    ));
                }
            },
            Operation::Append => None,
        };
        let schema = self.schema.current();
        let mut record = record;
        if let Some(field) = record.keys().find(|field| !schema.has_field(field)) {
            if self.unknown_fields == UnknownFields::Reject {
                return Err(Rejection::new(
                    Reason::UnknownField,
                    format!("field '{field}' is not in the schema of '{}'", schema.name),
                ));
            }
            let before = record.len();
            record.retain(|field, _| schema.has_field(field));
            self.telemetry.unknown_fields_dropped(before - record.len());
        }
        if let Some((field, number)) = record
            .iter()
            .find_map(|(field, value)| Some((field, out_of_range_number(value)?)))
        {
            return Err(Rejection::new(
                Reason::NumberOutOfRange,
                format!(
                    "field '{field}' holds {number}, beyond what a JSON number read as a double can \
                     hold (about 1.8e308); send it as a string"
                ),
            ));
        }
        // Re-encoding (not the raw body) is what the batch body carries, so size it that way.
        let encoded = serde_json::to_string(&record).unwrap_or_default();
        if encoded.len() > self.max_record_bytes {
            return Err(Rejection::new(
                Reason::Oversize,
                format!(
                    "the record encodes to {} bytes; one batch holds at most {} bytes of records",
                    encoded.len(),
                    self.max_record_bytes
                ),
            ));
        }
        Ok(Decoded { key, encoded })
    }
}

/// The text of a JSON string written without escapes, else None.
fn plain_string(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then(|| inner.to_owned())
}

/// Appends `raw` as serde_json would write its value: numbers without an exponent (whose digits
/// `arbitrary_precision` keeps), literals and strings without escapes as they are; anything
/// else through a value tree. None when that value does not parse.
fn push_canonical(out: &mut String, raw: &str) -> Option<()> {
    match raw.as_bytes().first()? {
        b'{' | b'[' => {
            let value = serde_json::from_str::<Value>(raw).ok()?;
            if out_of_range_number(&value).is_some() {
                return None;
            }
            out.push_str(&serde_json::to_string(&value).ok()?)
        }
        b'"' if raw.contains('\\') => {
            let text: String = serde_json::from_str(raw).ok()?;
            out.push_str(&serde_json::to_string(&text).ok()?);
        }
        // A number no double can hold is a rejection, which the thorough path words.
        b'-' | b'0'..=b'9' if !number_fits_a_double(raw) => return None,
        // serde_json rewrites an exponent (`1E5` becomes `1e+5`); the digits stay.
        b'-' | b'0'..=b'9' if raw.contains(['e', 'E']) => {
            let number: Value = serde_json::from_str(raw).ok()?;
            out.push_str(&serde_json::to_string(&number).ok()?);
        }
        _ => out.push_str(raw),
    }
    Some(())
}

/// Whether a JSON number's text is within binary64's range: integers beyond 64 bits keep their
/// digits and pass (a double rounds them), but `1e999` or `-1e400` would become infinity.
fn number_fits_a_double(raw: &str) -> bool {
    raw.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The first number anywhere in the value that no double can hold, as written.
fn out_of_range_number(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => {
            let text = number.to_string();
            (!number_fits_a_double(&text)).then_some(text)
        }
        Value::Array(items) => items.iter().find_map(out_of_range_number),
        Value::Object(fields) => fields.values().find_map(out_of_range_number),
        _ => None,
    }
}

/// Most fields a record may have for the fast path; past it, finding a repeated name by scanning
/// would cost more than the value tree.
const FAST_PATH_FIELDS: usize = 64;

/// A JSON object's fields in first-seen order, a repeated name keeping its last value (as
/// serde_json's map does), names borrowed from the body where they need no unescaping.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawObjectVisitor)
    }
}

struct RawObjectVisitor;

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
        while let Some(FieldName(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            if let Some(field) = fields.iter_mut().find(|(seen, _)| *seen == name) {
                field.1 = value;
            } else if fields.len() < FAST_PATH_FIELDS {
                fields.push((name, value));
            } else {
                return Err(de::Error::custom("too many fields for the fast path"));
            }
        }
        Ok(RawObject(fields))
    }
}

/// A field name, borrowed when the body wrote it without escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records_contract::ObjectSchema;
    use records_contract::{FieldSpec, FieldType};

    fn decoder(max: usize) -> Decoder {
        decoder_of(max, &["email", "tier"])
    }

    fn decoder_of(max: usize, fields: &[&str]) -> Decoder {
        let schema = ObjectSchema {
            name: "profiles".into(),
            match_keys: vec!["email".into()],
            fields: fields
                .iter()
                .map(|name| FieldSpec {
                    name: (*name).into(),
                    kind: FieldType::String,
                    required: false,
                })
                .collect(),
        };
        Decoder::upsert_on_email(schema, max)
    }

    /// `--unknown-fields drop`: the fields the schema does not know are left out of the
    /// record, in the canonical encoding of the rest, and counted; `reject` (the default) sends
    /// the message to the DLQ.
    #[test]
    fn unknown_fields_are_dropped_and_counted_or_rejected() {
        let body = r#"{"email":"a@b.c","plan":{"x":1},"tier":"gold","extra":null}"#;
        assert_eq!(
            decoder(100).decode(body, None, None).unwrap_err().reason,
            Reason::UnknownField
        );
        let dropping = Decoder {
            unknown_fields: UnknownFields::Drop,
            ..decoder(100)
        };
        let decoded = dropping.decode(body, None, None).expect("decoded");
        assert_eq!(decoded.encoded, r#"{"email":"a@b.c","tier":"gold"}"#);
        assert_eq!(decoded.key.as_deref(), Some("a@b.c"));
        let metrics = dropping.telemetry.render();
        assert!(
            metrics.contains("sbw_unknown_fields_dropped_total 2"),
            "{metrics}"
        );
        let known = r#"{"email":"a@b.c","tier":"gold"}"#;
        assert_eq!(dropping.decode(known, None, None).unwrap().encoded, known);
    }

    fn reason(body: &str) -> Option<Reason> {
        decoder(100)
            .decode(body, None, None)
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn every_rejection_has_its_reason() {
        assert_eq!(reason(r#"{"email":"a@x.io","tier":"gold"}"#), None);
        assert_eq!(reason("{not json"), Some(Reason::Unparseable));
        assert_eq!(reason(""), Some(Reason::Unparseable));
        assert_eq!(reason("[1,2]"), Some(Reason::NotAnObject));
        assert_eq!(reason("\"text\""), Some(Reason::NotAnObject));
        assert_eq!(reason(r#"{"tier":"gold"}"#), Some(Reason::MissingMatchKey));
        assert_eq!(reason(r#"{"email":""}"#), Some(Reason::MissingMatchKey));
        assert_eq!(reason(r#"{"email":7}"#), Some(Reason::MissingMatchKey));
        assert_eq!(
            reason(r#"{"email":"a@x.io","colour":"red"}"#),
            Some(Reason::UnknownField)
        );
        let long = format!(r#"{{"email":"{}@x.io"}}"#, "a".repeat(200));
        assert_eq!(reason(&long), Some(Reason::Oversize));
    }

    #[test]
    fn md5_is_checked() {
        let body = r#"{"email":"a@x.io"}"#;
        let good = md5_hex(body.as_bytes());
        assert!(decoder(100).decode(body, Some(&good), None).is_ok());
        let bad = decoder(100).decode(body, Some("00000000000000000000000000000000"), None);
        assert_eq!(bad.unwrap_err().reason, Reason::Md5Mismatch);
    }

    #[test]
    fn encoding_is_compact_json() {
        let decoded = decoder(100)
            .decode("{ \"email\" : \"a@x.io\" }", None, None)
            .unwrap();
        assert_eq!(decoded.encoded, r#"{"email":"a@x.io"}"#);
        assert_eq!(decoded.key.as_deref(), Some("a@x.io"));
    }

    /// Integers beyond 64 bits, and every other number, keep the digits the producer wrote.
    #[test]
    fn numbers_keep_their_digits() {
        for body in [
            r#"{"email":"a@x.io","tier":123456789012345678901234567890}"#,
            r#"{"email":"a@x.io","tier":1.50}"#,
        ] {
            let decoded = decoder(100).decode(body, None, None).unwrap();
            assert_eq!(decoded.encoded, body);
        }
    }

    /// A number no double can hold goes to the DLQ with its own reason,
    /// wherever it sits; big integers and small exponents still pass with their digits.
    #[test]
    fn numbers_beyond_a_double_are_rejected() {
        for body in [
            r#"{"email":"a@x.io","tier":1e999}"#,
            r#"{"email":"a@x.io","tier":-1E400}"#,
            r#"{"email":"a@x.io","tier":[1,2e500]}"#,
            r#"{"email":"a@x.io","tier":{"n":1e309}}"#,
        ] {
            let error = decoder(1000).decode(body, None, None).unwrap_err();
            assert_eq!(error.reason.as_str(), "number_out_of_range", "{body}");
        }
        for body in [
            r#"{"email":"a@x.io","tier":1e308}"#,
            r#"{"email":"a@x.io","tier":1e-400}"#,
            r#"{"email":"a@x.io","tier":123456789012345678901234567890123456789}"#,
        ] {
            assert!(decoder(1000).decode(body, None, None).is_ok(), "{body}");
        }
    }

    /// The fast path gives byte for byte what the value tree gives, or steps aside.
    #[test]
    fn the_fast_path_agrees_with_the_value_tree() {
        let decoder = decoder_of(10_000, &["email", "tier", "n", "x", "y", "é"]);
        let fast_ok = [
            r#"{"email":"a@x.io","tier":"gold"}"#,
            "{ \"email\" : \"a@x.io\" ,\n\t\"tier\" : 1.50 }",
            r#"{"email":"a@x.io","tier":"a","n":1,"tier":"b"}"#,
            r#"{"em\u0061il":"a@x.io","tier":"caf\u00e9 \/ \n \" \\"}"#,
            r#"{"email":"a@x.io","tier":{"x":1,"x":2, "y":[1, 2 ,{"z":null}]}}"#,
            r#"{"email":"a@x.io","n":1e5,"x":1E+5,"y":-0,"tier":0.1e-10}"#,
            r#"{"email":"a@x.io","n":123456789012345678901234567890,"x":1.0,"y":-1.5E-300}"#,
            r#"{"email":"a@x.io","n":true,"x":false,"y":null}"#,
            r#"{"email":"a@x.io","tier":"café ☕","é":"\u2603"}"#,
            r#"{"email":"a@x.io","tier":[]  ,"n":{}}"#,
        ];
        for body in fast_ok {
            let thorough = decoder.thorough(body).expect(body);
            let fast = decoder.fast(body).expect(body);
            assert_eq!(fast.encoded, thorough.encoded, "{body}");
            assert_eq!(fast.key, thorough.key, "{body}");
        }
        let fast_steps_aside = [
            r#"{"email":"a\u0040x.io"}"#,
            r#"{"email":"a@x.io","tier":"\ud800"}"#,
            r#"{"email":"a@x.io","colour":"red"}"#,
            r#"{"email":""}"#,
            r#"{"email":7}"#,
            r#"{"tier":"gold"}"#,
            "[1,2]",
            "\"text\"",
            "{not json",
            "",
            r#"{"email":"a@x.io"} trailing"#,
        ];
        for body in fast_steps_aside {
            assert!(decoder.fast(body).is_none(), "{body}");
        }
        let escaped_key = decoder
            .decode(r#"{"email":"a\u0040x.io"}"#, None, None)
            .unwrap();
        assert_eq!(escaped_key.key.as_deref(), Some("a@x.io"));
    }

    #[test]
    fn the_md5_check_reads_hex_in_either_case() {
        let body = b"{}";
        let hex = md5_hex(body);
        assert!(md5_matches(body, &hex));
        assert!(md5_matches(body, &hex.to_uppercase()));
        assert!(!md5_matches(body, &hex[..31]));
        assert!(!md5_matches(body, &format!("{}zz", &hex[..30])));
        assert!(!md5_matches(b"{ }", &hex));
    }

    fn producing(envelope: Envelope, fields: &[(&str, &str)]) -> Decoder {
        let entries = fields
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        Decoder {
            envelope,
            mapping: Arc::new(Mapping::new(entries).unwrap()),
            ..decoder(200)
        }
    }

    /// An SNS notification with a mapping from the nested event, an EventBridge event without
    /// one: each record is what the unwrapped, mapped body says, in the canonical encoding.
    #[test]
    fn envelopes_and_mappings_make_the_record() {
        let sns = r#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"{\"user\":{\"email\":\"a@b.c\"},\"plan\":{\"tier\":\"gold\"},\"utm\":1}"}"#;
        let mapped = producing(
            Envelope::Sns,
            &[("email", "/user/email"), ("tier", "/plan/tier")],
        );
        let decoded = mapped.decode(sns, None, None).unwrap();
        assert_eq!(decoded.encoded, r#"{"email":"a@b.c","tier":"gold"}"#);
        assert_eq!(decoded.key.as_deref(), Some("a@b.c"));
        let event = r#"{"version":"0","id":"e","detail-type":"d","source":"s","detail":{ "email" : "a@b.c", "tier":"gold"}}"#;
        let decoded = producing(Envelope::EventBridge, &[])
            .decode(event, None, None)
            .unwrap();
        assert_eq!(decoded.encoded, r#"{"email":"a@b.c","tier":"gold"}"#);
        let unwrapped = producing(Envelope::Sns, &[]);
        let inner = r#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"{\"email\":\"a@b.c\"}"}"#;
        assert_eq!(
            unwrapped.decode(inner, None, None).unwrap().encoded,
            r#"{"email":"a@b.c"}"#
        );
    }

    /// A mapped record is held to every check of an unmapped one, with the same reasons.
    #[test]
    fn a_mapped_record_keeps_every_check() {
        let reason = |fields: &[(&str, &str)], body: &str| {
            producing(Envelope::None, fields)
                .decode(body, None, None)
                .err()
                .map(|r| r.reason)
        };
        let email = ("email", "/u/e");
        assert_eq!(reason(&[email], r#"{"u":{"e":"a@b.c"}}"#), None);
        assert_eq!(
            reason(&[email, ("tier", "/t")], r#"{"u":{"e":7},"t":1}"#),
            Some(Reason::MissingMatchKey)
        );
        assert_eq!(
            reason(&[email, ("colour", "/t")], r#"{"u":{"e":"a"},"t":1}"#),
            Some(Reason::UnknownField)
        );
        assert_eq!(
            reason(&[email, ("tier", "/t")], r#"{"u":{"e":"a"},"t":1e999}"#),
            Some(Reason::NumberOutOfRange)
        );
        let long = format!(r#"{{"u":{{"e":"{}"}}}}"#, "a".repeat(300));
        assert_eq!(reason(&[email], &long), Some(Reason::Oversize));
        assert_eq!(reason(&[email], "{not json"), Some(Reason::Unparseable));
        assert_eq!(reason(&[email], r#"{"x":1}"#), Some(Reason::MappingFailed));
        assert_eq!(reason(&[email], r#"{"u":{"e":"a"}}"#), None);
        let body = r#"{"u":{"e":"a"}}"#;
        let md5 = producing(Envelope::None, &[email]).decode(
            body,
            Some("00000000000000000000000000000000"),
            None,
        );
        assert_eq!(md5.unwrap_err().reason, Reason::Md5Mismatch);
        let dropping = Decoder {
            unknown_fields: UnknownFields::Drop,
            ..producing(Envelope::None, &[email, ("colour", "/t")])
        };
        let decoded = dropping
            .decode(r#"{"u":{"e":"a"},"t":1}"#, None, None)
            .unwrap();
        assert_eq!(decoded.encoded, r#"{"email":"a"}"#);
        assert!(
            dropping
                .telemetry
                .render()
                .contains("sbw_unknown_fields_dropped_total 1")
        );
    }
}
