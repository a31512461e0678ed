//! The device's identity and posture (issue 4 item 8).
//!
//! - `tsuzuku connect enroll` generates the device key here, sends the control plane a one-time
//!   token with a proof of possession, and keeps the certificate it gets back in the device
//!   directory (`device.key` readable by the owner only, `device.crt`, `device-ca.pem`,
//!   `device.json`).
//! - With an identity, every TLS connection the connector opens to a gateway presents the
//!   device certificate (mutual TLS), and browser tunnels (`CONNECT`) to gateway sites — and in
//!   disaster-recovery mode to the DR gateway — go through a device tunnel: the connector's own mutual-TLS connection to the gateway carries a
//!   `CONNECT`, and the browser's TLS runs inside it, so the gateway knows the device of every
//!   request without touching the browser.
//! - A reporter collects the device's posture on an interval (and when the site in use or the
//!   DR mode changes), signs it with the device key and posts it to every endpoint of where
//!   apps are decided: the site in use, or the DR gateway while DR mode is active.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tsuzuku_device::collect::CollectorConfig;
use tsuzuku_device::{DeviceKey, EnrollRequest, EnrollResponse, SignedPosture};

use crate::state::SiteState;

/// Files of the device directory.
const KEY_FILE: &str = "device.key";
const CERT_FILE: &str = "device.crt";
const CA_FILE: &str = "device-ca.pem";
const META_FILE: &str = "device.json";

/// Why the device identity cannot be set up or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceSetupError {
    #[error(
        "the device directory {dir} holds no enrolled identity ({reason}); run `tsuzuku connect enroll` first"
    )]
    NotEnrolled { dir: String, reason: String },
    #[error("{file}: {reason}")]
    BadFile { file: String, reason: String },
    #[error("cannot write {file}: {reason}")]
    Write { file: String, reason: String },
    #[error("enrolment refused by the control plane ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the control plane at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Device(#[from] tsuzuku_device::DeviceError),
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// The enrolled device: its key, certificate and id.
#[derive(Debug)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub company_issued: bool,
    key: DeviceKey,
    cert_pem: String,
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    device_id: String,
    company_issued: bool,
}

fn read(dir: &Path, name: &str) -> Result<String, DeviceSetupError> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| DeviceSetupError::NotEnrolled {
        dir: dir.display().to_string(),
        reason: format!("{name}: {e}"),
    })
}

fn write(dir: &Path, name: &str, text: &str, private: bool) -> Result<(), DeviceSetupError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let fail = |e: std::io::Error| DeviceSetupError::Write {
        file: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    {
        use std::io::Write as _;
        let mut f = opts.open(&tmp).map_err(fail)?;
        f.write_all(text.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, &path).map_err(fail)
}

impl DeviceIdentity {
    /// Loads the identity kept in `dir` by a previous enrolment.
    pub fn load(dir: &Path) -> Result<Self, DeviceSetupError> {
        let key_text = read(dir, KEY_FILE)?;
        let key = DeviceKey::from_pem(&key_text).map_err(|e| DeviceSetupError::BadFile {
            file: dir.join(KEY_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        let cert_pem = read(dir, CERT_FILE)?;
        tsuzuku_device::fingerprint_pem(&cert_pem).map_err(|e| DeviceSetupError::BadFile {
            file: dir.join(CERT_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        let meta: Meta = serde_json::from_str(&read(dir, META_FILE)?).map_err(|e| {
            DeviceSetupError::BadFile {
                file: dir.join(META_FILE).display().to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            device_id: meta.device_id,
            company_issued: meta.company_issued,
            key,
            cert_pem,
            dir: dir.to_owned(),
        })
    }

    /// Enrols this device with the control plane at `control_url` (trusting `control_ca`, or
    /// the system roots) using a one-time `token`, and keeps the identity in `dir`.
    pub async fn enroll(
        control_url: &str,
        control_ca: Option<&[u8]>,
        token: &str,
        name: &str,
        dir: &Path,
    ) -> Result<Self, DeviceSetupError> {
        std::fs::create_dir_all(dir).map_err(|e| DeviceSetupError::Write {
            file: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let key = DeviceKey::generate()?;
        let req = EnrollRequest::new(token, name, &key)?;
        let url = format!("{}/v1/enroll", control_url.trim_end_matches('/'));
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30));
        if let Some(pem) = control_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| DeviceSetupError::Tls(format!("control-plane CA: {e}")))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client
            .build()
            .map_err(|e| DeviceSetupError::Tls(e.to_string()))?;
        let unreachable = |e: reqwest::Error| DeviceSetupError::Unreachable {
            url: url.clone(),
            reason: crate::error_chain(&e.without_url()),
        };
        let resp = client
            .post(&url)
            .json(&req)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(DeviceSetupError::Refused {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        let answer: EnrollResponse =
            serde_json::from_slice(&body).map_err(|e| DeviceSetupError::Refused {
                status: status.as_u16(),
                message: format!("unreadable answer: {e}"),
            })?;
        write(dir, KEY_FILE, key.pem(), true)?;
        write(dir, CERT_FILE, &answer.certificate, false)?;
        write(dir, CA_FILE, &answer.ca, false)?;
        let meta = serde_json::to_string_pretty(&Meta {
            device_id: answer.device_id.clone(),
            company_issued: answer.company_issued,
        })
        .map_err(|e| DeviceSetupError::Tls(e.to_string()))?;
        write(dir, META_FILE, &meta, false)?;
        Self::load(dir)
    }

    /// The directory the identity lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A TLS client configuration towards gateways: trusts `gateway_ca_pem`, presents the
    /// device certificate, speaks HTTP/1.1.
    pub fn client_config(
        &self,
        gateway_ca_pem: &[u8],
    ) -> Result<Arc<rustls::ClientConfig>, DeviceSetupError> {
        let chain = vec![
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
                .map_err(|e| DeviceSetupError::Tls(format!("device certificate: {e}")))?,
        ];
        let key = PrivateKeyDer::from_pem_slice(self.key.pem().as_bytes())
            .map_err(|e| DeviceSetupError::Tls(format!("device key: {e}")))?;
        crate::tls::client_config_with(gateway_ca_pem, Some((chain, key)))
            .map_err(|e| DeviceSetupError::Tls(e.to_string()))
    }

    /// The certificate and key as one PEM text (for HTTP clients that present them).
    pub fn identity_pem(&self) -> Vec<u8> {
        let mut pem = self.cert_pem.clone().into_bytes();
        pem.extend_from_slice(self.key.pem().as_bytes());
        pem
    }

    /// Signs a posture report.
    pub fn sign(
        &self,
        posture: &tsuzuku_device::Posture,
    ) -> Result<SignedPosture, tsuzuku_device::DeviceError> {
        SignedPosture::sign(posture, &self.key)
    }
}

/// Opens a device tunnel to `host:port` over a fresh TCP connection to a gateway: mutual TLS
/// with `tls` (SNI `host`), then `CONNECT host:port`. Returns the stream once the gateway
/// answered 200; any other answer is an error naming the status.
pub(crate) async fn open_tunnel(
    tls: Arc<rustls::ClientConfig>,
    stream: TcpStream,
    host: &str,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with the gateway failed: {e}"))?;
    let head = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    // Read the answer's head byte by byte, so nothing of the tunnel's payload is consumed.
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 8192 {
            return Err("the gateway's answer to CONNECT is too long".into());
        }
        let n = s
            .read(&mut byte)
            .await
            .map_err(|e| format!("reading the gateway's answer: {e}"))?;
        if n == 0 {
            return Err("the gateway closed the connection before answering CONNECT".into());
        }
        answer.extend_from_slice(&byte);
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!(
            "the gateway refused the device tunnel: {status_line}"
        ));
    }
    Ok(s)
}

/// Posts the device's signed posture to every endpoint of the site in use (the DR gateway while
/// DR mode is active), every `every` and whenever the site in use or the DR phase changes,
/// until the returned task is aborted.
pub fn spawn_posture_reporter(
    state: Arc<SiteState>,
    dr: Option<crate::dr::DrLink>,
    identity: Arc<DeviceIdentity>,
    gateway_ca_pem: Vec<u8>,
    collector: CollectorConfig,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = state.subscribe();
        let mut dr_rx = dr.map(|l| l.status);
        let mut last = Destination::of(&state, dr_rx.as_mut());
        loop {
            let collector = collector.clone();
            let id = identity.device_id.clone();
            let now = jiff::Timestamp::now().as_second();
            let posture = match tokio::task::spawn_blocking(move || {
                tsuzuku_device::collect::collect(&collector, &id, now)
            })
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "posture collection failed");
                    tokio::time::sleep(every).await;
                    continue;
                }
            };
            match identity.sign(&posture) {
                Ok(signed) => post(&last, &identity, &gateway_ca_pem, &signed).await,
                Err(e) => tracing::warn!(error = %e, "cannot sign the posture report"),
            }
            // Wait for the interval, or for the destination to change.
            let deadline = tokio::time::sleep(every);
            tokio::pin!(deadline);
            loop {
                let dr_changed = async {
                    match dr_rx.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut deadline => break,
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                    }
                    alive = dr_changed => {
                        if !alive {
                            return;
                        }
                    }
                }
                let now = Destination::of(&state, dr_rx.as_mut());
                if now != last {
                    last = now;
                    break;
                }
            }
        }
    })
}

/// Where posture reports go: the gateways that decide the device's requests now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Destination {
    /// No site in use and no DR mode: nowhere.
    Nowhere,
    Gateways {
        /// For the logs: `site NAME` or `DR gateway HOST`.
        label: String,
        host: String,
        endpoints: Vec<std::net::SocketAddr>,
    },
}

impl Destination {
    fn of(
        state: &SiteState,
        dr: Option<&mut tokio::sync::watch::Receiver<Arc<crate::dr::DrStatus>>>,
    ) -> Self {
        if let Some(rx) = dr {
            let status = rx.borrow_and_update().clone();
            if status.active() {
                let gw = &status.targets.gateway;
                return Self::Gateways {
                    label: format!("DR gateway {}", gw.host),
                    host: gw.host.clone(),
                    endpoints: gw.endpoints.clone(),
                };
            }
        }
        let Some(site_name) = state.selection().site.clone() else {
            return Self::Nowhere;
        };
        match state.sites().into_iter().find(|s| s.name == site_name) {
            Some(site) => Self::Gateways {
                label: format!("site {}", site.name),
                host: site.host,
                endpoints: site.endpoints,
            },
            None => Self::Nowhere,
        }
    }
}

async fn post(to: &Destination, identity: &DeviceIdentity, ca_pem: &[u8], signed: &SignedPosture) {
    let Destination::Gateways {
        label,
        host,
        endpoints,
    } = to
    else {
        tracing::debug!("no site in use; posture not sent");
        return;
    };
    let ident = match reqwest::Identity::from_pem(&identity.identity_pem()) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "device identity unusable for posture reports");
            return;
        }
    };
    for addr in endpoints {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .identity(ident.clone())
            .timeout(Duration::from_secs(5))
            .resolve(host, *addr);
        if let Ok(certs) = reqwest::Certificate::from_pem_bundle(ca_pem) {
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let Ok(client) = builder.build() else {
            continue;
        };
        let url = format!("https://{host}:{}/.tsuzuku/device/posture", addr.port());
        match client.post(&url).json(signed).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(to = %label, %addr, "posture reported");
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::warn!(to = %label, %addr, %status, body = %body.trim(), "posture report refused");
            }
            Err(e) => {
                tracing::debug!(to = %label, %addr, error = %e, "posture report not delivered")
            }
        }
    }
}
