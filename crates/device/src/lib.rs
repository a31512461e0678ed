//! Device trust (issue 4, ZT-4): which device a request comes from, and in what state.
//!
//! - [`ca`]: the control plane's device CA — an ECDSA P-256 key and self-signed certificate that
//!   issue one client certificate per enrolled device.
//! - [`key`]: the device's own key pair (ECDSA P-256), generated on the device and never sent
//!   anywhere; it signs the enrolment proof and every posture report.
//! - [`enroll`]: the enrolment request (one-time token, public key, proof of possession) and its
//!   pure check.
//! - [`posture`]: what the connector reports about the device (OS, kernel, disk encryption,
//!   antivirus) and the pure verification of a signed report: signature by the device's key,
//!   the right device, not from the future, not older than the allowed age.
//! - [`collect`]: reading that posture on Linux (`/etc/os-release`, the kernel release, whether
//!   the root file system sits on dm-crypt, whether the configured antivirus process runs and
//!   which version it reports), with the parsing kept pure.
//!
//! A device is identified at the gateway by the SHA-256 fingerprint of the certificate it
//! presents in mutual TLS ([`fingerprint`]), so the gateway needs no X.509 parser: the chain is
//! checked by rustls against the device CA, and the fingerprint names the enrolled device.
//!
//! Invariant: this crate knows certificates, keys, signatures and the posture format. It knows
//! no SQL, no HTTP and no policy language: the store keeps devices, the control plane enrols
//! them, the gateway turns a verified posture into policy facts.

pub mod ca;
pub mod collect;
pub mod enroll;
pub mod key;
pub mod posture;

mod error;

pub use ca::DeviceCa;
pub use enroll::{EnrollRequest, EnrollResponse, proof_message};
pub use error::DeviceError;
pub use key::{DeviceKey, verify_signature};
pub use posture::{Posture, SignedPosture, verify_posture};

use base64::Engine as _;

/// Key purpose under which the control plane keeps the device CA in the store (the private key
/// sealed, the certificate PEM as the public part).
pub const CA_KEY_PURPOSE: &str = "device-ca";
use sha2::{Digest as _, Sha256};

/// The fingerprint that names a device: lower-case hex SHA-256 of its certificate (DER).
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// The fingerprint of the first certificate in a PEM text.
pub fn fingerprint_pem(cert_pem: &str) -> Result<String, DeviceError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| DeviceError::BadPem(format!("certificate: {e}")))?;
    Ok(fingerprint(&der))
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(what: &'static str, text: &str) -> Result<Vec<u8>, DeviceError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| DeviceError::BadEncoding {
            what,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
