//! Posture reports: what the connector says about its device, signed with the device key.
//!
//! On the wire a report is `{"report": "<base64 JSON of Posture>", "signature": "<base64>"}`:
//! the signature covers the exact bytes sent, so nothing has to be re-encoded canonically.
//! [`verify_posture`] is the pure check every received report goes through.

use serde::{Deserialize, Serialize};

use crate::error::DeviceError;
use crate::key::{DeviceKey, verify_signature};

/// Largest accepted signed report (bytes of its JSON).
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// Tolerated clock difference between device and gateway.
pub const MAX_SKEW_SECS: i64 = 120;

/// The state of a device as its connector saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Posture {
    /// The device id from its certificate.
    pub device_id: String,
    /// When it was collected (Unix seconds, device clock).
    pub collected_at: i64,
    /// OS family: "linux".
    pub os: String,
    /// OS version (`VERSION_ID` of /etc/os-release), e.g. "12".
    pub os_version: String,
    /// OS name (`PRETTY_NAME`), e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os_name: String,
    /// Kernel release, e.g. "6.1.0-18-amd64".
    pub kernel: String,
    /// The root file system is on an encrypted (dm-crypt) device.
    pub disk_encrypted: bool,
    /// The configured antivirus process name, if one is configured.
    pub antivirus: Option<String>,
    /// The antivirus process is running.
    pub antivirus_running: bool,
    /// The version the antivirus reports (dotted numbers), if found.
    pub antivirus_version: Option<String>,
}

/// A posture report with its signature, as sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedPosture {
    /// Base64 of the JSON of a [`Posture`].
    pub report: String,
    /// Base64 of the device key's signature over the decoded `report` bytes.
    pub signature: String,
}

impl SignedPosture {
    /// Signs a posture with the device key.
    pub fn sign(p: &Posture, key: &DeviceKey) -> Result<Self, DeviceError> {
        let bytes = serde_json::to_vec(p).map_err(|e| DeviceError::BadReport(e.to_string()))?;
        let sig = key.sign(&bytes)?;
        Ok(Self {
            report: crate::b64(&bytes),
            signature: crate::b64(&sig),
        })
    }

    /// Parses a received body.
    pub fn from_json(body: &[u8]) -> Result<Self, DeviceError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(DeviceError::BadReport(format!(
                "{} bytes, more than the {MAX_REPORT_BYTES} allowed",
                body.len()
            )));
        }
        serde_json::from_slice(body).map_err(|e| DeviceError::BadReport(e.to_string()))
    }
}

/// Checks a signed report from the device `device_id` whose public key is `public_raw`:
/// the signature, the device named inside, and the age against `now` (Unix seconds):
/// collected no more than [`MAX_SKEW_SECS`] in the future and no more than `max_age_secs` ago.
pub fn verify_posture(
    signed: &SignedPosture,
    device_id: &str,
    public_raw: &[u8],
    now: i64,
    max_age_secs: i64,
) -> Result<Posture, DeviceError> {
    let bytes = crate::unb64("the posture report", &signed.report)?;
    let sig = crate::unb64("the posture signature", &signed.signature)?;
    verify_signature(public_raw, &bytes, &sig)?;
    let p: Posture =
        serde_json::from_slice(&bytes).map_err(|e| DeviceError::BadReport(e.to_string()))?;
    if p.device_id != device_id {
        return Err(DeviceError::WrongDevice {
            expected: device_id.to_owned(),
            got: p.device_id,
        });
    }
    check_age(p.collected_at, now, max_age_secs)?;
    Ok(p)
}

/// The age rule alone: used again at decision time, since a stored report keeps ageing.
pub fn check_age(collected_at: i64, now: i64, max_age_secs: i64) -> Result<(), DeviceError> {
    let age = now.saturating_sub(collected_at);
    if age < -MAX_SKEW_SECS {
        return Err(DeviceError::FromTheFuture { secs: -age });
    }
    if age > max_age_secs {
        return Err(DeviceError::TooOld {
            age_secs: age,
            max_secs: max_age_secs,
        });
    }
    Ok(())
}
