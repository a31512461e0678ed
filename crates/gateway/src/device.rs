//! Device trust at the gateway: which enrolled device a connection comes from (mutual TLS), its
//! latest verified posture, and the facts a policy sees.
//!
//! - The TLS listener asks for a client certificate but does not require one
//!   ([`DeviceVerifier`]): browsers without a connector still reach the sign-in page, and a
//!   policy decides whether an unknown device may go on (`context has device`). The device CA it
//!   trusts comes from the store or the snapshot and can change while the gateway runs.
//! - A verified certificate names a device by its fingerprint; a revoked device is refused
//!   outright, whatever its session.
//! - Connectors post signed posture reports to `/.tsuzuku/device/posture` over that mutual-TLS
//!   connection; each is verified with the device's enrolled key before it is kept (in memory,
//!   and in the store when it takes writes, so every node of a site sees it).
//! - Posture older than `posture_max_age_secs` counts as unknown: the policy then sees no
//!   `device` at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tsuzuku_device::{Posture, SignedPosture};
use tsuzuku_policy::{DeviceFacts, version_code};
use tsuzuku_store::{Device, StoredPosture};

use crate::respond;
use crate::service::Ctx;
use crate::state::{Body, Gateway, now_ms, now_unix};

/// Client-certificate verification against the current device CA, optional for the client.
/// With no device CA configured, no certificate is asked for.
#[derive(Debug)]
pub struct DeviceVerifier {
    inner: ArcSwapOption<Inner>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
struct Inner {
    ca_pem: String,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Default for DeviceVerifier {
    fn default() -> Self {
        Self {
            inner: ArcSwapOption::empty(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

impl DeviceVerifier {
    /// Trusts `ca_pem` from now on (no-op when it is the CA already in use); `None` stops asking
    /// for client certificates.
    pub fn set_ca(&self, ca_pem: Option<&str>) -> Result<(), String> {
        let Some(pem) = ca_pem else {
            self.inner.store(None);
            return Ok(());
        };
        if self.inner.load().as_ref().is_some_and(|i| i.ca_pem == pem) {
            return Ok(());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("device CA certificate is not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("device CA certificate refused: {e}"))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("device CA certificate unusable: {e}"))?;
        self.inner.store(Some(Arc::new(Inner {
            ca_pem: pem.to_owned(),
            verifier,
        })));
        Ok(())
    }
}

impl ClientCertVerifier for DeviceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA can change under us, so no borrowed hints; connectors send their one
        // certificate regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.inner.load().as_ref() {
            Some(i) => i
                .verifier
                .verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "no device CA is configured; client certificates are not accepted".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the gateway knows about the device of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnDevice {
    /// No client certificate (a browser without a connector, or a connector not enrolled).
    None,
    /// A certificate from the device CA whose fingerprint no enrolled device has (yet).
    Unknown(String),
    /// An enrolled device.
    Enrolled(Arc<Device>),
    /// A device that was revoked.
    Revoked(Arc<Device>),
}

impl ConnDevice {
    /// The device's id, for an enrolled (not revoked) device.
    pub fn id(&self) -> Option<&str> {
        match self {
            ConnDevice::Enrolled(d) => Some(&d.id),
            _ => None,
        }
    }
}

/// Resolves a connection's certificate fingerprint against the enrolled devices (pure).
pub(crate) fn resolve(
    fingerprint: Option<&str>,
    devices: &HashMap<String, Arc<Device>>,
    now: i64,
) -> ConnDevice {
    let Some(fp) = fingerprint else {
        return ConnDevice::None;
    };
    match devices.get(fp) {
        None => ConnDevice::Unknown(fp.to_owned()),
        Some(d) if d.revoked_at.is_some_and(|at| at <= now) => ConnDevice::Revoked(d.clone()),
        Some(d) => ConnDevice::Enrolled(d.clone()),
    }
}

/// The facts a policy sees for a device with a posture (pure). `None` when the posture is
/// older than `max_age_secs` (unknown).
pub(crate) fn facts(
    device: &Device,
    posture: &Posture,
    now: i64,
    max_age_secs: i64,
) -> Option<DeviceFacts> {
    tsuzuku_device::posture::check_age(posture.collected_at, now, max_age_secs).ok()?;
    let antivirus_version = posture
        .antivirus_version
        .as_deref()
        .and_then(|v| version_code(v).ok())
        .unwrap_or(0);
    Some(DeviceFacts {
        enrolled: true,
        company_issued: device.company_issued,
        os: posture.os.clone(),
        os_version: posture.os_version.clone(),
        disk_encrypted: posture.disk_encrypted,
        antivirus_running: posture.antivirus_running,
        antivirus_version,
        reported_at: posture.collected_at.min(now),
    })
}

/// How long a posture held in memory is used before the store is asked for a newer one (a
/// report another node of the site received).
const POSTURE_RECHECK: Duration = Duration::from_secs(1);

/// Verified postures by device id, newest collection wins.
#[derive(Debug, Default)]
pub(crate) struct Postures {
    by_device: Mutex<HashMap<String, (Arc<Posture>, Instant)>>,
}

impl Postures {
    /// The posture held for a device, and whether it was checked against the store recently.
    pub fn get(&self, device_id: &str, now: Instant) -> Option<(Arc<Posture>, bool)> {
        self.by_device.lock().ok().and_then(|m| {
            m.get(device_id).map(|(p, at)| {
                (
                    p.clone(),
                    now.saturating_duration_since(*at) < POSTURE_RECHECK,
                )
            })
        })
    }

    /// Keeps `p` unless a report collected later is already held; either way the entry counts
    /// as checked at `now`.
    pub fn put(&self, p: Posture, now: Instant) -> Arc<Posture> {
        let p = Arc::new(p);
        if let Ok(mut m) = self.by_device.lock() {
            match m.get_mut(&p.device_id) {
                Some((held, at)) if held.collected_at > p.collected_at => {
                    *at = now;
                    return held.clone();
                }
                _ => {
                    m.insert(p.device_id.clone(), (p.clone(), now));
                }
            }
        }
        p
    }
}

/// Where connectors post their signed posture reports (any host of the gateway).
pub(crate) const POSTURE_PATH: &str = "/.tsuzuku/device/posture";

/// Whether a session bound to `bound` (a device id) may be used on this connection (pure).
pub(crate) fn session_device_matches(bound: Option<&str>, conn: &ConnDevice) -> bool {
    match bound {
        None => true,
        Some(id) => conn.id() == Some(id),
    }
}

/// The page for a session used from a device other than the one it was created on.
pub(crate) fn other_device_page(ctx: &Ctx) -> Response<Body> {
    respond::error(
        StatusCode::FORBIDDEN,
        "Session bound to another device",
        "This sign-in was made on another device and can only be used there. Sign in again on this device.",
        &ctx.id,
    )
}

/// The device facts for a decision: `None` when the device is unknown, has not reported its
/// posture, or its posture is older than the configured age.
pub(crate) async fn facts_for(gw: &Gateway, device: &ConnDevice, now: i64) -> Option<DeviceFacts> {
    let ConnDevice::Enrolled(d) = device else {
        return None;
    };
    let max_age = gw.settings.posture_max_age_secs;
    let instant = Instant::now();
    let held = gw.postures.get(&d.id, instant);
    let posture = match held {
        Some((p, true)) => p,
        held => match stored_posture(gw, d, now, max_age).await {
            Some(p) => gw.postures.put(p, instant),
            None => held.map(|(p, _)| p)?,
        },
    };
    facts(d, &posture, now, max_age)
}

/// The newest posture report the store holds for `d`, verified again (the store is not trusted
/// to vouch for a device's key).
async fn stored_posture(gw: &Gateway, d: &Device, now: i64, max_age: i64) -> Option<Posture> {
    if !gw.store.root().role().is_readable() {
        return None;
    }
    let row = match gw.store.get_posture(&d.id).await {
        Ok(r) => r?,
        Err(e) => {
            tracing::debug!(error = %e, device = %d.id, "cannot read posture from the store");
            return None;
        }
    };
    let signed: SignedPosture = serde_json::from_str(&row.report).ok()?;
    match verify(d, &signed, now, max_age) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(device = %d.id, error = %e, "stored posture not usable");
            None
        }
    }
}

/// `POST /.tsuzuku/device/posture`: a connector's signed report, over its mutual-TLS connection.
pub(crate) async fn posture_endpoint(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Response<Body> {
    let fail = |status: StatusCode, msg: String| {
        tracing::info!(request_id = %ctx.id, peer = %ctx.peer, %status, reason = %msg, "posture report refused");
        respond::json(status, &serde_json::json!({ "error": msg }))
    };
    if req.method() != Method::POST {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
    }
    let d = match &ctx.device {
        ConnDevice::Enrolled(d) => d.clone(),
        ConnDevice::Revoked(d) => {
            return fail(
                StatusCode::FORBIDDEN,
                format!("device {} was revoked", d.id),
            );
        }
        ConnDevice::Unknown(_) => {
            return fail(
                StatusCode::FORBIDDEN,
                "this device certificate is not (yet) known to this gateway".into(),
            );
        }
        ConnDevice::None => {
            return fail(
                StatusCode::FORBIDDEN,
                "posture is accepted only over mutual TLS with an enrolled device's certificate"
                    .into(),
            );
        }
    };
    let body = match Limited::new(req.into_body(), tsuzuku_device::posture::MAX_REPORT_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a posture report is at most {} bytes",
                    tsuzuku_device::posture::MAX_REPORT_BYTES
                ),
            );
        }
    };
    let signed = match SignedPosture::from_json(&body) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let now = now_unix();
    let posture = match verify(&d, &signed, now, gw.settings.posture_max_age_secs) {
        Ok(p) => p,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    tracing::debug!(device = %d.id, antivirus = ?posture.antivirus_version, "posture report accepted");
    if let Some(row) = stored(&signed, &posture, now_ms())
        && gw.store.root().role().is_writable()
        && let Err(e) = gw.store.put_posture(&row).await
    {
        tracing::warn!(error = %e, device = %d.id, "posture kept in memory only; the store refused it");
    }
    gw.postures.put(posture, Instant::now());
    respond::json(StatusCode::OK, &serde_json::json!({ "accepted": true }))
}

/// The device's enrolled public key.
pub(crate) fn public_key(device: &Device) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(&device.public_key)
        .map_err(|e| format!("device {} has an unreadable public key: {e}", device.id))
}

/// Verifies a signed report (as received, or as read back from the store) for `device`.
pub(crate) fn verify(
    device: &Device,
    signed: &SignedPosture,
    now: i64,
    max_age_secs: i64,
) -> Result<Posture, String> {
    let key = public_key(device)?;
    tsuzuku_device::verify_posture(signed, &device.id, &key, now, max_age_secs)
        .map_err(|e| e.to_string())
}

/// A verified report as the store keeps it.
pub(crate) fn stored(
    signed: &SignedPosture,
    p: &Posture,
    received_ms: i64,
) -> Option<StoredPosture> {
    Some(StoredPosture {
        device_id: p.device_id.clone(),
        report: serde_json::to_string(signed).ok()?,
        collected_at: p.collected_at,
        received_ms,
    })
}

#[cfg(test)]
mod tests;
