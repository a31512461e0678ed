//! The signed identity assertion upstreams receive: a short-lived EdDSA JWT whose audience is
//! the app, verifiable with the keys published at the JWKS URL.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Path of the key set on the portal host.
pub const JWKS_PATH: &str = "/.well-known/tsuzuku/jwks.json";

/// Why an assertion key could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    #[error("assertion signing key is not a valid Ed25519 PKCS#8 key: {0}")]
    BadKey(String),
    #[error("could not sign the identity assertion: {0}")]
    Sign(String),
}

/// The claims of an identity assertion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub user: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
    pub auth_time: i64,
}

/// Signs assertions with one Ed25519 key.
pub struct Signer {
    kid: String,
    key: EncodingKey,
    public: [u8; 32],
    /// HMAC key for read-only-failover tokens (`standby.rs`), derived from the private key so
    /// every gateway of the tenant holds it and upstreams (which see only assertions) never do.
    session_mac: [u8; 32],
}

impl Signer {
    /// Generates a new key; returns the signer and its PKCS#8 PEM for storage.
    pub fn generate() -> Result<(Self, String), AssertionError> {
        let sk = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = sk
            .to_pkcs8_pem(Default::default())
            .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let pem = pem.to_string();
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// Loads a key from PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, AssertionError> {
        let sk =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let public = sk.verifying_key().to_bytes();
        let key = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let kid = hex::encode(Sha256::digest(public).get(..8).unwrap_or_default());
        let mut derive = Sha256::new();
        derive.update(b"tsuzuku/read-only-failover-tokens/v1\0");
        derive.update(sk.to_bytes());
        let session_mac = derive.finalize().into();
        Ok(Self {
            kid,
            key,
            public,
            session_mac,
        })
    }

    /// HMAC-SHA256 of `data` under the read-only-failover token key.
    pub(crate) fn mac(&self, data: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        match hmac::Hmac::<Sha256>::new_from_slice(&self.session_mac) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether `tag` is the MAC of `data` (constant-time comparison).
    pub(crate) fn mac_ok(&self, data: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac as _;
        match hmac::Hmac::<Sha256>::new_from_slice(&self.session_mac) {
            Ok(mut m) => {
                m.update(data);
                m.verify_slice(tag).is_ok()
            }
            Err(_) => false,
        }
    }

    /// The key id published in the JWKS and the JWT header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, AssertionError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| AssertionError::Sign(e.to_string()))
    }

    /// This key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.public),
        })
    }
}

/// A JWKS document for the given signers.
pub fn jwks(signers: &[&Signer]) -> serde_json::Value {
    serde_json::json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn claims() -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            iss: "https://auth.example".into(),
            aud: "https://app.example".into(),
            sub: "u1".into(),
            iat: now,
            exp: now + 60,
            jti: "j".into(),
            user: "alice".into(),
            name: "Alice".into(),
            email: None,
            groups: vec!["sales".into()],
            amr: vec!["pwd".into(), "otp".into()],
            auth_time: now,
        }
    }

    #[test]
    fn assertion_verifies_with_published_jwk_and_audience() {
        let (signer, pem) = Signer::generate().unwrap();
        let again = Signer::from_pem(&pem).unwrap();
        assert_eq!(again.kid(), signer.kid());
        let token = signer.sign(&claims()).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks(&[&signer])).unwrap();
        let jwk = jwks.find(signer.kid()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["https://app.example"]);
        v.set_issuer(&["https://auth.example"]);
        let got = jsonwebtoken::decode::<Claims>(&token, &key, &v).unwrap();
        assert_eq!(got.claims, claims_with(&got.claims));
        let mut wrong_aud = Validation::new(Algorithm::EdDSA);
        wrong_aud.set_audience(&["https://other.example"]);
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &wrong_aud).is_err());
    }

    fn claims_with(c: &Claims) -> Claims {
        Claims {
            iat: c.iat,
            exp: c.exp,
            auth_time: c.auth_time,
            ..claims()
        }
    }

    #[test]
    fn garbage_key_is_a_clear_error() {
        let err = Signer::from_pem("not a key").err().unwrap().to_string();
        assert!(err.contains("Ed25519"), "{err}");
    }
}
