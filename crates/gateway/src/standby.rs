//! Sign-ins while the store is a read-only standby (issue 3: "logins, sessions and decisions
//! work" in read-only failover).
//!
//! A standby refuses every write, and a sign-in normally writes three times: the session, the
//! handoff code that carries it to an app host, and the TOTP step that makes a code single-use.
//! When the store answers a write with [`StoreError::ReadOnly`], the gateway instead:
//!
//! - issues the session as a **sealed token**: the session record itself, with an HMAC by a key
//!   every gateway of the tenant derives from the identity-assertion key (`ro1.`, the base64url
//!   JSON, a dot, the base64url tag). Any node verifies it without the store; it cannot be
//!   forged without the assertion key; it lives at most [`MAX_SECS`] (and never past the
//!   sign-in's absolute limit), since it cannot be listed or revoked in the store;
//! - seals the handoff code the same way (30 s, and single-use on the node that redeems it);
//! - keeps TOTP replay protection in memory: a step is accepted only if it is newer than the one
//!   the store last recorded *and* than any this node accepted since.
//!
//! Every such event is logged and audited as usual (audit events are spooled while the store is
//! read-only). After promotion, new sign-ins get ordinary stored sessions again; sealed ones run
//! out by themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tsuzuku_store::{Session, StoreError};

use crate::assertion::Signer;

/// Prefix of sealed tokens.
pub(crate) const PREFIX: &str = "ro1.";
/// Longest life of a session issued during read-only failover.
pub(crate) const MAX_SECS: i64 = 8 * 3600;

/// Whether a store error means "this is a read-only standby".
pub(crate) fn is_read_only(e: &StoreError) -> bool {
    matches!(e, StoreError::ReadOnly(_))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    /// `session` or `handoff`: a token of one kind never passes for the other.
    kind: String,
    body: T,
}

/// What a sealed handoff code carries: the portal session of the sign-in and where it may go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealedHandoff {
    pub portal: Session,
    pub app_host: String,
    pub expires_at: i64,
    /// Random, so two codes of one sign-in differ (single use is per code).
    pub nonce: String,
}

fn seal<T: Serialize>(signer: &Signer, kind: &str, body: &T) -> Option<String> {
    let json = serde_json::to_vec(&Envelope {
        kind: kind.to_owned(),
        body,
    })
    .ok()?;
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(signer.mac(payload.as_bytes()));
    Some(format!("{PREFIX}{payload}.{tag}"))
}

/// Opens a token sealed with any of `keys` (the assertion keys the gateway holds: a token
/// sealed just before a key rotation still opens).
fn open<T: DeserializeOwned>(keys: &[Arc<Signer>], kind: &str, token: &str) -> Option<T> {
    let rest = token.strip_prefix(PREFIX)?;
    let (payload, tag) = rest.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if !keys.iter().any(|k| k.mac_ok(payload.as_bytes(), &tag)) {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let env: Envelope<T> = serde_json::from_slice(&json).ok()?;
    (env.kind == kind).then_some(env.body)
}

/// Seals a session issued while the store is read-only; its absolute expiry is capped at
/// [`MAX_SECS`] from its creation.
pub(crate) fn seal_session(signer: &Signer, mut s: Session) -> Option<String> {
    s.absolute_expiry = s.absolute_expiry.min(s.created_at.saturating_add(MAX_SECS));
    seal(signer, "session", &s)
}

/// Opens a sealed session token: `None` if it is not one, was not sealed by this tenant's key,
/// or has expired at `now`. Its idle clock reads `now` (a sealed session cannot record
/// activity; its absolute limit bounds it).
pub(crate) fn open_session(keys: &[Arc<Signer>], token: &str, now: i64) -> Option<Session> {
    let mut s: Session = open(keys, "session", token)?;
    if now >= s.absolute_expiry {
        return None;
    }
    s.last_seen = now;
    Some(s)
}

pub(crate) fn seal_handoff(signer: &Signer, h: &SealedHandoff) -> Option<String> {
    seal(signer, "handoff", h)
}

pub(crate) fn open_handoff(keys: &[Arc<Signer>], code: &str, now: i64) -> Option<SealedHandoff> {
    let h: SealedHandoff = open(keys, "handoff", code)?;
    (h.expires_at > now).then_some(h)
}

/// This node's memory of what was used while the store could not record it.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    /// Sealed handoff codes redeemed (their nonce), with their expiry.
    codes: Mutex<HashMap<String, i64>>,
    /// The newest TOTP step accepted per user.
    totp: Mutex<HashMap<String, i64>>,
}

impl Guards {
    /// Marks a sealed handoff code used; `false` if it was used before.
    pub fn use_code(&self, nonce: &str, expires_at: i64, now: i64) -> bool {
        let Ok(mut m) = self.codes.lock() else {
            return false;
        };
        m.retain(|_, exp| *exp > now);
        m.insert(nonce.to_owned(), expires_at).is_none()
    }

    /// Accepts a TOTP `step` for a user whose stored last step is `stored`: only newer than
    /// both the stored one and any this node accepted.
    pub fn consume_totp(&self, user_id: &str, stored: Option<i64>, step: i64) -> bool {
        let Ok(mut m) = self.totp.lock() else {
            return false;
        };
        let last = m.get(user_id).copied().max(stored);
        if last.is_some_and(|l| step <= l) {
            return false;
        }
        m.insert(user_id.to_owned(), step);
        true
    }
}

#[cfg(test)]
mod tests;
