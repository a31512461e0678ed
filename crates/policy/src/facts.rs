//! The inputs of a decision: who (user), from what (device), to what (app)
//! and the request itself. Plain data filled in by the caller; nothing here
//! does IO.

use std::net::IpAddr;

use crate::PolicyError;

/// The signed-in user, as the identity layer knows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserFacts {
    /// Stable user id; becomes the principal `Tsuzuku::User::"<id>"`.
    pub id: String,
    /// Login name, exposed as `principal.username`.
    pub username: String,
    /// Names of the groups the user is in; each becomes a parent
    /// `Tsuzuku::Group::"<name>"`.
    pub groups: Vec<String>,
    /// How the session was authenticated: "password", "password+totp" or "oidc".
    pub auth_method: String,
    /// Whether the session passed a second factor.
    pub mfa: bool,
    /// When the user last authenticated (Unix seconds).
    pub auth_time: i64,
}

/// Device posture, as last reported by the connector on the device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceFacts {
    /// The device holds a Tsuzuku device certificate.
    pub enrolled: bool,
    /// The device is company-issued (managed).
    pub company_issued: bool,
    /// Operating system family, e.g. "windows".
    pub os: String,
    /// Operating system version as reported, e.g. "10.0.22631".
    pub os_version: String,
    /// The system disk is encrypted.
    pub disk_encrypted: bool,
    /// Antivirus is installed and running.
    pub antivirus_running: bool,
    /// Antivirus version as a comparable number; see [`version_code`].
    pub antivirus_version: i64,
    /// When the posture was reported (Unix seconds).
    pub reported_at: i64,
}

/// The ways the gateway records a sign-in (`UserFacts::auth_method`, `principal.auth_method`):
/// a password, a password and a TOTP code, single sign-on, an enrolled device's certificate.
pub const AUTH_METHODS: [&str; 4] = ["password", "password+totp", "oidc", "device"];

/// The data classes an app may carry, as policies compare them (`resource.data_class ==
/// "confidential"`): exact, lowercase. An app with any other class would never match such a
/// policy, so apps are created only with one of these ([`is_data_class`]).
pub const DATA_CLASSES: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// Whether `s` is one of [`DATA_CLASSES`], exactly (case matters: policies compare exactly).
pub fn is_data_class(s: &str) -> bool {
    DATA_CLASSES.contains(&s)
}

/// The application a request is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppFacts {
    /// Application name; becomes the resource `Tsuzuku::App::"<name>"`.
    pub name: String,
    /// Data classification: "public", "internal", "confidential" or "restricted".
    pub data_class: String,
    /// Business-critical application.
    pub critical: bool,
    /// Runs isolated from the device (virtual desktop / remote browser).
    pub isolated: bool,
}

/// The HTTP request being decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestFacts {
    /// HTTP method as received, e.g. "GET".
    pub method: String,
    /// Request path, e.g. "/reports".
    pub path: String,
    /// Client address as seen by the gateway.
    pub source_ip: IpAddr,
    /// Time of the request (Unix seconds).
    pub now_unix: i64,
}

/// The Cedar action (`Tsuzuku::Action::"<name>"`) an HTTP method maps to:
/// `"read"` for GET, HEAD and OPTIONS (any letter case), `"write"` for
/// every other method.
pub fn action_for_method(method: &str) -> &'static str {
    if ["GET", "HEAD", "OPTIONS"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
    {
        "read"
    } else {
        "write"
    }
}

/// Largest allowed value of each version component, and the factor it is
/// multiplied by in the encoding.
const VERSION_PARTS: [(i64, i64); 4] = [
    (9_999, 100_000_000_000_000),
    (9_999, 10_000_000_000),
    (99_999, 100_000),
    (99_999, 1),
];

/// Encodes a dotted version `A.B.C.D` as one comparable Cedar `Long`:
/// `A*10^14 + B*10^10 + C*10^5 + D`, so that a policy can require a minimum
/// version with `context.device.antivirus_version >= N`. Missing trailing
/// components count as 0 (`"4.18"` == `"4.18.0.0"`).
///
/// `"4.18.24030.9"` → `400182403000009`.
pub fn version_code(version: &str) -> Result<i64, PolicyError> {
    let bad = |reason: String| PolicyError::BadVersion {
        input: version.to_owned(),
        reason,
    };
    let trimmed = version.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    let parts: Vec<&str> = trimmed.split('.').collect();
    if parts.len() > VERSION_PARTS.len() {
        return Err(bad(format!("it has {} components", parts.len())));
    }
    let mut code: i64 = 0;
    for (part, (max, factor)) in parts.iter().zip(VERSION_PARTS) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("component {part:?} is not a number")));
        }
        let value: i64 = part
            .parse()
            .map_err(|_| bad(format!("component {part:?} is too large")))?;
        if value > max {
            return Err(bad(format!("component {value} is larger than {max}")));
        }
        code += value * factor;
    }
    Ok(code)
}
