//! The field mapping (`--field NAME=SOURCE`, TOML `[fields]`): each record field is taken from a
//! JSON Pointer (RFC 6901) into the unwrapped body, or from a message attribute. With a mapping
//! the record is exactly the mapped fields, in the order given. A source that finds nothing leaves
//! its field out; a message where no source finds anything, or a mapped Binary attribute, is a
//! rejection of its own (`mapping_failed`). An empty mapping is no mapping: the body is the record.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_sqs::types::MessageAttributeValue;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::outcome::{Reason, Rejection};

/// Where a record field's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A JSON Pointer into the unwrapped body; `""` is the whole body.
    Pointer(String),
    /// A message attribute by name: the SQS message's, else a wrapped SNS notification's.
    Attribute(String),
}

const ATTRIBUTE: &str = "attribute:";

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Pointer(pointer) => f.write_str(pointer),
            Source::Attribute(name) => write!(f, "{ATTRIBUTE}{name}"),
        }
    }
}

impl Source {
    /// `/user/email` or `attribute:tenant`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix(ATTRIBUTE) {
            return match name.trim() {
                "" => Err(format!("'{text}' names no attribute")),
                name => Ok(Source::Attribute(name.to_owned())),
            };
        }
        if !(text.is_empty() || text.starts_with('/')) {
            return Err(format!(
                "'{text}' is neither a JSON Pointer (which starts with /) nor attribute:NAME"
            ));
        }
        // RFC 6901: `~` is only ever `~0` (a tilde) or `~1` (a slash).
        let mut rest = text;
        while let Some(at) = rest.find('~') {
            rest = &rest[at + 1..];
            if !(rest.starts_with('0') || rest.starts_with('1')) {
                return Err(format!(
                    "'{text}' has a ~ that is neither ~0 (for ~) nor ~1 (for /)"
                ));
            }
        }
        Ok(Source::Pointer(text.to_owned()))
    }
}

/// The record's fields and where each comes from, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    fields: Vec<(String, Source)>,
}

/// One `NAME=SOURCE`, as `--field` takes it.
pub fn parse_entry(text: &str) -> Result<(String, String), String> {
    let (name, source) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' has no '=': write NAME=SOURCE"))?;
    Ok((name.trim().to_owned(), source.trim().to_owned()))
}

impl Mapping {
    /// The mapping of `(field, source)` pairs; an error says which entry is wrong and why.
    pub fn new(entries: Vec<(String, String)>) -> Result<Self, String> {
        let mut fields: Vec<(String, Source)> = Vec::with_capacity(entries.len());
        for (name, source) in entries {
            if name.is_empty() {
                return Err(format!("'={source}' names no field"));
            }
            if fields.iter().any(|(seen, _)| *seen == name) {
                return Err(format!("field '{name}' is mapped twice"));
            }
            fields.push((name, Source::parse(&source)?));
        }
        Ok(Self { fields })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn fields(&self) -> &[(String, Source)] {
        &self.fields
    }

    /// The message attributes the mapping reads.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().filter_map(|(_, source)| match source {
            Source::Attribute(name) => Some(name.as_str()),
            Source::Pointer(_) => None,
        })
    }

    fn reads_attributes(&self) -> bool {
        self.fields
            .iter()
            .any(|(_, source)| matches!(source, Source::Attribute(_)))
    }

    /// The record that the mapping takes from `payload` and the message's attributes.
    pub fn apply(
        &self,
        payload: &Value,
        attributes: &Attributes<'_>,
    ) -> Result<Map<String, Value>, Rejection> {
        let sns = match (self.reads_attributes(), attributes.sns) {
            (true, Some(raw)) => {
                serde_json::from_str::<HashMap<String, SnsAttribute>>(raw.get()).unwrap_or_default()
            }
            _ => HashMap::new(),
        };
        let mut record = Map::with_capacity(self.fields.len());
        for (name, source) in &self.fields {
            let value = match source {
                Source::Pointer(pointer) => payload.pointer(pointer).cloned(),
                Source::Attribute(attribute) => attributes
                    .value(attribute, &sns)
                    .transpose()
                    .map_err(|problem| {
                        Rejection::new(
                            Reason::MappingFailed,
                            format!("field '{name}' ← {source}: {problem}"),
                        )
                    })?,
            };
            if let Some(value) = value {
                record.insert(name.clone(), value);
            }
        }
        if record.is_empty() {
            let sources: Vec<String> = self.fields.iter().map(|(_, s)| s.to_string()).collect();
            return Err(Rejection::new(
                Reason::MappingFailed,
                format!(
                    "none of the mapping's sources is in the message ({}); check --field \
                     against the producer's events with `check --sample`",
                    sources.join(", ")
                ),
            ));
        }
        Ok(record)
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fields.is_empty() {
            return f.write_str("none (the body is the record)");
        }
        for (index, (name, source)) in self.fields.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} ← {source}")?;
        }
        Ok(())
    }
}

/// An attribute of a wrapped SNS notification: `{"Type":"String","Value":"acme"}`.
#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Value")]
    value: Option<String>,
}

/// The message attributes a mapping may read: the SQS message's own, and those of a wrapped SNS
/// notification.
#[derive(Default)]
pub struct Attributes<'a> {
    pub sqs: Option<&'a HashMap<String, MessageAttributeValue>>,
    pub sns: Option<&'a RawValue>,
}

impl Attributes<'_> {
    fn value(
        &self,
        name: &str,
        sns: &HashMap<String, SnsAttribute>,
    ) -> Option<Result<Value, String>> {
        if let Some(attribute) = self.sqs.and_then(|all| all.get(name)) {
            return Some(attribute_value(
                &attribute.data_type,
                attribute.string_value.as_deref(),
            ));
        }
        let attribute = sns.get(name)?;
        Some(attribute_value(&attribute.kind, attribute.value.as_deref()))
    }
}

/// A String attribute is a JSON string and a Number attribute a JSON number (its digits kept);
/// a Binary one has no JSON form. Custom types (`String.uuid`) follow their base type.
fn attribute_value(data_type: &str, text: Option<&str>) -> Result<Value, String> {
    let text = text.unwrap_or_default();
    if data_type.starts_with("String") {
        return Ok(Value::String(text.to_owned()));
    }
    if data_type.starts_with("Number") {
        return match serde_json::from_str::<Value>(text.trim()) {
            Ok(number @ Value::Number(_)) => Ok(number),
            _ => Err(format!(
                "the Number attribute {text:?} is not a JSON number"
            )),
        };
    }
    Err(format!(
        "a {data_type} attribute has no JSON form; map a String or Number attribute"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(entries: &[(&str, &str)]) -> Mapping {
        Mapping::new(
            entries
                .iter()
                .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn sources_parse_or_say_why_not() {
        assert_eq!(
            Source::parse("/user/email"),
            Ok(Source::Pointer("/user/email".into()))
        );
        assert_eq!(Source::parse(""), Ok(Source::Pointer(String::new())));
        assert_eq!(
            Source::parse("/a~1b/~0c"),
            Ok(Source::Pointer("/a~1b/~0c".into()))
        );
        assert_eq!(
            Source::parse("attribute:tenant"),
            Ok(Source::Attribute("tenant".into()))
        );
        for bad in ["user/email", "attribute:", "/a~2", "/a~", "$.user.email"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_entry(" email = /user/email "),
            Ok(("email".into(), "/user/email".into()))
        );
        assert!(parse_entry("email").is_err());
        let twice = vec![("a".into(), "/x".into()), ("a".into(), "/y".into())];
        assert!(Mapping::new(twice).unwrap_err().contains("twice"));
        assert!(Mapping::new(vec![(String::new(), "/x".into())]).is_err());
    }

    /// RFC 6901's own examples, through `Value::pointer`.
    #[test]
    fn pointers_follow_rfc_6901() {
        let document = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
            "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        for (pointer, expected) in [
            ("/foo/0", json!("bar")),
            ("/", json!(0)),
            ("/a~1b", json!(1)),
            ("/c%d", json!(2)),
            ("/e^f", json!(3)),
            ("/g|h", json!(4)),
            ("/i\\j", json!(5)),
            ("/k\"l", json!(6)),
            ("/ ", json!(7)),
            ("/m~0n", json!(8)),
        ] {
            let record = mapping(&[("x", pointer)])
                .apply(&document, &Attributes::default())
                .unwrap();
            assert_eq!(record["x"], expected, "{pointer}");
        }
    }

    #[test]
    fn a_nested_event_maps_in_the_order_given_and_missing_sources_are_left_out() {
        let event = json!({"user": {"email": "a@b.c"}, "plan": {"tier": "gold"}, "utm": "x"});
        let record = mapping(&[
            ("tier", "/plan/tier"),
            ("email", "/user/email"),
            ("age", "/user/age"),
        ])
        .apply(&event, &Attributes::default())
        .unwrap();
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"tier":"gold","email":"a@b.c"}"#
        );
        let nothing =
            mapping(&[("email", "/user/email")]).apply(&json!([1]), &Attributes::default());
        assert_eq!(nothing.unwrap_err().reason, Reason::MappingFailed);
    }

    #[test]
    fn attributes_map_by_type() {
        let string = |t: &str, v: &str| {
            MessageAttributeValue::builder()
                .data_type(t)
                .string_value(v)
                .build()
                .unwrap()
        };
        let sqs: HashMap<String, MessageAttributeValue> = [
            ("tenant".to_owned(), string("String", "acme")),
            (
                "seats".to_owned(),
                string("Number", "12345678901234567890.5"),
            ),
            ("odd".to_owned(), string("Number", "1e")),
            (
                "blob".to_owned(),
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![1]))
                    .build()
                    .unwrap(),
            ),
        ]
        .into();
        let sns = RawValue::from_string(
            r#"{"region":{"Type":"String","Value":"eu"},"tenant":{"Type":"String","Value":"not this"}}"#
                .to_owned(),
        )
        .unwrap();
        let attributes = Attributes {
            sqs: Some(&sqs),
            sns: Some(&sns),
        };
        let record = mapping(&[
            ("tenant", "attribute:tenant"),
            ("seats", "attribute:seats"),
            ("region", "attribute:region"),
            ("none", "attribute:none"),
        ])
        .apply(&json!({}), &attributes)
        .unwrap();
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"tenant":"acme","seats":12345678901234567890.5,"region":"eu"}"#
        );
        for bad in ["attribute:blob", "attribute:odd"] {
            let rejection = mapping(&[("x", bad)])
                .apply(&json!({}), &attributes)
                .unwrap_err();
            assert_eq!(rejection.reason, Reason::MappingFailed, "{bad}");
        }
    }
}
