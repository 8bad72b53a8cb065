//! The Records API wire contract (docs/emulator.md) that both sides speak: limits, error codes,
//! object schemas, and the shapes of answers (the envelope, a 202's data, a job report). The
//! worker reads them and the emulator writes them, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most records one batch request may hold.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// The largest batch request body, in bytes (10 MB).
pub const MAX_BODY_BYTES: usize = 10_485_760;
/// The header that carries the batch's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set to `true` on a response replayed from the idempotency store.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Every response carries one.
pub const CORRELATION_ID: &str = "x-correlation-id";

/// Error codes named by the contract.
pub mod codes {
    pub const REQUEST_INVALID: &str = "CDP_ETL.VALIDATION.REQUEST_INVALID";
    pub const REQUEST_SCHEMA: &str = "CDP_ETL.VALIDATION.REQUEST_SCHEMA";
    pub const UNAUTHORIZED: &str = "CDP_ETL.AUTH.UNAUTHORIZED";
    pub const FORBIDDEN: &str = "CDP_ETL.AUTH.FORBIDDEN";
    pub const NOT_FOUND: &str = "CDP_ETL.NOT_FOUND";
    pub const IN_PROGRESS: &str = "CDP_ETL.IDEMPOTENCY.IN_PROGRESS";
    pub const KEY_REUSED: &str = "CDP_ETL.IDEMPOTENCY.KEY_REUSED";
    pub const RATE_LIMITED: &str = "CDP_ETL.RATE.LIMITED";
    pub const INTERNAL_ERROR: &str = "CDP_ETL.INTERNAL.ERROR";
    pub const INTERNAL_UNAVAILABLE: &str = "CDP_ETL.INTERNAL.UNAVAILABLE";
    pub const METHOD_NOT_ALLOWED: &str = "CDP_ETL.VALIDATION.METHOD_NOT_ALLOWED";
}

/// `data` of `GET /metadata/objects/{object}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSchema {
    pub name: String,
    #[serde(rename = "matchKeys", default)]
    pub match_keys: Vec<String>,
    pub fields: Vec<FieldSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default)]
    pub required: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    Boolean,
    Timestamp,
    Email,
}

impl ObjectSchema {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|field| field.name == name)
    }

    pub fn has_field(&self, name: &str) -> bool {
        self.field(name).is_some()
    }
}

/// Every answer's body: `{"success":true,"data":…,"correlationId":…}`, or with `error` in place
/// of `data`. The worker reads it, the emulator writes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(default)]
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub error: Option<ErrorBody>,
}

impl Envelope {
    pub fn success(correlation_id: &str, data: Value) -> Self {
        Self {
            success: true,
            data: Some(data),
            correlation_id: Some(correlation_id.to_owned()),
            error: None,
        }
    }

    pub fn failure(correlation_id: &str, error: ErrorBody) -> Self {
        Self {
            success: false,
            data: None,
            correlation_id: Some(correlation_id.to_owned()),
            error: Some(error),
        }
    }
}

/// An answer's `error`: the contract's code (`codes`), a message, and where it applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub code: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub message: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub details: Option<ErrorDetails>,
}

/// `error.details`: the field a refusal names (`records[17].favourite_color`) and its value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetails {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A 202's `data`: the job, and where to poll it. Only `jobId` and `statusPath` are required to
/// read one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAccepted {
    pub job_id: String,
    pub status_path: String,
    #[serde(default)]
    pub accepted_records: usize,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub operation: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub object_name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub state: Option<String>,
}

/// A job report's `data`. Only `state` must be a string to read one: every other field of the
/// wrong type reads as absent, so that one odd field cannot hide a job that committed, and the
/// `errors` entries are read one by one by whoever uses them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    pub state: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub job_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub object_name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub operation: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub accepted_records: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub metrics: Option<JobMetrics>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub idempotency_key: Option<String>,
    /// One entry per refused row: `{"index":…,"code":…,"message":…,"path":…}`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub errors: Option<Vec<Value>>,
    /// Why a failed job failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub error: Option<ErrorBody>,
}

/// A job report's `metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMetrics {
    #[serde(default, deserialize_with = "lenient")]
    pub total_rows: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub valid_rows: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub invalid_rows: Option<u64>,
}

/// A field read on its own: absent when it does not have the expected shape.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes the emulator writes read back as the worker reads them, and an odd field does
    /// not hide the rest.
    #[test]
    fn answers_round_trip_and_odd_fields_read_as_absent() {
        let error = ErrorBody {
            code: Some(codes::REQUEST_SCHEMA.into()),
            message: Some("unknown field".into()),
            details: Some(ErrorDetails {
                path: Some("records[3].x".into()),
                value: None,
            }),
        };
        let text = serde_json::to_string(&Envelope::failure("c-1", error.clone())).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.error, Some(error));
        let odd: Envelope =
            serde_json::from_str(r#"{"error":{"code":422,"message":"m","details":[1]}}"#).unwrap();
        let odd = odd.error.expect("the error is still read");
        assert_eq!((odd.code, odd.message.as_deref()), (None, Some("m")));
        let report: JobReport = serde_json::from_str(
            r#"{"state":"completed","metrics":{"invalidRows":"two","totalRows":3},"errors":{}}"#,
        )
        .unwrap();
        let metrics = report.metrics.expect("metrics");
        assert_eq!((metrics.invalid_rows, metrics.total_rows), (None, Some(3)));
        assert_eq!(report.errors, None);
        assert!(serde_json::from_str::<JobReport>(r#"{"state":7}"#).is_err());
    }
}
