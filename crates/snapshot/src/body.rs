//! The snapshot document.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Format number of [`SnapshotBody`]; a gateway refuses a format it does not know.
pub const FORMAT: u32 = 1;

/// Everything a gateway needs to authorise requests without the control plane or database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    pub format: u32,
    pub tenant: String,
    /// Strictly increasing: the publication time in Unix milliseconds, bumped past the previous
    /// version when the clock has not moved on. A gateway accepts only versions newer than the
    /// one it uses.
    pub version: i64,
    pub issued_at_ms: i64,
    /// Which stored policy version the policies are (for `tsuzuku status` and audit events).
    pub policy_version: i64,
    pub policies: Vec<PolicyEntry>,
    pub apps: Vec<AppEntry>,
    pub users: Vec<UserEntry>,
    /// Identity-assertion signing keys (PKCS#8 PEM), newest last. Secret: the snapshot travels
    /// only over authenticated TLS and is sealed on disk.
    pub assertion_keys: Vec<KeyEntry>,
    /// Credential verifiers, only in the variant published to DR gateways (which sign people
    /// in on their own when everything else is down); empty for ordinary gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialEntry>,
    /// The device CA certificate (PEM) gateways trust for client certificates, once the control
    /// plane has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ca: Option<String>,
    /// Enrolled devices (revoked ones too, so gateways refuse them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceEntry>,
}

/// One enrolled device, as gateways need it: its certificate fingerprint, its public key (to
/// verify posture reports), whether it is company-issued, and whether it was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    pub public_key: String,
    pub company_issued: bool,
    pub enrolled_at: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    /// The user the device belongs to, if it was enrolled for one (device sign-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// What a DR gateway needs to check a user's sign-in locally. Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    pub user_id: String,
    /// Argon2id PHC string.
    pub password_hash: Option<String>,
    /// TOTP secret (base32).
    pub totp_secret: Option<String>,
    pub oidc_subject: Option<String>,
}

/// One named Cedar policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    pub id: String,
    pub text: String,
}

/// One protected application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    pub id: String,
    pub name: String,
    pub host: String,
    pub upstream: String,
    pub data_class: String,
    pub critical: bool,
    pub isolated: bool,
    pub created_at: i64,
}

/// What decisions and assertions need about a user: no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
}

/// A signing key with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: String,
    pub pem: String,
    pub created_at: i64,
}

/// What connectors need from the control plane: the gateway sites and operators' exclusions.
/// Not secret (it names public gateway addresses) but signed: a forged list could send every
/// device to an attacker's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteListBody {
    pub format: u32,
    pub tenant: String,
    pub version: i64,
    pub issued_at_ms: i64,
    pub sites: Vec<SiteEntry>,
    pub exclusions: Vec<ExclusionEntry>,
    /// Sites over their load threshold, which connectors should avoid while the hint lasts.
    #[serde(default)]
    pub shedding: Vec<ShedEntry>,
    /// The customer's DR gateway, used only in disaster-recovery mode.
    #[serde(default)]
    pub dr_gateway: Option<SiteEntry>,
    /// Host names of the apps marked critical: in DR mode they go to the DR gateway.
    #[serde(default)]
    pub critical_hosts: Vec<String>,
}

/// A site's request to be avoided because it is over its load threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedEntry {
    pub site: String,
    /// The hint lapses at this time (Unix ms) unless a newer list renews it.
    pub until_ms: i64,
    /// The site's load as a share of its capacity, percent.
    pub load_pct: i64,
    /// Whether the other sites' spare capacity can take this site's load.
    pub others_can_absorb: bool,
}

/// One gateway site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    pub name: String,
    pub host: String,
    /// `IP:PORT` of each gateway node.
    pub endpoints: Vec<String>,
    /// Lower is preferred.
    pub preference: i64,
}

/// An operator's exclusion of a site until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionEntry {
    pub site: String,
    /// Unix milliseconds.
    pub until_ms: i64,
    pub reason: String,
}

impl SiteListBody {
    /// SHA-256 over everything except the version and issue time.
    pub fn content_digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.tenant.as_bytes());
        h.update([0]);
        h.update(
            serde_json::to_string(&self.sites)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        h.update(
            serde_json::to_string(&self.exclusions)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        h.update(
            serde_json::to_string(&self.dr_gateway)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        h.update(
            serde_json::to_string(&self.critical_hosts)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        // Shedding hints count by site, verdict and expiry, not by the exact load: a load that
        // moves by a percent does not make a new version.
        // The expiry is included so that a hint still in force is renewed (the control plane
        // moves it forward in steps while the site stays over its threshold).
        for sh in &self.shedding {
            h.update(sh.site.as_bytes());
            h.update([u8::from(sh.others_can_absorb), 0]);
            h.update(sh.until_ms.to_be_bytes());
        }
        hex::encode(h.finalize())
    }
}

impl SnapshotBody {
    /// SHA-256 over everything except the version and issue time: equal digests mean nothing a
    /// gateway uses changed, so the control plane does not publish a new version.
    pub fn content_digest(&self) -> String {
        let mut h = Sha256::new();
        let mut part = |label: &str, v: &str| {
            h.update(label.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        };
        part("tenant", &self.tenant);
        part("policy_version", &self.policy_version.to_string());
        // serde_json of plain structs is deterministic (field order is declaration order).
        part(
            "policies",
            &serde_json::to_string(&self.policies).unwrap_or_default(),
        );
        part(
            "apps",
            &serde_json::to_string(&self.apps).unwrap_or_default(),
        );
        part(
            "users",
            &serde_json::to_string(&self.users).unwrap_or_default(),
        );
        part(
            "keys",
            &serde_json::to_string(&self.assertion_keys).unwrap_or_default(),
        );
        part(
            "credentials",
            &serde_json::to_string(&self.credentials).unwrap_or_default(),
        );
        // Device trust: an enrolment or a revocation must reach gateways like any other change.
        part(
            "device_ca",
            &serde_json::to_string(&self.device_ca).unwrap_or_default(),
        );
        part(
            "devices",
            &serde_json::to_string(&self.devices).unwrap_or_default(),
        );
        hex::encode(h.finalize())
    }

    /// Age in whole seconds at `now_ms` (never negative).
    pub fn age_secs(&self, now_ms: i64) -> i64 {
        (now_ms.saturating_sub(self.issued_at_ms) / 1000).max(0)
    }
}

/// The version to publish after `previous` at `now_ms`: the clock, or one past the previous
/// version when the clock has not moved on (or went back).
pub fn next_version(previous: Option<i64>, now_ms: i64) -> i64 {
    match previous {
        Some(p) if p >= now_ms => p.saturating_add(1),
        _ => now_ms,
    }
}
