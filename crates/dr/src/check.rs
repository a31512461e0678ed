//! Verifying a record and concluding what a connector does: a pure function of the TXT
//! strings, the trusted keys, the time, the last verified record and the device's identity.
//!
//! A record is refused — and changes nothing — when it is malformed or unsigned, signed with a
//! key that is not trusted, wrongly signed, older than the last verified one (a replay), issued
//! more than [`CLOCK_SKEW_SECS`] in the future, not yet valid (`now < nb`) or expired
//! (`now >= na`). An accepted `on` record puts every device in DR mode until `na`; a `test`
//! record only the devices and members of groups it names (a drill; the others stay normal);
//! `off` returns everyone to normal.

use std::fmt;

use ed25519_dalek::Signature;

use crate::keys::{KeyId, TrustedKeys};
use crate::record::{self, DrState, InternetMode, RecordError, RecordFields};

/// How far in the future a record's issue time (`t`) may be, for clocks that are a little off.
/// `tsuzuku dr record` sets `nb` this much before `t` for the same reason.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Who is asking: the device's id and its user's groups (a `test` record names them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub groups: Vec<String>,
    pub device_id: Option<String>,
}

/// A record whose signature was verified with a trusted key. Only [`authenticate`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    fields: RecordFields,
    key_id: KeyId,
    value: String,
}

impl Verified {
    /// The signed fields.
    pub fn fields(&self) -> &RecordFields {
        &self.fields
    }

    /// The key that signed it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The record's whole value as published (what a state file keeps).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// `t`: when it was issued.
    pub fn issued_at(&self) -> i64 {
        self.fields.issued_at
    }

    pub fn state(&self) -> DrState {
        self.fields.state
    }

    /// Whether a `test` record names this device or one of its groups (always true for `on`
    /// and `off`).
    pub fn applies_to(&self, member: &Member) -> bool {
        if self.fields.state != DrState::Test {
            return true;
        }
        member.groups.iter().any(|g| self.fields.groups.contains(g))
            || member
                .device_id
                .as_ref()
                .is_some_and(|d| self.fields.devices.contains(d))
    }
}

/// Why a record was refused. A refused record changes nothing: the last verified state stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("malformed DR record: {0}")]
    Malformed(#[from] RecordError),
    #[error(
        "the DR record is signed with key {key_id}, which is not trusted (trusted: {trusted}); \
         add its public key to the trusted DR keys or re-sign with a trusted key"
    )]
    UnknownKey { key_id: KeyId, trusted: String },
    #[error(
        "the DR record's signature does not verify with key {key_id}: it was altered or forged"
    )]
    BadSignature { key_id: KeyId },
    #[error(
        "the DR record was issued at {issued_at}, before the last verified one ({last_issued_at}): \
         a replayed older record"
    )]
    Replayed { issued_at: i64, last_issued_at: i64 },
    #[error(
        "the DR record claims to be issued at {issued_at}, more than {CLOCK_SKEW_SECS} s after \
         now ({now}); check the signing machine's clock"
    )]
    IssuedInFuture { issued_at: i64, now: i64 },
    #[error("the DR record is not valid before {not_before} (now {now})")]
    NotYetValid { not_before: i64, now: i64 },
    #[error("the DR record expired at {not_after} (now {now}); publish a new one")]
    Expired { not_after: i64, now: i64 },
}

impl Rejection {
    /// Whether the record was authentic (signed by a trusted key) and refused only for its
    /// times.
    pub fn authentic(&self) -> bool {
        matches!(
            self,
            Rejection::Replayed { .. }
                | Rejection::IssuedInFuture { .. }
                | Rejection::NotYetValid { .. }
                | Rejection::Expired { .. }
        )
    }
}

/// The terms of DR mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrMode {
    pub internet: InternetMode,
    /// DR mode ends at this time (unix seconds, the record's `na`) unless a newer record says
    /// otherwise.
    pub until: i64,
    /// A drill (`test` record) rather than a real disaster.
    pub drill: bool,
    /// When the record was issued.
    pub issued_at: i64,
}

/// Why a connector is in the mode it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// An `on` record.
    On,
    /// A `test` record naming this device or one of its groups.
    Drill,
    /// A `test` record for other devices and groups.
    DrillForOthers,
    /// An `off` record.
    Off,
    /// The last verified record expired.
    Expired,
    /// The last verified record is not valid yet (the clock moved back).
    NotYetValid,
    /// No record was ever verified.
    NoRecord,
    /// The record was withdrawn (the name has no TXT record).
    Withdrawn,
}

/// What a connector concludes: DR mode and its terms, or normal mode; why; and the record it
/// follows (to remember).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    /// `Some` in DR mode.
    pub dr: Option<DrMode>,
    pub reason: Reason,
    /// The verified record this follows, if any.
    pub record: Option<Verified>,
}

impl Conclusion {
    pub fn dr_active(&self) -> bool {
        self.dr.is_some()
    }

    /// When the record this follows was issued.
    pub fn issued_at(&self) -> Option<i64> {
        self.record.as_ref().map(Verified::issued_at)
    }

    fn normal(reason: Reason, record: Option<Verified>) -> Self {
        Self {
            dr: None,
            reason,
            record,
        }
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dr {
            Some(dr) => write!(
                f,
                "DR mode {}: internet {} until {}",
                if dr.drill { "(drill)" } else { "on" },
                dr.internet,
                dr.until
            )?,
            None => {
                let why = match self.reason {
                    Reason::Off => "the record says off",
                    Reason::DrillForOthers => "a drill for other groups and devices",
                    Reason::Expired => "the last record expired",
                    Reason::NotYetValid => "the last record is not valid yet",
                    Reason::NoRecord => "no DR record",
                    Reason::Withdrawn => "the record was withdrawn",
                    Reason::On | Reason::Drill => "",
                };
                write!(f, "normal mode: {why}")?;
            }
        }
        if let Some(r) = &self.record {
            write!(
                f,
                "; record issued at {} by key {}",
                r.issued_at(),
                r.key_id()
            )?;
        }
        Ok(())
    }
}

/// Joins and parses the strings of one TXT record and verifies its signature with the trusted
/// key it names. Times are not looked at (see [`evaluate`]).
pub fn authenticate<S: AsRef<[u8]>>(
    strings: &[S],
    trusted: &TrustedKeys,
) -> Result<Verified, Rejection> {
    let value = record::join_strings(strings)?;
    authenticate_value(&value, trusted)
}

/// [`authenticate`] for a value already joined.
pub fn authenticate_value(value: &str, trusted: &TrustedKeys) -> Result<Verified, Rejection> {
    let parsed = record::parse(value)?;
    let Some(key) = trusted.get(&parsed.key_id) else {
        return Err(Rejection::UnknownKey {
            key_id: parsed.key_id,
            trusted: if trusted.is_empty() {
                "none".to_owned()
            } else {
                trusted
                    .ids()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    };
    let canonical = parsed.fields.canonical(&parsed.key_id);
    let signature = Signature::from_bytes(&parsed.signature);
    key.verify_strict(canonical.as_bytes(), &signature)
        .map_err(|_| Rejection::BadSignature {
            key_id: parsed.key_id,
        })?;
    Ok(Verified {
        fields: parsed.fields,
        key_id: parsed.key_id,
        value: value.to_owned(),
    })
}

/// Applies the time rules to an authentic record and concludes. `last` is the last verified
/// record (for replay protection).
pub fn evaluate(
    record: Verified,
    now: i64,
    last: Option<&Verified>,
    member: &Member,
) -> Result<Conclusion, Rejection> {
    let f = &record.fields;
    if let Some(last) = last
        && f.issued_at < last.issued_at()
    {
        return Err(Rejection::Replayed {
            issued_at: f.issued_at,
            last_issued_at: last.issued_at(),
        });
    }
    if f.issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::IssuedInFuture {
            issued_at: f.issued_at,
            now,
        });
    }
    if now < f.not_before {
        return Err(Rejection::NotYetValid {
            not_before: f.not_before,
            now,
        });
    }
    if now >= f.not_after {
        return Err(Rejection::Expired {
            not_after: f.not_after,
            now,
        });
    }
    Ok(conclude_valid(record, member))
}

/// The conclusion from a record valid now.
fn conclude_valid(record: Verified, member: &Member) -> Conclusion {
    let f = &record.fields;
    let dr = |drill| DrMode {
        // validate() guarantees an internet mode for on and test.
        internet: f.internet.unwrap_or(InternetMode::Closed),
        until: f.not_after,
        drill,
        issued_at: f.issued_at,
    };
    let (dr, reason) = match f.state {
        DrState::On => (Some(dr(false)), Reason::On),
        DrState::Test if record.applies_to(member) => (Some(dr(true)), Reason::Drill),
        DrState::Test => (None, Reason::DrillForOthers),
        DrState::Off => (None, Reason::Off),
    };
    Conclusion {
        dr,
        reason,
        record: Some(record),
    }
}

/// Verifies one TXT record's strings and concludes: [`authenticate`] then [`evaluate`].
pub fn check<S: AsRef<[u8]>>(
    strings: &[S],
    trusted: &TrustedKeys,
    now: i64,
    last: Option<&Verified>,
    member: &Member,
) -> Result<Conclusion, Rejection> {
    evaluate(authenticate(strings, trusted)?, now, last, member)
}

/// What a remembered record means now (used when DNS cannot be asked): its terms while it is
/// valid, normal mode once it expired.
pub fn conclude(record: &Verified, now: i64, member: &Member) -> Conclusion {
    let f = &record.fields;
    if now >= f.not_after {
        Conclusion::normal(Reason::Expired, Some(record.clone()))
    } else if now < f.not_before {
        Conclusion::normal(Reason::NotYetValid, Some(record.clone()))
    } else {
        conclude_valid(record.clone(), member)
    }
}

/// Normal mode without a record.
pub fn no_record() -> Conclusion {
    Conclusion::normal(Reason::NoRecord, None)
}

/// Normal mode because the record was withdrawn.
pub fn withdrawn() -> Conclusion {
    Conclusion::normal(Reason::Withdrawn, None)
}

#[cfg(test)]
mod tests;
