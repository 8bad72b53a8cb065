//! The object's schema as last fetched: the decoder (source) checks field names against it, and
//! a delivery (sink) replaces it after the API says a field is not in it.

use std::sync::{Arc, RwLock};

use records_contract::ObjectSchema;

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
