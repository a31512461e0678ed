//! The device CA: an ECDSA P-256 key and a self-signed CA certificate, kept by the control plane
//! (the key sealed in the store). It issues client certificates for enrolled devices: subject
//! common name = the device id, extended key usage = TLS client authentication only.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm,
};

use crate::error::DeviceError;

const CA_NAME: &str = "Tsuzuku device CA";

/// A device CA able to issue certificates.
pub struct DeviceCa {
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

fn ca_params(tenant: &str) -> Result<CertificateParams, DeviceError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| DeviceError::Generate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, format!("Tsuzuku tenant {tenant}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A device's public key as rcgen needs it (uncompressed P-256 point).
struct RawP256<'a>(&'a [u8]);

impl PublicKeyData for RawP256<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl DeviceCa {
    /// A new CA for `tenant`, valid for `years` from `now_unix`.
    pub fn generate(tenant: &str, now_unix: i64, years: i64) -> Result<Self, DeviceError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| DeviceError::Generate(e.to_string()))?;
        let mut params = ca_params(tenant)?;
        params.not_before = at(now_unix.saturating_sub(300))?;
        params.not_after = at(now_unix.saturating_add(years.saturating_mul(366 * 86_400)))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| DeviceError::Generate(e.to_string()))?;
        Ok(Self {
            key,
            cert_pem: cert.pem(),
        })
    }

    /// Loads a CA from its key (PKCS#8 PEM) and certificate (PEM) as stored.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, DeviceError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| DeviceError::BadKey(e.to_string()))?;
        crate::fingerprint_pem(cert_pem)?;
        Ok(Self {
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA private key, PKCS#8 PEM (to be sealed in the store).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate, PEM (public: gateways trust it for client certificates).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a client certificate for a device's public key (uncompressed P-256 point), with
    /// the device id as common name, valid from `now_unix` for `valid_days`.
    pub fn issue(
        &self,
        tenant: &str,
        device_id: &str,
        public_raw: &[u8],
        now_unix: i64,
        valid_days: i64,
    ) -> Result<String, DeviceError> {
        if public_raw.len() != 65 || public_raw.first() != Some(&4) {
            return Err(DeviceError::BadPublicKey);
        }
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| DeviceError::Generate(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        dn.push(DnType::OrganizationName, format!("Tsuzuku tenant {tenant}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = at(now_unix.saturating_sub(300))?;
        params.not_after = at(now_unix.saturating_add(valid_days.saturating_mul(86_400)))?;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|e| DeviceError::Generate(format!("no random serial: {e}")))?;
        if let Some(first) = serial.first_mut() {
            *first &= 0x7f;
        }
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let issuer = Issuer::new(ca_params(tenant)?, &self.key);
        let cert = params
            .signed_by(&RawP256(public_raw), &issuer)
            .map_err(|e| DeviceError::Generate(e.to_string()))?;
        Ok(cert.pem())
    }
}

fn at(unix: i64) -> Result<time::OffsetDateTime, DeviceError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| DeviceError::Generate(format!("time {unix} out of range: {e}")))
}
