//! The Records API wire contract (docs/emulator.md) that both sides speak: object schemas, error
//! codes and limits.

use serde::{Deserialize, Serialize};

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
