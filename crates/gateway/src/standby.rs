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
//!   the store last recorded *and* than any this node accepted since — and claims it on the
//!   standby (a PostgreSQL advisory lock, `Store::claim_while_read_only`), so that no other node
//!   of the tenant accepts it either;
//! - for an OpenID Connect sign-in, seals the pending login (state, nonce, PKCE verifier,
//!   return target, expiry: what the store would have kept for the provider's round trip) the
//!   same way and hands it to the browser in a cookie ([`OIDC_COOKIE`]) that is sent only to
//!   the callback path and lives as long as a stored pending login would. The `state` sent to
//!   the provider stays a random value; the callback accepts the sealed login only if the
//!   `state` it carries back equals the sealed one (constant-time), and only once on the node
//!   that receives it. A user the store already knows from an earlier OIDC sign-in is signed in
//!   with the stored account (groups included) until the store takes writes again.
//!
//! The sealed pending login is authenticated, not encrypted. Its secrets (nonce and PKCE
//! verifier) are visible only to the owner of the browser that started the sign-in, who could
//! use them for nothing but finishing that same sign-in: the cookie is `HttpOnly`, `Secure`,
//! host-only and path-limited, it never appears in a URL, and without it the callback fails.
//! An intercepted authorization code is still of no use to anyone else: redeeming it through
//! the gateway needs this browser's cookie; redeeming it at the provider needs the PKCE
//! verifier (in that same cookie) and, for a confidential client, the gateway's client secret;
//! and the provider accepts a code once. Encrypting the cookie would hide these values only
//! from the browser's owner, who gains nothing from them that signing in does not give.
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
use tsuzuku_identity::token::ct_eq;
use tsuzuku_store::{OidcPending, Session, StoreError};

use crate::assertion::Signer;

/// Prefix of sealed tokens.
pub(crate) const PREFIX: &str = "ro1.";
/// Longest life of a session issued during read-only failover.
pub(crate) const MAX_SECS: i64 = 8 * 3600;
/// How long a TOTP step claimed on the standby stays claimed: longer than any code is accepted
/// (its own 30 s step and one step of clock skew either side).
pub(crate) const TOTP_CLAIM_HOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether a store error means "this is a read-only standby".
pub(crate) fn is_read_only(e: &StoreError) -> bool {
    matches!(e, StoreError::ReadOnly(_))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    /// `session`, `handoff` or `oidc`: a token of one kind never passes for another.
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

/// Cookie that carries a sealed pending OIDC sign-in. Not `__Host-` (that prefix demands
/// `Path=/`): `__Secure-` without a `Domain`, so it is still host-only, and sent only to
/// [`OIDC_CALLBACK_PATH`].
pub(crate) const OIDC_COOKIE: &str = "__Secure-tsuzuku_oidc_ro";
/// The portal path of the provider's callback, the only path the sealed pending login is sent to.
pub(crate) const OIDC_CALLBACK_PATH: &str = "/.tsuzuku/oidc/callback";
/// Longest sealed pending login put in a cookie (browsers keep cookies up to about 4 KiB).
pub(crate) const MAX_OIDC_COOKIE: usize = 3800;

/// What a sealed pending OIDC sign-in carries: what the store keeps of one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedOidc {
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    expires_at: i64,
}

/// Seals a pending OIDC sign-in that the store refused to keep.
pub(crate) fn seal_oidc(signer: &Signer, p: &OidcPending) -> Option<String> {
    seal(
        signer,
        "oidc",
        &SealedOidc {
            state: p.state.clone(),
            nonce: p.nonce.clone(),
            pkce_verifier: p.pkce_verifier.clone(),
            return_to: p.return_to.clone(),
            expires_at: p.expires_at,
        },
    )
}

/// Opens a sealed pending OIDC sign-in for the callback that carries `state`: `None` if it is
/// not one, was not sealed by this tenant's key, has expired at `now`, or belongs to another
/// `state`.
pub(crate) fn open_oidc(
    keys: &[Arc<Signer>],
    token: &str,
    state: &str,
    now: i64,
) -> Option<OidcPending> {
    let p: SealedOidc = open(keys, "oidc", token)?;
    if p.expires_at <= now || state.is_empty() || !ct_eq(&p.state, state) {
        return None;
    }
    Some(OidcPending {
        state: p.state,
        nonce: p.nonce,
        pkce_verifier: p.pkce_verifier,
        return_to: p.return_to,
        expires_at: p.expires_at,
    })
}

/// The `Set-Cookie` value for [`OIDC_COOKIE`]: `value` for `max_age` seconds (`0` deletes it).
pub(crate) fn oidc_cookie(value: &str, max_age: i64) -> String {
    format!(
        "{OIDC_COOKIE}={value}; Path={OIDC_CALLBACK_PATH}; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    )
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

    /// Marks the sealed pending OIDC sign-in of `state` used; `false` if it was used before.
    /// (States and handoff nonces share one map; the prefix keeps them apart.)
    pub fn use_oidc_state(&self, state: &str, expires_at: i64, now: i64) -> bool {
        self.use_code(&format!("oidc:{state}"), expires_at, now)
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
