//! The published Cedar schema every policy is validated against.

use std::sync::LazyLock;

use cedar_policy::Schema;

use crate::PolicyError;

const SCHEMA_TEXT: &str = include_str!("tsuzuku.cedarschema");

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| e.to_string())
});

/// The Tsuzuku Cedar schema (namespace `Tsuzuku`), exactly as published in
/// `docs/POLICY.md`.
pub fn schema_text() -> &'static str {
    SCHEMA_TEXT
}

/// The parsed schema.
pub(crate) fn schema() -> Result<&'static Schema, PolicyError> {
    SCHEMA
        .as_ref()
        .map_err(|message| PolicyError::Schema(message.clone()))
}
