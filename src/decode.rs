//! Decoding a message body into a record: MD5 check, JSON object, match key, field names against
//! the object's schema, and size. A failure here goes to the DLQ without any API call.

use std::sync::{Arc, RwLock};

use md5::{Digest, Md5};
use serde_json::{Map, Value};

use crate::config::Operation;
use crate::contract::ObjectSchema;
use crate::outcome::{Reason, Rejection};

/// The object's schema as last fetched; refreshed after a 422 `REQUEST_SCHEMA`.
#[derive(Clone)]
pub struct SchemaHandle(Arc<RwLock<Arc<ObjectSchema>>>);

impl SchemaHandle {
    pub fn new(schema: ObjectSchema) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(schema))))
    }

    pub fn current(&self) -> Arc<ObjectSchema> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, schema: ObjectSchema) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(schema);
    }
}

/// A record ready for the batcher: its match-key value and its canonical JSON encoding (compact,
/// fields in first-seen order, a repeated field's last value, serde_json's escapes).
#[derive(Clone, Debug)]
pub struct Decoded {
    pub key: Option<String>,
    pub encoded: String,
}

impl Decoded {
    /// The record as a map, for the rare merge of two upserts to one key.
    pub fn fields(encoded: &str) -> Map<String, Value> {
        serde_json::from_str(encoded).unwrap_or_default()
    }
}

pub struct Decoder {
    pub operation: Operation,
    pub match_key: String,
    pub schema: SchemaHandle,
    /// The largest encoded record that fits in an otherwise empty batch.
    pub max_record_bytes: usize,
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
    pub fn decode(&self, body: &str, md5_of_body: Option<&str>) -> Result<Decoded, Rejection> {
        if let Some(expected) = md5_of_body
            && !md5_matches(body.as_bytes(), expected)
        {
            let actual = md5_hex(body.as_bytes());
            return Err(Rejection::new(
                Reason::Md5Mismatch,
                format!("MD5OfBody is {expected} but the body hashes to {actual}"),
            ));
        }
        self.parse(body)
    }

    /// Parses the body into a value tree for every check and the reason of a rejection, then
    /// keeps only the encoding: a row does not hold the tree.
    fn parse(&self, body: &str) -> Result<Decoded, Rejection> {
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
        if let Some(field) = record.keys().find(|field| !schema.has_field(field)) {
            return Err(Rejection::new(
                Reason::UnknownField,
                format!("field '{field}' is not in the schema of '{}'", schema.name),
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
    use crate::contract::{FieldSpec, FieldType};

    fn decoder(max: usize) -> Decoder {
        let schema = ObjectSchema {
            name: "profiles".into(),
            match_keys: vec!["email".into()],
            fields: ["email", "tier"]
                .iter()
                .map(|name| FieldSpec {
                    name: (*name).into(),
                    kind: FieldType::String,
                    required: false,
                })
                .collect(),
        };
        Decoder {
            operation: Operation::Upsert,
            match_key: "email".into(),
            schema: SchemaHandle::new(schema),
            max_record_bytes: max,
        }
    }

    fn reason(body: &str) -> Option<Reason> {
        decoder(100).decode(body, None).err().map(|r| r.reason)
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
        assert!(decoder(100).decode(body, Some(&good)).is_ok());
        let bad = decoder(100).decode(body, Some("00000000000000000000000000000000"));
        assert_eq!(bad.unwrap_err().reason, Reason::Md5Mismatch);
    }

    #[test]
    fn encoding_is_compact_json() {
        let decoded = decoder(100)
            .decode("{ \"email\" : \"a@x.io\" }", None)
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
            let decoded = decoder(100).decode(body, None).unwrap();
            assert_eq!(decoded.encoded, body);
        }
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
}
