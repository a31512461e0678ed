//! Enrolment: the device proves it holds the key it asks a certificate for, and presents a
//! one-time token an administrator created (`tsuzuku device token`). The control plane checks
//! the request ([`EnrollRequest::check`], pure), spends the token, and answers with the
//! certificate ([`EnrollResponse`]).

use serde::{Deserialize, Serialize};

use crate::error::DeviceError;
use crate::key::{DeviceKey, verify_signature};

/// Longest accepted device name.
pub const MAX_NAME: usize = 128;

/// What the device signs to prove it holds the key: a fixed label, the token and the public key.
pub fn proof_message(token: &str, public_raw: &[u8]) -> Vec<u8> {
    let mut m = b"tsuzuku-enroll-v1\0".to_vec();
    m.extend_from_slice(token.as_bytes());
    m.push(0);
    m.extend_from_slice(public_raw);
    m
}

/// `POST /v1/enroll` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrolment token.
    pub token: String,
    /// A name for the device (host name by default), shown to administrators.
    pub name: String,
    /// The device's public key, base64 of the uncompressed P-256 point.
    pub public_key: String,
    /// Base64 signature of [`proof_message`] by the device key.
    pub proof: String,
}

impl EnrollRequest {
    /// Builds a signed request.
    pub fn new(token: &str, name: &str, key: &DeviceKey) -> Result<Self, DeviceError> {
        let proof = key.sign(&proof_message(token, key.public_raw()))?;
        Ok(Self {
            token: token.to_owned(),
            name: name.to_owned(),
            public_key: crate::b64(key.public_raw()),
            proof: crate::b64(&proof),
        })
    }

    /// Checks the shape and the proof of possession; returns the raw public key.
    pub fn check(&self) -> Result<Vec<u8>, DeviceError> {
        let bad = |m: &str| DeviceError::BadEnrollment(m.to_owned());
        if self.token.is_empty() || self.token.len() > 200 {
            return Err(bad("the token is empty or too long"));
        }
        if self.name.is_empty()
            || self.name.len() > MAX_NAME
            || self.name.chars().any(char::is_control)
        {
            return Err(bad("the device name must be 1 to 128 printable characters"));
        }
        let public = crate::unb64("the public key", &self.public_key)?;
        let proof = crate::unb64("the proof", &self.proof)?;
        verify_signature(&public, &proof_message(&self.token, &public), &proof)?;
        Ok(public)
    }
}

/// The control plane's answer to a successful enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollResponse {
    pub device_id: String,
    /// The device certificate (PEM), issued by the device CA.
    pub certificate: String,
    /// The device CA certificate (PEM).
    pub ca: String,
    /// Whether the token marked the device company-issued.
    pub company_issued: bool,
}
