//! DR signing keys: key ids, the set of public keys a connector trusts, and PEM encoding
//! (PKCS#8 for the private key, SubjectPublicKeyInfo for the public key).
//!
//! A key id is the first 16 hexadecimal digits (8 bytes) of the SHA-256 of the raw 32-byte
//! Ed25519 public key.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// The id of a DR public key: 8 bytes, written as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A key id that is not 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 16 lowercase hexadecimal digits")]
pub struct BadKeyId;

impl FromStr for KeyId {
    type Err = BadKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let bytes = s.as_bytes();
        if bytes.len() != 16 {
            return Err(BadKeyId);
        }
        let mut out = [0u8; 8];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (
                pair.first().copied().and_then(nibble),
                pair.get(1).copied().and_then(nibble),
            ) else {
                return Err(BadKeyId);
            };
            *o = (hi << 4) | lo;
        }
        Ok(KeyId(out))
    }
}

/// The id of a public key: the first 8 bytes of SHA-256 over its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    for (o, d) in id.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    KeyId(id)
}

/// A problem with a key file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(
        "not an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----, SubjectPublicKeyInfo): {reason}"
    )]
    PublicPem { reason: String },
    #[error("not an Ed25519 private key in PEM (-----BEGIN PRIVATE KEY-----, PKCS#8): {reason}")]
    PrivatePem { reason: String },
    #[error("the key cannot be encoded as PEM: {reason}")]
    Encode { reason: String },
    #[error("the public key is a weak (small-order) Ed25519 key and cannot be trusted")]
    WeakKey,
}

/// Generates a new DR signing key from the operating system's random source.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Reads a PKCS#8 PEM private key.
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::PrivatePem {
        reason: e.to_string(),
    })
}

/// The private key as PKCS#8 PEM (keep it secret: file mode 0600, offline if possible).
pub fn signing_key_to_pem(key: &SigningKey) -> Result<String, KeyError> {
    key.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map(|z| z.as_str().to_owned())
        .map_err(|e| KeyError::Encode {
            reason: e.to_string(),
        })
}

/// Reads a SubjectPublicKeyInfo PEM public key.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::PublicPem {
        reason: e.to_string(),
    })
}

/// The public key as SubjectPublicKeyInfo PEM.
pub fn verifying_key_to_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| KeyError::Encode {
            reason: e.to_string(),
        })
}

/// The public keys a connector accepts DR records from, by key id. More than one during a key
/// rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl TrustedKeys {
    /// No keys: every record is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key`; returns its id. Refuses weak (small-order) keys.
    pub fn insert(&mut self, key: VerifyingKey) -> Result<KeyId, KeyError> {
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        let id = key_id(&key);
        self.keys.insert(id, key);
        Ok(id)
    }

    /// Trusts the public key in this PEM text; returns its id.
    pub fn insert_pem(&mut self, pem: &str) -> Result<KeyId, KeyError> {
        self.insert(verifying_key_from_pem(pem)?)
    }

    /// The key with this id, if trusted.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// The trusted key ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests;
