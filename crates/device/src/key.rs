//! The device's key pair: ECDSA P-256, generated on the device. Its PKCS#8 PEM is what rustls
//! presents as the client key; the same key signs enrolment proofs and posture reports
//! (fixed-width `r||s` signatures over SHA-256).

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};

use crate::error::DeviceError;

/// A device key pair.
pub struct DeviceKey {
    pair: EcdsaKeyPair,
    pkcs8_pem: String,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("DeviceKey")
            .field("public", &crate::b64(self.public_raw()))
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, DeviceError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| DeviceError::Generate(e.to_string()))?;
        Self::from_pem(&pair.serialize_pem())
    }

    /// Loads a key from its PKCS#8 PEM (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, DeviceError> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject as _;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| DeviceError::BadPem(format!("device key: {e}")))?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| DeviceError::BadKey(e.to_string()))?;
        Ok(Self {
            pair,
            pkcs8_pem: pem.to_owned(),
        })
    }

    /// The private key as PKCS#8 PEM, for the key file and for rustls.
    pub fn pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// The public key: the uncompressed P-256 point (65 bytes).
    pub fn public_raw(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, DeviceError> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| DeviceError::Generate(format!("signing failed: {e}")))
    }
}

/// Checks that `public_raw` is a P-256 point and that `sig` signs `msg` with it.
pub fn verify_signature(public_raw: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), DeviceError> {
    if public_raw.len() != 65 || public_raw.first() != Some(&4) {
        return Err(DeviceError::BadPublicKey);
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_raw)
        .verify(msg, sig)
        .map_err(|_| DeviceError::BadSignature)
}
