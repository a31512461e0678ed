//! Why a device operation failed.

/// Errors of device trust operations. Each names the input that was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("certificate or key generation failed: {0}")]
    Generate(String),
    #[error("not valid PEM ({0})")]
    BadPem(String),
    #[error("the device key is not a PKCS#8 ECDSA P-256 key: {0}")]
    BadKey(String),
    #[error("{what} is not valid base64: {reason}")]
    BadEncoding { what: &'static str, reason: String },
    #[error("the public key is not an uncompressed ECDSA P-256 point (65 bytes starting 0x04)")]
    BadPublicKey,
    #[error("the signature does not verify with the device's key")]
    BadSignature,
    #[error("the posture report is not valid JSON: {0}")]
    BadReport(String),
    #[error("the posture report is for device {got}, but the connection is from device {expected}")]
    WrongDevice { expected: String, got: String },
    #[error("the posture report was collected {secs} s in the future (clock skew?)")]
    FromTheFuture { secs: i64 },
    #[error(
        "the posture report is {age_secs} s old; posture older than {max_secs} s counts as unknown"
    )]
    TooOld { age_secs: i64, max_secs: i64 },
    #[error("the enrolment request is invalid: {0}")]
    BadEnrollment(String),
}
