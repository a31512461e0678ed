//! The record's text format: parsing a published value, its canonical content (what the
//! signature covers), signing, and splitting a value into DNS TXT strings and joining them back.
//!
//! A value is `key=value` pairs separated by `;`, for example
//! `v=TSZDR1; s=on; m=controlled; t=1767225600; nb=1767225300; na=1767232800; k=3f2a…; sig=…`.
//! The exact rules are in docs/CONTINUITY.md ("The DR trigger record") and in [`parse`].

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::keys::{KeyId, key_id};

/// The format version, the value of `v`.
pub const VERSION: &str = "TSZDR1";
/// The longest value accepted (all TXT strings joined), in bytes.
pub const MAX_RECORD_BYTES: usize = 2048;
/// The longest single DNS TXT string, in bytes (RFC 1035 character-string).
pub const MAX_TXT_STRING: usize = 255;
/// At most this many groups, and this many devices, in a `test` record.
pub const MAX_TARGETS: usize = 64;
/// The longest group name or device id, in bytes.
pub const MAX_TARGET_BYTES: usize = 64;
/// The largest time accepted (unix seconds; the year 9999).
pub const MAX_TIME: i64 = 253_402_300_799;

/// Whether the customer declared disaster recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrState {
    /// Every connector enters DR mode.
    On,
    /// Normal operation (an explicit, signed return; newer than any `on`).
    Off,
    /// A drill: only the named groups and devices enter DR mode.
    Test,
}

impl DrState {
    /// The value as written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            DrState::On => "on",
            DrState::Off => "off",
            DrState::Test => "test",
        }
    }

    /// Parses `on`, `off` or `test`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "on" => Some(DrState::On),
            "off" => Some(DrState::Off),
            "test" => Some(DrState::Test),
            _ => None,
        }
    }
}

impl fmt::Display for DrState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What internet access devices get while in DR mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InternetMode {
    /// Traffic goes direct.
    Open,
    /// Only destinations on the allowlist.
    Controlled,
    /// No internet access.
    Closed,
}

impl InternetMode {
    /// The value as written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            InternetMode::Open => "open",
            InternetMode::Controlled => "controlled",
            InternetMode::Closed => "closed",
        }
    }

    /// Parses `open`, `controlled` or `closed`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "open" => Some(InternetMode::Open),
            "controlled" => Some(InternetMode::Controlled),
            "closed" => Some(InternetMode::Closed),
            _ => None,
        }
    }
}

impl fmt::Display for InternetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signed content of a record, without the key id and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFields {
    /// `s`.
    pub state: DrState,
    /// `m`: required for `on` and `test`, absent for `off`.
    pub internet: Option<InternetMode>,
    /// `t`: when the record was issued (unix seconds). A connector refuses a record older than
    /// the last one it verified.
    pub issued_at: i64,
    /// `nb`: not valid before (unix seconds).
    pub not_before: i64,
    /// `na`: not valid at or after (unix seconds).
    pub not_after: i64,
    /// `g`: for `test`, the groups the drill applies to.
    pub groups: BTreeSet<String>,
    /// `d`: for `test`, the device ids the drill applies to.
    pub devices: BTreeSet<String>,
}

/// A parsed record: its fields, the key id it names and its signature (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    pub fields: RecordFields,
    /// `k`.
    pub key_id: KeyId,
    /// `sig`, decoded.
    pub signature: [u8; 64],
}

/// What is wrong with a record's text or fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("no TXT strings: the name has a TXT record with no text")]
    NoStrings,
    #[error(
        "TXT string {index} is {len} bytes; DNS allows at most {MAX_TXT_STRING} bytes per string"
    )]
    StringTooLong { index: usize, len: usize },
    #[error("the record is {len} bytes; at most {MAX_RECORD_BYTES} are accepted")]
    TooLong { len: usize },
    #[error(
        "byte {offset} of the record is not printable ASCII; the record holds only printable ASCII"
    )]
    NotPrintable { offset: usize },
    #[error("the record is empty")]
    Empty,
    #[error("field {index} is empty (two `;` in a row)")]
    EmptyField { index: usize },
    #[error("field {index} ({text:?}) has no `=`; fields are key=value")]
    NoEquals { index: usize, text: String },
    #[error("unknown key {key:?}; the keys are v, s, m, t, nb, na, g, d, k, sig")]
    UnknownKey { key: String },
    #[error("key {key:?} appears more than once")]
    DuplicateKey { key: &'static str },
    #[error("the required key {key:?} is missing")]
    MissingKey { key: &'static str },
    #[error("the record is unsigned (no sig=); Tsuzuku accepts only signed DR records")]
    Unsigned,
    #[error("format version v={found:?} is not supported; expected v={VERSION}")]
    UnsupportedVersion { found: String },
    #[error("{key}={value:?} is not valid: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("sig is not valid base64 (standard alphabet, padded)")]
    BadBase64,
    #[error("sig decodes to {len} bytes; an Ed25519 signature is 64 bytes")]
    BadSignatureLength { len: usize },
    #[error("the validity is empty or reversed: nb={not_before} is not before na={not_after}")]
    TimesOutOfOrder { not_before: i64, not_after: i64 },
    #[error("a time is outside 0..={MAX_TIME}: {field}={value}")]
    TimeOutOfRange { field: &'static str, value: i64 },
    #[error("s={state} needs an internet mode m=open|controlled|closed")]
    InternetModeMissing { state: DrState },
    #[error("s=off takes no internet mode (m=); remove it")]
    InternetModeWithOff,
    #[error("s=test needs the groups (g=) or devices (d=) the drill applies to")]
    TestWithoutTargets,
    #[error("g= and d= are only for s=test, not s={state}")]
    TargetsOutsideTest { state: DrState },
    #[error("{list} has {count} entries; at most {MAX_TARGETS} are allowed")]
    TooManyTargets { list: &'static str, count: usize },
    #[error(
        "{list} entry {item:?} is not valid: use 1 to {MAX_TARGET_BYTES} of A-Z a-z 0-9 . _ - @ :"
    )]
    BadTarget { list: &'static str, item: String },
}

/// The keys in canonical order.
const KEYS: [&str; 10] = ["v", "s", "m", "t", "nb", "na", "g", "d", "k", "sig"];

fn target_ok(item: &str) -> bool {
    !item.is_empty()
        && item.len() <= MAX_TARGET_BYTES
        && item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

impl RecordFields {
    /// The rules every record's fields follow, checked by [`parse`] and before signing.
    pub fn validate(&self) -> Result<(), RecordError> {
        for (field, value) in [
            ("t", self.issued_at),
            ("nb", self.not_before),
            ("na", self.not_after),
        ] {
            if !(0..=MAX_TIME).contains(&value) {
                return Err(RecordError::TimeOutOfRange { field, value });
            }
        }
        if self.not_before >= self.not_after {
            return Err(RecordError::TimesOutOfOrder {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        match (self.state, self.internet) {
            (DrState::Off, Some(_)) => return Err(RecordError::InternetModeWithOff),
            (DrState::On | DrState::Test, None) => {
                return Err(RecordError::InternetModeMissing { state: self.state });
            }
            _ => {}
        }
        let has_targets = !self.groups.is_empty() || !self.devices.is_empty();
        match self.state {
            DrState::Test if !has_targets => return Err(RecordError::TestWithoutTargets),
            DrState::On | DrState::Off if has_targets => {
                return Err(RecordError::TargetsOutsideTest { state: self.state });
            }
            _ => {}
        }
        for (list, items) in [("g", &self.groups), ("d", &self.devices)] {
            if items.len() > MAX_TARGETS {
                return Err(RecordError::TooManyTargets {
                    list,
                    count: items.len(),
                });
            }
            if let Some(bad) = items.iter().find(|i| !target_ok(i)) {
                return Err(RecordError::BadTarget {
                    list,
                    item: bad.clone(),
                });
            }
        }
        Ok(())
    }

    /// The canonical content: what the signature covers. The pairs in the order
    /// `v s m t nb na g d k`, joined by `"; "`; `m` absent for `off`, `g` and `d` absent when
    /// empty; times in decimal without leading zeros; `g` and `d` entries sorted (byte order),
    /// without duplicates, joined by `,`. Call [`validate`](Self::validate) first.
    pub fn canonical(&self, key_id: &KeyId) -> String {
        let mut pairs: Vec<String> = vec![format!("v={VERSION}"), format!("s={}", self.state)];
        if let Some(m) = self.internet {
            pairs.push(format!("m={m}"));
        }
        pairs.push(format!("t={}", self.issued_at));
        pairs.push(format!("nb={}", self.not_before));
        pairs.push(format!("na={}", self.not_after));
        if !self.groups.is_empty() {
            pairs.push(format!("g={}", join_set(&self.groups)));
        }
        if !self.devices.is_empty() {
            pairs.push(format!("d={}", join_set(&self.devices)));
        }
        pairs.push(format!("k={key_id}"));
        pairs.join("; ")
    }
}

fn join_set(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// Signs `fields` with `key` and returns the record's value: the canonical content followed by
/// `; sig=` and the base64 (standard, padded) Ed25519 signature of the canonical content.
pub fn sign(fields: &RecordFields, key: &SigningKey) -> Result<String, RecordError> {
    fields.validate()?;
    let kid = key_id(&key.verifying_key());
    let canonical = fields.canonical(&kid);
    let sig = key.sign(canonical.as_bytes());
    let value = format!("{canonical}; sig={}", B64.encode(sig.to_bytes()));
    if value.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong { len: value.len() });
    }
    Ok(value)
}

/// Joins the strings of one TXT record into the record's value (DNS splits long text into
/// strings of at most 255 bytes; they are concatenated with nothing in between). Refuses more
/// than [`MAX_RECORD_BYTES`] in all, before copying anything.
pub fn join_strings<S: AsRef<[u8]>>(strings: &[S]) -> Result<String, RecordError> {
    if strings.is_empty() {
        return Err(RecordError::NoStrings);
    }
    let mut total: usize = 0;
    for (index, s) in strings.iter().enumerate() {
        let len = s.as_ref().len();
        if len > MAX_TXT_STRING {
            return Err(RecordError::StringTooLong { index, len });
        }
        total = total.saturating_add(len);
        if total > MAX_RECORD_BYTES {
            return Err(RecordError::TooLong { len: total });
        }
    }
    let mut bytes = Vec::with_capacity(total);
    for s in strings {
        bytes.extend_from_slice(s.as_ref());
    }
    if let Some(offset) = bytes.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        return Err(RecordError::NotPrintable { offset });
    }
    // Printable ASCII is UTF-8.
    String::from_utf8(bytes).map_err(|e| RecordError::NotPrintable {
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Splits a value into TXT strings of at most 255 bytes, in order. Values are ASCII (see
/// [`parse`]), so any byte boundary is a character boundary.
pub fn split_strings(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(MAX_TXT_STRING)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// The value in zone-file form: each string quoted, separated by spaces, e.g.
/// `"v=TSZDR1; s=on; …" "…sig=…"` (the value holds no `"` or `\`).
pub fn zone_file_strings(value: &str) -> String {
    split_strings(value)
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_time(key: &'static str, value: &str) -> Result<i64, RecordError> {
    let bad = || RecordError::BadValue {
        key,
        value: value.to_owned(),
        expected: "unix seconds in decimal, without sign or leading zeros",
    };
    if value.is_empty()
        || value.len() > 12
        || !value.bytes().all(|b| b.is_ascii_digit())
        || (value.len() > 1 && value.starts_with('0'))
    {
        return Err(bad());
    }
    value.parse::<i64>().map_err(|_| bad())
}

fn parse_targets(key: &'static str, value: &str) -> Result<BTreeSet<String>, RecordError> {
    let mut set = BTreeSet::new();
    for (n, item) in value.split(',').enumerate() {
        if n >= MAX_TARGETS {
            return Err(RecordError::TooManyTargets {
                list: key,
                count: value.split(',').count(),
            });
        }
        if !target_ok(item) {
            return Err(RecordError::BadTarget {
                list: key,
                item: item.chars().take(80).collect(),
            });
        }
        set.insert(item.to_owned());
    }
    Ok(set)
}

/// Shortens untrusted text quoted in an error message.
fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a record's value (the TXT strings already joined, see [`join_strings`]).
///
/// The value is printable ASCII, at most [`MAX_RECORD_BYTES`] bytes. Fields are separated by
/// `;`; spaces around a field, its key and its value are ignored; one trailing `;` is
/// allowed. Each field is `key=value` (split at the first `=`), every key at most once, in any
/// order. Required: `v` (= `TSZDR1`), `s`, `t`, `nb`, `na`, `k`, `sig`; `m` for `on` and `test`
/// and not for `off`; `g` and/or `d` for `test` only. The signature is not verified here (see
/// [`crate::check`]).
pub fn parse(value: &str) -> Result<SignedRecord, RecordError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong { len: value.len() });
    }
    if let Some(offset) = value.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(RecordError::NotPrintable { offset });
    }
    let mut slots: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
    let body = value.trim_matches(' ');
    let body = body.strip_suffix(';').unwrap_or(body);
    if body.trim_matches(' ').is_empty() {
        return Err(RecordError::Empty);
    }
    for (index, field) in body.split(';').enumerate() {
        let field = field.trim_matches(' ');
        if field.is_empty() {
            return Err(RecordError::EmptyField { index });
        }
        let Some((k, v)) = field.split_once('=') else {
            return Err(RecordError::NoEquals {
                index,
                text: excerpt(field),
            });
        };
        let k = k.trim_matches(' ');
        let v = v.trim_matches(' ');
        let Some(pos) = KEYS.iter().position(|known| *known == k) else {
            return Err(RecordError::UnknownKey { key: excerpt(k) });
        };
        let (Some(slot), Some(name)) = (slots.get_mut(pos), KEYS.get(pos)) else {
            return Err(RecordError::UnknownKey { key: excerpt(k) });
        };
        if slot.is_some() {
            return Err(RecordError::DuplicateKey { key: name });
        }
        *slot = Some(v);
    }
    let get = |key: &'static str| -> Option<&str> {
        KEYS.iter()
            .position(|k| *k == key)
            .and_then(|i| slots.get(i).copied().flatten())
    };
    let required = |key: &'static str| get(key).ok_or(RecordError::MissingKey { key });

    let v = required("v")?;
    if v != VERSION {
        return Err(RecordError::UnsupportedVersion { found: excerpt(v) });
    }
    // An unsigned record is the first thing to say about it.
    let sig = get("sig").ok_or(RecordError::Unsigned)?;
    let s = required("s")?;
    let state = DrState::from_name(s).ok_or_else(|| RecordError::BadValue {
        key: "s",
        value: excerpt(s),
        expected: "on, off or test",
    })?;
    let internet = match get("m") {
        None => None,
        Some(m) => Some(
            InternetMode::from_name(m).ok_or_else(|| RecordError::BadValue {
                key: "m",
                value: excerpt(m),
                expected: "open, controlled or closed",
            })?,
        ),
    };
    let issued_at = parse_time("t", required("t")?)?;
    let not_before = parse_time("nb", required("nb")?)?;
    let not_after = parse_time("na", required("na")?)?;
    let groups = match get("g") {
        Some(g) => parse_targets("g", g)?,
        None => BTreeSet::new(),
    };
    let devices = match get("d") {
        Some(d) => parse_targets("d", d)?,
        None => BTreeSet::new(),
    };
    let k = required("k")?;
    let key_id: KeyId = k.parse().map_err(|_| RecordError::BadValue {
        key: "k",
        value: excerpt(k),
        expected: "16 lowercase hexadecimal digits",
    })?;
    let sig_bytes = B64.decode(sig).map_err(|_| RecordError::BadBase64)?;
    let signature: [u8; 64] =
        sig_bytes
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::BadSignatureLength {
                len: sig_bytes.len(),
            })?;
    let fields = RecordFields {
        state,
        internet,
        issued_at,
        not_before,
        not_after,
        groups,
        devices,
    };
    fields.validate()?;
    Ok(SignedRecord {
        fields,
        key_id,
        signature,
    })
}

#[cfg(test)]
mod tests;
