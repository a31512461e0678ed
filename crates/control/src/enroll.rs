//! Device enrolment (issue 4 item 8): the control plane's device CA, and `POST /v1/enroll`,
//! which swaps a one-time token (created by an administrator with `tsuzuku device token`) and a
//! proof of key possession for a device certificate.
//!
//! The token is spent before the certificate is issued, so a token works once even when two
//! requests race; a request refused after that point (which cannot happen for a well-formed
//! request) costs the token, never grants twice. Every enrolment is an audit event.

use serde_json::json;
use sha2::{Digest as _, Sha256};
use tsuzuku_audit::{AuditEvent, EventKind};
use tsuzuku_device::{CA_KEY_PURPOSE, DeviceCa, EnrollRequest, EnrollResponse};
use tsuzuku_store::{Device, Store, StoreError};

/// How long an issued device certificate is valid.
pub const CERT_VALID_DAYS: i64 = 365;

/// Why an enrolment was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "the enrolment token is unknown, already used or expired; ask your IT team for a new one"
    )]
    BadToken,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("device CA: {0}")]
    Ca(String),
}

/// The stored form of an enrolment token: lower-case hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The tenant's device CA, created (and stored, key sealed) on first use. Two processes
/// creating one at once both end up using the newest stored.
pub async fn ensure_device_ca(store: &Store, now: i64) -> Result<DeviceCa, EnrollError> {
    if let Some(ca) = newest_ca(store).await? {
        return Ok(ca);
    }
    let ca = DeviceCa::generate(store.tenant_id(), now, 10)
        .map_err(|e| EnrollError::Ca(e.to_string()))?;
    let digest = token_hash(ca.cert_pem());
    let kid = format!("device-ca-{}", digest.get(..16).unwrap_or_default());
    match store
        .put_key(
            &kid,
            CA_KEY_PURPOSE,
            ca.key_pem(),
            ca.cert_pem().to_owned(),
            now,
        )
        .await
    {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    newest_ca(store)
        .await?
        .ok_or_else(|| EnrollError::Ca("the device CA just stored cannot be read back".into()))
}

async fn newest_ca(store: &Store) -> Result<Option<DeviceCa>, EnrollError> {
    let Some(k) = store.newest_key(CA_KEY_PURPOSE).await? else {
        return Ok(None);
    };
    DeviceCa::from_pem(&k.secret, &k.public)
        .map(Some)
        .map_err(|e| EnrollError::Ca(format!("stored device CA {}: {e}", k.kid)))
}

/// Handles one enrolment request body.
pub async fn enroll(store: &Store, body: &[u8], now: i64) -> Result<EnrollResponse, EnrollError> {
    let req: EnrollRequest = serde_json::from_slice(body).map_err(|e| {
        EnrollError::BadRequest(format!("the enrolment request is not valid JSON: {e}"))
    })?;
    let public = req
        .check()
        .map_err(|e| EnrollError::BadRequest(e.to_string()))?;
    let Some(grant) = store.take_enrol_token(&token_hash(&req.token), now).await? else {
        return Err(EnrollError::BadToken);
    };
    let company_issued = grant.company_issued;
    let ca = ensure_device_ca(store, now).await?;
    let mut id = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let device_id = format!("dev-{}", hex::encode(id));
    let certificate = ca
        .issue(store.tenant_id(), &device_id, &public, now, CERT_VALID_DAYS)
        .map_err(|e| EnrollError::Ca(e.to_string()))?;
    let fingerprint = tsuzuku_device::fingerprint_pem(&certificate)
        .map_err(|e| EnrollError::Ca(e.to_string()))?;
    store
        .add_device(&Device {
            id: device_id.clone(),
            name: req.name.clone(),
            fingerprint: fingerprint.clone(),
            public_key: req.public_key.clone(),
            company_issued,
            enrolled_at: now,
            not_after: now.saturating_add(CERT_VALID_DAYS * 86_400),
            revoked_at: None,
            user_id: grant.user_id.clone(),
        })
        .await?;
    let event = AuditEvent {
        time_ms: now.saturating_mul(1000),
        kind: EventKind::Admin,
        actor: Some(format!("device:{device_id}")),
        tenant: store.tenant_id().to_owned(),
        detail: json!({
            "action": "device.enroll",
            "device_id": device_id,
            "name": req.name,
            "company_issued": company_issued,
            "user_id": grant.user_id,
            "fingerprint": fingerprint,
        })
        .into(),
    };
    if let Err(e) = store.append_audit(vec![event]).await {
        tracing::error!(error = %e, device = %device_id, "device enrolled but its audit event could not be written");
    }
    tracing::info!(device = %device_id, name = %req.name, company_issued, "device enrolled");
    Ok(EnrollResponse {
        device_id,
        certificate,
        ca: ca.cert_pem().to_owned(),
        company_issued,
    })
}
