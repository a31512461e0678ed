//! Signing and verification. [`verify`] is pure: bytes, the trusted keys, the tenant and the
//! version in use go in; the document or the reason it is refused comes out.
//!
//! Wire form (JSON): `{"format":"tsuzuku-snapshot-v1","kid":"…","body":"<base64 JSON>",
//! "sig":"<base64 Ed25519>"}`. The signature covers `tsuzuku-snapshot-v1\n` followed by the
//! body bytes exactly as carried, so nothing is re-serialised before checking.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::body::{FORMAT, SiteListBody, SnapshotBody};
use crate::error::SnapshotError;

/// Name of the wire format; also the signature's domain-separation prefix.
pub const WIRE_FORMAT: &str = "tsuzuku-snapshot-v1";

/// Largest snapshot accepted (bytes of the wire form).
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    kid: String,
    body: String,
    sig: String,
}

/// Key id of a public key: the first 16 hex digits of SHA-256 over its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

/// Wire format of the connectors' signed site list.
pub const SITES_WIRE_FORMAT: &str = "tsuzuku-sites-v1";

fn signed_message(wire: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(wire.len() + 1 + body.len());
    m.extend_from_slice(wire.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// The control plane's snapshot signing key.
pub struct SnapshotSigner {
    key: SigningKey,
    kid: String,
}

impl fmt::Debug for SnapshotSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SnapshotSigner {
    /// A new random key.
    pub fn generate() -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_key(key)
    }

    fn from_key(key: SigningKey) -> Self {
        let kid = key_id(&key.verifying_key());
        Self { key, kid }
    }

    /// Loads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, SnapshotError> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| SnapshotError::BadKey(format!("not an Ed25519 PKCS#8 PEM key: {e}")))?;
        Ok(Self::from_key(key))
    }

    /// The private key as PKCS#8 PEM (keep it 0600).
    pub fn to_pem(&self) -> Result<String, SnapshotError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|p| p.to_string())
            .map_err(|e| SnapshotError::BadKey(e.to_string()))
    }

    /// The public key as SPKI PEM, for gateways' `snapshot.trust`.
    pub fn public_pem(&self) -> Result<String, SnapshotError> {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| SnapshotError::BadKey(e.to_string()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `body` into the wire form.
    pub fn sign(&self, body: &SnapshotBody) -> Result<Vec<u8>, SnapshotError> {
        let raw = serde_json::to_vec(body)
            .map_err(|e| SnapshotError::Malformed(format!("cannot encode: {e}")))?;
        self.envelope(WIRE_FORMAT, &raw)
    }

    /// Signs a connectors' site list into its wire form.
    pub fn sign_sites(&self, body: &SiteListBody) -> Result<Vec<u8>, SnapshotError> {
        let raw = serde_json::to_vec(body)
            .map_err(|e| SnapshotError::Malformed(format!("cannot encode: {e}")))?;
        self.envelope(SITES_WIRE_FORMAT, &raw)
    }

    fn envelope(&self, wire: &str, raw: &[u8]) -> Result<Vec<u8>, SnapshotError> {
        let sig = self.key.sign(&signed_message(wire, raw));
        let env = Envelope {
            format: wire.into(),
            kid: self.kid.clone(),
            body: B64.encode(raw),
            sig: B64.encode(sig.to_bytes()),
        };
        serde_json::to_vec(&env)
            .map_err(|e| SnapshotError::Malformed(format!("cannot encode: {e}")))
    }
}

/// The public keys a gateway accepts snapshots from, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedKeys {
    /// Parses one or more SPKI PEM public keys (concatenated).
    pub fn from_pem(text: &str) -> Result<Self, SnapshotError> {
        let mut keys = BTreeMap::new();
        let marker = "-----BEGIN PUBLIC KEY-----";
        for (i, chunk) in text.split(marker).skip(1).enumerate() {
            let pem = format!("{marker}{chunk}");
            let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
                SnapshotError::BadKey(format!(
                    "public key #{} is not Ed25519 SPKI PEM: {e}",
                    i + 1
                ))
            })?;
            keys.insert(key_id(&key), key);
        }
        if keys.is_empty() {
            return Err(SnapshotError::BadKey(
                "no \"-----BEGIN PUBLIC KEY-----\" block found".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// Trusts one key.
    pub fn single(signer: &SnapshotSigner) -> Self {
        let key = signer.key.verifying_key();
        let mut keys = BTreeMap::new();
        keys.insert(key_id(&key), key);
        Self { keys }
    }

    fn names(&self) -> String {
        self.keys.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A snapshot that passed [`verify`]: the document and the exact bytes (kept on disk as is).
#[derive(Debug, Clone)]
pub struct Verified {
    pub body: SnapshotBody,
    pub bytes: Vec<u8>,
    pub kid: String,
}

/// Checks the envelope: size, format, a trusted key and its signature. Returns the signed
/// bytes and the key id; nothing unsigned is parsed further.
fn open_envelope(
    bytes: &[u8],
    wire: &str,
    trusted: &TrustedKeys,
) -> Result<(Vec<u8>, String), SnapshotError> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::Malformed(format!(
            "{} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| SnapshotError::Malformed(format!("not a signed envelope: {e}")))?;
    if env.format != wire {
        return Err(SnapshotError::Malformed(format!(
            "format {:?} is not {wire:?}",
            env.format
        )));
    }
    let key = trusted
        .keys
        .get(&env.kid)
        .ok_or_else(|| SnapshotError::UnknownKey {
            kid: env.kid.clone(),
            trusted: trusted.names(),
        })?;
    let raw = B64
        .decode(env.body.as_bytes())
        .map_err(|e| SnapshotError::Malformed(format!("body is not base64: {e}")))?;
    let sig_bytes: [u8; 64] = B64
        .decode(env.sig.as_bytes())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| SnapshotError::Malformed("sig is not a base64 64-byte signature".into()))?;
    key.verify_strict(
        &signed_message(wire, &raw),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| SnapshotError::BadSignature {
        kid: env.kid.clone(),
    })?;
    Ok((raw, env.kid))
}

fn check_common(
    format: u32,
    got_tenant: &str,
    tenant: &str,
    version: i64,
    in_use: Option<i64>,
) -> Result<(), SnapshotError> {
    if format != FORMAT {
        return Err(SnapshotError::Malformed(format!(
            "document format {format} is not {FORMAT}; upgrade this program"
        )));
    }
    if got_tenant != tenant {
        return Err(SnapshotError::WrongTenant {
            got: got_tenant.to_owned(),
            want: tenant.to_owned(),
        });
    }
    if let Some(have) = in_use
        && version <= have
    {
        return Err(SnapshotError::NotNewer { got: version, have });
    }
    Ok(())
}

/// Checks a snapshot in wire form: well-formed, a known format, signed by a trusted key, for
/// `tenant`, and — when `in_use` names the version in use — strictly newer than it.
pub fn verify(
    bytes: &[u8],
    trusted: &TrustedKeys,
    tenant: &str,
    in_use: Option<i64>,
) -> Result<Verified, SnapshotError> {
    let (raw, kid) = open_envelope(bytes, WIRE_FORMAT, trusted)?;
    let body: SnapshotBody = serde_json::from_slice(&raw)
        .map_err(|e| SnapshotError::Malformed(format!("signed body does not parse: {e}")))?;
    check_common(body.format, &body.tenant, tenant, body.version, in_use)?;
    Ok(Verified {
        body,
        bytes: bytes.to_vec(),
        kid,
    })
}

/// A site list that passed [`verify_sites`].
#[derive(Debug, Clone)]
pub struct VerifiedSites {
    pub body: SiteListBody,
    pub bytes: Vec<u8>,
}

/// [`verify`] for the connectors' site list.
pub fn verify_sites(
    bytes: &[u8],
    trusted: &TrustedKeys,
    tenant: &str,
    in_use: Option<i64>,
) -> Result<VerifiedSites, SnapshotError> {
    let (raw, _) = open_envelope(bytes, SITES_WIRE_FORMAT, trusted)?;
    let body: SiteListBody = serde_json::from_slice(&raw)
        .map_err(|e| SnapshotError::Malformed(format!("signed site list does not parse: {e}")))?;
    check_common(body.format, &body.tenant, tenant, body.version, in_use)?;
    Ok(VerifiedSites {
        body,
        bytes: bytes.to_vec(),
    })
}
