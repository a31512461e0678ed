//! The audit event model: what happened ([`EventKind`], [`AuditEvent`]) and its place in the
//! hash chain ([`ChainedEvent`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::detail::Detail;

/// What kind of thing an audit event records. Serialised (and displayed) in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An access decision by the policy decision point (allow or deny, with its inputs).
    Decision,
    /// A successful or failed login.
    Login,
    /// A logout or session revocation.
    Logout,
    /// An administrative change (users, apps, keys, ...).
    Admin,
    /// A policy change (OPS-9).
    Policy,
    /// Something the system did by itself (start, stop, failover, ...).
    System,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Decision,
        EventKind::Login,
        EventKind::Logout,
        EventKind::Admin,
        EventKind::Policy,
        EventKind::System,
    ];

    /// The `snake_case` name used in serialisation, storage and the hash chain.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Login => "login",
            EventKind::Logout => "logout",
            EventKind::Admin => "admin",
            EventKind::Policy => "policy",
            EventKind::System => "system",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown audit event kind {0:?}: expected one of decision, login, logout, admin, policy, system"
)]
pub struct ParseEventKindError(pub String);

impl FromStr for EventKind {
    type Err = ParseEventKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseEventKindError(s.to_owned()))
    }
}

/// One thing that happened, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub kind: EventKind,
    /// Who did it (user id, admin name, service), if anyone.
    pub actor: Option<String>,
    /// The tenant whose chain this event belongs to.
    pub tenant: String,
    /// Free-form details (decision inputs, matched policies, changed fields, ...), held as
    /// canonical JSON text (see [`Detail`]).
    pub detail: Detail,
}

/// An event with its position in a tenant's chain: `hash` covers `seq`, `prev_hash` and the
/// event (see [`crate::chain_hash`]), and `prev_hash` is the `hash` of event `seq - 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedEvent {
    /// Position in the chain, starting at 1 and without gaps.
    pub seq: i64,
    /// Lowercase hex SHA-256 of the previous event ([`crate::GENESIS_HASH`] for `seq == 1`).
    pub prev_hash: String,
    /// Lowercase hex SHA-256 over this event's canonical bytes.
    pub hash: String,
    pub event: AuditEvent,
}

#[cfg(test)]
mod tests;
