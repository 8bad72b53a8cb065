//! The objects the emulator knows: the two defaults from the contract, or a file of them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use records_contract::{FieldSpec, FieldType, ObjectSchema};

pub type Schemas = HashMap<String, ObjectSchema>;

fn field(name: &str, kind: FieldType, required: bool) -> FieldSpec {
    FieldSpec {
        name: name.to_owned(),
        kind,
        required,
    }
}

/// `profiles` (upsert on `email`) and `events` (append), as the contract lists them.
pub fn defaults() -> Schemas {
    use FieldType::*;
    let profiles = ObjectSchema {
        name: "profiles".into(),
        match_keys: vec!["email".into()],
        fields: vec![
            field("email", Email, true),
            field("first_name", String, false),
            field("last_name", String, false),
            field("tier", String, false),
            field("last_seen_at", Timestamp, false),
            field("plan", String, false),
            field("country", String, false),
            field("score", Number, false),
        ],
    };
    let events = ObjectSchema {
        name: "events".into(),
        match_keys: vec![],
        fields: vec![
            field("session_id", String, true),
            field("event", String, true),
            field("url", String, false),
            field("occurred_at", Timestamp, true),
            field("user_email", Email, false),
            field("value", Number, false),
        ],
    };
    [profiles, events]
        .into_iter()
        .map(|schema| (schema.name.clone(), schema))
        .collect()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaFile {
    List(Vec<ObjectSchema>),
    Wrapped { objects: Vec<ObjectSchema> },
}

/// Loads a JSON file holding an array of objects in the metadata endpoint's shape.
pub fn load(path: &Path) -> Result<Schemas, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--schemas {}: cannot read it: {e}", path.display()))?;
    parse(text.as_bytes()).map_err(|e| format!("--schemas {}: {e}", path.display()))
}

/// Parses schemas from JSON: an array, or `{"objects": [...]}`.
pub fn parse(json: &[u8]) -> Result<Schemas, String> {
    let file: SchemaFile = serde_json::from_slice(json).map_err(|e| {
        format!("not a JSON array of {{name, matchKeys, fields:[{{name, type, required}}]}}: {e}")
    })?;
    let list = match file {
        SchemaFile::List(list) | SchemaFile::Wrapped { objects: list } => list,
    };
    Ok(list
        .into_iter()
        .map(|schema| (schema.name.clone(), schema))
        .collect())
}
