//! Row validation by field type, done while a job runs. Deterministic: the same row fails the same way.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use records_contract::{FieldType, ObjectSchema, codes};

/// One invalid row of a job, in the shape of the job's `errors` entries.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RowError {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
    pub path: String,
}

/// Checks one record against the object; `match_key` is set for upserts.
pub fn validate_row(
    schema: &ObjectSchema,
    match_key: Option<&str>,
    index: usize,
    record: &Map<String, Value>,
) -> Result<(), RowError> {
    let fail = |field: &str, message: String| RowError {
        index,
        code: codes::REQUEST_INVALID,
        message,
        path: format!("records[{index}].{field}"),
    };
    if let Some(key) = match_key {
        match record.get(key) {
            Some(Value::String(value)) if !value.is_empty() => {}
            _ => return Err(fail(key, format!("match key '{key}' is missing or empty"))),
        }
    } else {
        for spec in schema.fields.iter().filter(|spec| spec.required) {
            if record.get(&spec.name).is_none_or(Value::is_null) {
                return Err(fail(
                    &spec.name,
                    format!("required field '{}' is missing", spec.name),
                ));
            }
        }
    }
    for (name, value) in record {
        let Some(spec) = schema.field(name) else {
            return Err(fail(name, format!("unknown field '{name}'")));
        };
        if value.is_null() {
            continue;
        }
        if let Err(problem) = check_type(spec.kind, value) {
            return Err(fail(name, format!("field '{name}': {problem}")));
        }
    }
    Ok(())
}

pub fn check_type(kind: FieldType, value: &Value) -> Result<(), &'static str> {
    match (kind, value) {
        (FieldType::String, Value::String(_)) => Ok(()),
        (FieldType::Number, Value::Number(_)) => Ok(()),
        (FieldType::Boolean, Value::Bool(_)) => Ok(()),
        (FieldType::Email, Value::String(text)) if is_email(text) => Ok(()),
        (FieldType::Email, _) => Err("not an email address"),
        (FieldType::Timestamp, Value::String(text)) if is_timestamp(text) => Ok(()),
        (FieldType::Timestamp, _) => Err("not an RFC 3339 timestamp with a timezone offset"),
        (FieldType::String, _) => Err("not a string"),
        (FieldType::Number, _) => Err("not a number"),
        (FieldType::Boolean, _) => Err("not a boolean"),
    }
}

fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn is_timestamp(text: &str) -> bool {
    OffsetDateTime::parse(text, &Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types() {
        assert!(check_type(FieldType::Email, &json!("a@b.c")).is_ok());
        assert!(check_type(FieldType::Email, &json!("nope")).is_err());
        assert!(check_type(FieldType::Email, &json!("a b@c")).is_err());
        assert!(check_type(FieldType::Timestamp, &json!("2026-04-21T15:00:00Z")).is_ok());
        assert!(check_type(FieldType::Timestamp, &json!("2026-04-21T15:00:00+02:00")).is_ok());
        assert!(check_type(FieldType::Timestamp, &json!("2026-04-21T15:00:00")).is_err());
        assert!(check_type(FieldType::Number, &json!(1.5)).is_ok());
        assert!(check_type(FieldType::Number, &json!("1")).is_err());
        assert!(check_type(FieldType::Boolean, &json!(true)).is_ok());
        assert!(check_type(FieldType::String, &json!(3)).is_err());
    }
}
