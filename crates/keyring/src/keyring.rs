//! Data keys, sealing and opening values, and master-key rotation.
//!
//! Formats (all text, so any SQL backend stores them as TEXT):
//!
//! - a **wrapped data key** ([`WrappedKey::wrapped`]): `tzk1:` + base64url (no padding) of
//!   nonce (12 bytes) ‖ AES-256-GCM(master key, data key) (32 bytes) ‖ tag (16 bytes). The AAD
//!   is `tsuzuku data key v1 NUL <master id> NUL <data key id>`, so a wrapped key cannot be
//!   moved to another id.
//! - a **sealed value** ([`Keyring::seal`]): `tz1:<data key id>:` + base64url (no padding) of
//!   nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes). The AAD is `tz1 NUL <data key id> NUL
//!   <field>`, where the field names the column and row ([`field`]), so a value copied to another
//!   row or column does not open.
//!
//! Nonces are 96 random bits from the operating system for every encryption. A failed tag check
//! (AES-GCM verifies in constant time) is reported as [`KeyringError::Unauthentic`] and no
//! plaintext is returned.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::error::{KeyringError, Result};
use crate::master::{KEY_LEN, MasterKey, random_key};

#[cfg(test)]
mod tests;

/// Prefix (format version) of sealed values.
pub const SEALED_PREFIX: &str = "tz1:";
/// Prefix (format version) of wrapped data keys.
pub const WRAPPED_PREFIX: &str = "tzk1:";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_KEY_ID_LEN: usize = 64;
const WRAP_AAD_LABEL: &[u8] = b"tsuzuku data key v1\0";

/// A data key as the database stores it (a `data_keys` row): no secret in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The data key's id, as named in sealed values (`dk-` and 16 hex digits when generated).
    pub id: String,
    /// Id of the master key that wrapped it ([`MasterKey::id`]).
    pub master_id: String,
    /// The wrapped key, `tzk1:...` text.
    pub wrapped: String,
    /// When the data key was generated (the caller's clock, e.g. Unix seconds). The newest data
    /// key is the active one.
    pub created_at: i64,
}

struct DataKey {
    /// Kept for re-wrapping; zeroized on drop.
    bytes: Zeroizing<[u8; KEY_LEN]>,
    /// Zeroizes its key schedule on drop (aes-gcm `zeroize` feature).
    cipher: Aes256Gcm,
    created_at: i64,
}

/// The master key and the unwrapped data keys, in memory. The newest data key seals new values;
/// every loaded data key opens.
pub struct Keyring {
    master: MasterKey,
    keys: BTreeMap<String, DataKey>,
    active: Option<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master)
            .field("data_keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Unwraps every data key with `master`. Keys wrapped by another master key give
    /// [`KeyringError::WrongMasterKey`] naming them; a key that names this master but does not
    /// decrypt gives [`KeyringError::DataKeyCorrupt`]. No data key at all is fine: generate one
    /// before sealing.
    pub fn new(master: MasterKey, wrapped: Vec<WrappedKey>) -> Result<Self> {
        let mut keys = BTreeMap::new();
        let mut foreign: Vec<&WrappedKey> = Vec::new();
        for w in &wrapped {
            check_key_id(&w.id).map_err(|reason| KeyringError::MalformedWrappedKey {
                key_id: w.id.clone(),
                reason,
            })?;
            if keys.contains_key(&w.id) || foreign.iter().any(|f| f.id == w.id) {
                return Err(KeyringError::DuplicateDataKey {
                    key_id: w.id.clone(),
                });
            }
            if w.master_id != master.id() {
                foreign.push(w);
                continue;
            }
            let bytes = unwrap_key(&master, w)?;
            keys.insert(w.id.clone(), DataKey::new(bytes, w.created_at));
        }
        if !foreign.is_empty() {
            let mut wrapped_by: Vec<String> = foreign.iter().map(|w| w.master_id.clone()).collect();
            wrapped_by.sort();
            wrapped_by.dedup();
            return Err(KeyringError::WrongMasterKey {
                origin: master.source().to_string(),
                master_id: master.id().to_owned(),
                data_keys: foreign.iter().map(|w| w.id.clone()).collect(),
                wrapped_by,
            });
        }
        let active = keys
            .iter()
            .max_by(|a, b| (a.1.created_at, a.0).cmp(&(b.1.created_at, b.0)))
            .map(|(id, _)| id.clone());
        Ok(Self {
            master,
            keys,
            active,
        })
    }

    /// Generates a new data key, makes it the active one for [`Self::seal`], and returns its
    /// wrapped form, which the caller must store before sealing anything with it.
    pub fn generate_data_key(&mut self, now: i64) -> Result<WrappedKey> {
        let mut id = new_key_id()?;
        // 64 random bits: a clash is not expected, but never reuse an id.
        let mut tries = 0;
        while self.keys.contains_key(&id) {
            tries += 1;
            if tries > 8 {
                return Err(KeyringError::Random {
                    reason: "it keeps producing data key ids that exist already".into(),
                });
            }
            id = new_key_id()?;
        }
        let bytes = random_key()?;
        let wrapped = wrap_key(&self.master, &id, &bytes, now)?;
        self.keys.insert(id.clone(), DataKey::new(bytes, now));
        self.active = Some(id);
        Ok(wrapped)
    }

    /// Encrypts `plaintext` with the active data key, bound to `field` (see [`field`]).
    pub fn seal(&self, field: &str, plaintext: &[u8]) -> Result<String> {
        let (key_id, key) = self
            .active
            .as_ref()
            .and_then(|id| self.keys.get(id).map(|k| (id, k)))
            .ok_or(KeyringError::NoActiveDataKey)?;
        let nonce = Nonce::try_generate().map_err(|e| KeyringError::Random {
            reason: e.to_string(),
        })?;
        let aad = value_aad(key_id, field);
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyringError::TooLarge {
                field: field.to_owned(),
                len: plaintext.len(),
            })?;
        let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&ciphertext);
        Ok(format!(
            "{SEALED_PREFIX}{key_id}:{}",
            URL_SAFE_NO_PAD.encode(&payload)
        ))
    }

    /// Decrypts a value sealed for `field`. A value altered in any byte, sealed for another
    /// field, or sealed with a data key this keyring lacks gives an error, never plaintext.
    pub fn open(&self, field: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>> {
        let parsed = parse_sealed(sealed)?;
        let key = self
            .keys
            .get(parsed.key_id)
            .ok_or_else(|| KeyringError::UnknownDataKey {
                key_id: parsed.key_id.to_owned(),
                known: self.keys.keys().cloned().collect(),
            })?;
        let (nonce, ciphertext) =
            parsed
                .payload
                .split_at_checked(NONCE_LEN)
                .ok_or_else(|| KeyringError::Malformed {
                    reason: "its data is shorter than a nonce".into(),
                })?;
        let nonce = Nonce::try_from(nonce).map_err(|_| KeyringError::Malformed {
            reason: "its nonce is not 12 bytes".into(),
        })?;
        let aad = value_aad(parsed.key_id, field);
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyringError::Unauthentic {
                field: field.to_owned(),
                key_id: parsed.key_id.to_owned(),
            })
    }

    /// Wraps every data key under `new_master` (master-key rotation). The sealed values stay as
    /// they are: store the returned rows (replacing the old ones, in one transaction) and start
    /// Tsuzuku with the new master key. This keyring keeps its current master key.
    pub fn rewrap(&self, new_master: &MasterKey) -> Result<Vec<WrappedKey>> {
        let mut out = self
            .keys
            .iter()
            .map(|(id, k)| wrap_key(new_master, id, &k.bytes, k.created_at))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// [`Self::rewrap`], then use `new_master` from now on (for data keys generated later).
    pub fn rotate_master(&mut self, new_master: MasterKey) -> Result<Vec<WrappedKey>> {
        let out = self.rewrap(&new_master)?;
        self.master = new_master;
        Ok(out)
    }

    /// True when `text` has the form of a sealed value (any format version). A structural
    /// check: it says nothing about whether the value opens.
    pub fn is_sealed(text: &str) -> bool {
        matches!(
            parse_sealed(text),
            Ok(_) | Err(KeyringError::UnsupportedVersion { .. })
        )
    }

    /// Id of the master key in use.
    pub fn master_id(&self) -> &str {
        self.master.id()
    }

    /// Id of the data key that seals new values, if any.
    pub fn active_key_id(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Ids of all loaded data keys, in order.
    pub fn data_key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// The AAD string for a value in `column` of row `row` of tenant `tenant`:
/// `column:tenant:row`, with `%` and `:` percent-escaped in each part so that no two different
/// triples give the same string. Example: `field("users.totp_secret", "t1", "u42")`.
pub fn field(column: &str, tenant: &str, row: &str) -> String {
    fn push_escaped(out: &mut String, part: &str) {
        for c in part.chars() {
            match c {
                '%' => out.push_str("%25"),
                ':' => out.push_str("%3A"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(column.len() + tenant.len() + row.len() + 2);
    push_escaped(&mut out, column);
    out.push(':');
    push_escaped(&mut out, tenant);
    out.push(':');
    push_escaped(&mut out, row);
    out
}

impl DataKey {
    fn new(bytes: Zeroizing<[u8; KEY_LEN]>, created_at: i64) -> Self {
        let cipher = Aes256Gcm::new((&*bytes).into());
        Self {
            bytes,
            cipher,
            created_at,
        }
    }
}

fn new_key_id() -> Result<String> {
    let raw: [u8; 8] = Generate::try_generate().map_err(|e| KeyringError::Random {
        reason: e.to_string(),
    })?;
    Ok(format!("dk-{}", hex::encode(raw)))
}

/// Key ids appear inside sealed values between `:` separators: 1 to 64 of `A-Z a-z 0-9 - _`.
fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
        return Err(format!(
            "the id must be 1 to {MAX_KEY_ID_LEN} characters, not {}",
            id.len()
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the id may hold only letters, digits, '-' and '_'".into());
    }
    Ok(())
}

fn wrap_aad(master_id: &str, key_id: &str) -> Vec<u8> {
    let mut aad = WRAP_AAD_LABEL.to_vec();
    aad.extend_from_slice(master_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

fn value_aad(key_id: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(5 + key_id.len() + field.len());
    aad.extend_from_slice(b"tz1\0");
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

fn wrap_key(
    master: &MasterKey,
    key_id: &str,
    bytes: &[u8; KEY_LEN],
    created_at: i64,
) -> Result<WrappedKey> {
    let cipher = Aes256Gcm::new(master.bytes().into());
    let nonce = Nonce::try_generate().map_err(|e| KeyringError::Random {
        reason: e.to_string(),
    })?;
    let aad = wrap_aad(master.id(), key_id);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: bytes,
                aad: &aad,
            },
        )
        .map_err(|_| KeyringError::TooLarge {
            field: format!("data key {key_id}"),
            len: KEY_LEN,
        })?;
    let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&ciphertext);
    Ok(WrappedKey {
        id: key_id.to_owned(),
        master_id: master.id().to_owned(),
        wrapped: format!("{WRAPPED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload)),
        created_at,
    })
}

fn unwrap_key(master: &MasterKey, w: &WrappedKey) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let malformed = |reason: &str| KeyringError::MalformedWrappedKey {
        key_id: w.id.clone(),
        reason: reason.to_owned(),
    };
    let data = w
        .wrapped
        .strip_prefix(WRAPPED_PREFIX)
        .ok_or_else(|| malformed("it does not start with tzk1:"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| malformed("it is not valid base64url"))?;
    if payload.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return Err(malformed(
            "it has the wrong length for a wrapped 32-byte key",
        ));
    }
    let (nonce, ciphertext) = payload
        .split_at_checked(NONCE_LEN)
        .ok_or_else(|| malformed("it is shorter than a nonce"))?;
    let nonce = Nonce::try_from(nonce).map_err(|_| malformed("its nonce is not 12 bytes"))?;
    let cipher = Aes256Gcm::new(master.bytes().into());
    let aad = wrap_aad(master.id(), &w.id);
    let plain = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| KeyringError::DataKeyCorrupt {
            key_id: w.id.clone(),
            master_id: master.id().to_owned(),
        })?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(malformed("it does not hold a 32-byte key"));
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

struct ParsedSealed<'a> {
    key_id: &'a str,
    payload: Vec<u8>,
}

fn parse_sealed(text: &str) -> Result<ParsedSealed<'_>> {
    let malformed = |reason: &str| KeyringError::Malformed {
        reason: reason.to_owned(),
    };
    let (version, rest) = text
        .split_once(':')
        .ok_or_else(|| malformed("it has no format prefix"))?;
    if version != "tz1" {
        return match version.strip_prefix("tz") {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Err(KeyringError::UnsupportedVersion {
                    version: version.to_owned(),
                })
            }
            _ => Err(malformed("it does not start with tz1:")),
        };
    }
    let (key_id, data) = rest
        .split_once(':')
        .ok_or_else(|| malformed("it has no data key id"))?;
    check_key_id(key_id).map_err(|_| malformed("its data key id is not valid"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| malformed("its data is not valid base64url"))?;
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err(malformed("its data is too short to hold a nonce and a tag"));
    }
    Ok(ParsedSealed { key_id, payload })
}
