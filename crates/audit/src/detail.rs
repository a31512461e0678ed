//! An event's detail, held as its canonical JSON text ([`Detail`]).
//!
//! The chain hash covers the detail's canonical text (sorted keys, no whitespace, minimal
//! escapes: see [`crate::canonical_bytes`]), and stores keep exactly that text. Holding the
//! detail as that text from the moment the event is made means it is encoded once, where it is
//! made, and never again: the audit writer hashes and stores the bytes as they are, and no tree
//! of JSON values is built, handed to the writer's thread and freed there.
//!
//! Two ways in:
//! - [`Detail::from_value`] (and `From<serde_json::Value>`): any JSON value, encoded canonically;
//! - [`Detail::from_serialize`]: a typed value (a struct whose fields are declared in key
//!   order) serialised straight into canonical text (`ser`). The serialiser checks the order
//!   as it writes; a value that comes out in any other order (fields out of order, a
//!   `HashMap`) or with a floating-point number is re-encoded through a
//!   [`serde_json::Value`], so the text is canonical either way, and only the speed differs.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chain::canonical_detail;

/// A JSON value as its canonical text (see the module docs). Compares, hashes and prints as
/// that text; serialises as the JSON value itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Detail(String);

impl Detail {
    /// The canonical text of `value`.
    pub fn from_value(value: &serde_json::Value) -> Detail {
        Detail(canonical_detail(value))
    }

    /// The canonical text of a typed value, written directly (see the module docs). Fails only
    /// when `value`'s `Serialize` implementation fails or produces something that is not JSON
    /// (a map with keys that cannot be JSON strings).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Detail, serde_json::Error> {
        let out = ser::write(value).map_err(serde::ser::Error::custom)?;
        if out.canonical {
            // Only `str` text and ASCII are written; a lossy conversion keeps this from ever
            // panicking.
            return Ok(Detail(String::from_utf8(out.bytes).unwrap_or_else(|e| {
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            })));
        }
        // Keys out of order, or a float: the slow way, through a value tree.
        Ok(Detail::from_value(&serde_json::from_slice(&out.bytes)?))
    }

    /// Whether `value` serialises straight into canonical text (every object's keys in order),
    /// the fast way [`Detail::from_serialize`] takes, rather than being re-encoded. For tests of
    /// the types that events' details are written from.
    pub fn writes_directly<T: Serialize + ?Sized>(value: &T) -> bool {
        ser::write(value).is_ok_and(|out| out.canonical)
    }

    /// The detail stored as `text`, in any JSON layout: parsed and re-encoded canonically.
    pub fn from_json(text: &str) -> Result<Detail, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Ok(Detail::from_value(&value))
    }

    /// A detail read back from storage as `text`, and whether `text` is exactly what Tsuzuku
    /// writes for its value: the canonical text, or — for rows stored before details were kept
    /// as canonical text — serde_json's own compact encoding of the value (in the stored key
    /// order where serde_json's `preserve_order` feature is on, as it is in the binary). Any
    /// other text that parses (a duplicate key, whose last value serde keeps while SQL's JSON
    /// functions may read the first; added whitespace; a number or a string spelt otherwise)
    /// is not exact: verification reports it as altered.
    pub fn from_stored(text: &str) -> Result<(Detail, bool), serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let detail = Detail::from_value(&value);
        let exact = detail.0 == text || serde_json::to_string(&value).is_ok_and(|s| s == text);
        Ok((detail, exact))
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The detail as a JSON value tree (parsed from the text).
    pub fn to_value(&self) -> serde_json::Value {
        // The text is JSON by construction; `Null` if that were ever not so.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The canonical text, taken out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<serde_json::Value> for Detail {
    fn from(value: serde_json::Value) -> Self {
        Detail::from_value(&value)
    }
}

impl From<&serde_json::Value> for Detail {
    fn from(value: &serde_json::Value) -> Self {
        Detail::from_value(value)
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Detail::from)
    }
}

mod ser;

#[cfg(test)]
mod tests;
