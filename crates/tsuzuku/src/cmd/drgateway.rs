//! `tsuzuku serve --role dr-gateway`: the gateway the customer runs in its own data centre for
//! disaster recovery (issue 5, RS-7). In normal times it follows the control plane's snapshots
//! (the variant with credential verifiers) and mirrors them into its own local SQLite store;
//! when everything else is gone it signs people in, decides and audits from that copy alone,
//! and uploads its audit events to the control plane whenever it is reachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tsuzuku_snapshot::SnapshotBody;
use tsuzuku_store::{App, PolicyDoc, Store, User};

/// How often the DR gateway looks for audit events to upload when there is nothing new or the
/// control plane is unreachable.
const UPLOAD_EVERY: Duration = Duration::from_secs(2);
/// Events per upload.
const UPLOAD_BATCH: usize = 200;

/// What the DR gateway's audit uploader needs: the control plane and credentials of the
/// snapshot feed, and where the acknowledged position is kept.
pub struct Uploader {
    control_url: String,
    node_token: String,
    ca_pem: Option<Vec<u8>>,
    node: String,
    position_file: PathBuf,
}

impl Uploader {
    /// The position is kept in `audit-upload.json` in the data directory.
    pub fn new(feed: &tsuzuku_gateway::FeedSettings, node: &str, data_dir: &Path) -> Self {
        Self {
            control_url: feed.control_url.clone(),
            node_token: feed.node_token.clone(),
            ca_pem: feed.ca_pem.clone(),
            node: node.to_owned(),
            position_file: data_dir.join("audit-upload.json"),
        }
    }

    /// Starts uploading (`tsuzuku_control::upload` describes the protocol): every
    /// [`UPLOAD_EVERY`], and at once again after a full batch, the events after the
    /// acknowledged position. Problems are logged once each until resolved.
    pub fn spawn(self, store: Store) -> Result<tokio::task::JoinHandle<()>> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .https_only(true)
            .min_tls_version(reqwest::tls::Version::TLS_1_2);
        if let Some(pem) = &self.ca_pem {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(pem)
                    .context("snapshot.ca_file is not a PEM certificate")?,
            );
        }
        let client = b.build().context("cannot build the control-plane client")?;
        Ok(tokio::spawn(async move {
            let mut last_problem: Option<String> = None;
            loop {
                match self.round(&client, &store).await {
                    Ok(more) => {
                        last_problem = None;
                        if more {
                            continue;
                        }
                    }
                    Err(p) => {
                        if last_problem.as_deref() != Some(p.as_str()) {
                            tracing::warn!(problem = %p, "DR audit upload: not uploaded yet, retrying");
                            last_problem = Some(p);
                        }
                    }
                }
                tokio::time::sleep(UPLOAD_EVERY).await;
            }
        }))
    }

    /// One upload; `Ok(true)` when there may be more to send at once.
    async fn round(&self, client: &reqwest::Client, store: &Store) -> Result<bool, String> {
        use tsuzuku_control::upload::{
            MAX_UPLOAD_BYTES, Position, read_position, upload_body, write_position,
        };
        let read_err = |e: tsuzuku_store::StoreError| format!("reading the local audit chain: {e}");
        let first = store.audit_events(1, 1).await.map_err(read_err)?;
        let Some(chain) = first.first().map(|e| e.hash.clone()) else {
            return Ok(false);
        };
        let mut pos = read_position(&self.position_file)
            .filter(|p| p.chain == chain)
            .unwrap_or(Position {
                chain: chain.clone(),
                uploaded_to: 0,
            });
        let mut events = store
            .audit_events(
                pos.uploaded_to.saturating_add(1),
                i64::try_from(UPLOAD_BATCH).unwrap_or(1),
            )
            .await
            .map_err(read_err)?;
        let read = events.len();
        if read == 0 {
            return Ok(false);
        }
        // Keep the body under the control plane's limit: fewer events if they are large.
        let body = loop {
            let body = upload_body(&self.node, &chain, &events)
                .map_err(|e| format!("encoding the upload: {e}"))?;
            if body.len() <= MAX_UPLOAD_BYTES || events.len() <= 1 {
                break body;
            }
            events.truncate(events.len() / 2);
        };
        let url = format!("{}/v1/audit", self.control_url.trim_end_matches('/'));
        let resp = client
            .post(&url)
            .bearer_auth(&self.node_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach the control plane at {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the control plane's answer: {e}"))?;
        if status != 200 && status != 409 {
            return Err(format!(
                "the control plane refused the upload ({status}): {}",
                text.trim()
            ));
        }
        let a: tsuzuku_control::upload::Answer = serde_json::from_str(&text)
            .map_err(|e| format!("the control plane's answer is not understood: {e}"))?;
        if status == 409 {
            if a.uploaded_to == pos.uploaded_to {
                return Err(format!(
                    "the control plane refuses the events after #{}: {}",
                    a.uploaded_to,
                    a.error.as_deref().unwrap_or("out of step")
                ));
            }
            tracing::warn!(
                uploaded_to = a.uploaded_to,
                reason = a.error.as_deref().unwrap_or(""),
                "DR audit upload: the control plane holds another position; continuing from it"
            );
        }
        pos.uploaded_to = a.uploaded_to;
        write_position(&self.position_file, &pos).map_err(|e| {
            format!(
                "cannot write the upload position {}: {e}",
                self.position_file.display()
            )
        })?;
        if a.appended > 0 {
            tracing::info!(
                appended = a.appended,
                uploaded_to = a.uploaded_to,
                "DR audit events uploaded to the control plane"
            );
        }
        // More at once after a full or shortened batch, or from the control plane's position.
        Ok(read >= UPLOAD_BATCH || events.len() < read || status == 409)
    }
}

/// Only critical apps stay reachable in DR mode.
fn critical_apps(body: &SnapshotBody) -> Vec<App> {
    body.apps
        .iter()
        .filter(|a| a.critical)
        .map(tsuzuku_gateway::app_from_snapshot)
        .collect()
}

fn users(body: &SnapshotBody) -> Vec<User> {
    body.users
        .iter()
        .map(|u| {
            let cred = body.credentials.iter().find(|c| c.user_id == u.id);
            User {
                id: u.id.clone(),
                username: u.username.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                password_hash: cred.and_then(|c| c.password_hash.clone()),
                totp_secret: cred.and_then(|c| c.totp_secret.clone()),
                totp_last_step: None,
                groups: u.groups.clone(),
                disabled: u.disabled,
                failed_logins: 0,
                locked_until: None,
                oidc_subject: cred.and_then(|c| c.oidc_subject.clone()),
                created_at: u.created_at,
            }
        })
        .collect()
}

/// The enrolled devices as the store keeps them (revoked ones too, so they stay refused).
fn devices(body: &SnapshotBody) -> Vec<tsuzuku_store::Device> {
    body.devices
        .iter()
        .map(tsuzuku_gateway::device_from_snapshot)
        .collect()
}

/// The mirrored device CA certificate's key id: named by its hash, so an unchanged CA is
/// recognised and never written again.
fn device_ca_key_id(pem: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(pem.as_bytes());
    format!(
        "device-ca-{}",
        hex::encode(digest.get(..8).unwrap_or_default())
    )
}

/// Copies a verified snapshot into the local store: users with their credentials, the critical
/// apps, the assertion keys, device trust (enrolled devices and the device CA's certificate, so
/// connectors' device certificates, device-bound sessions and posture work in DR mode), and the
/// policies (as a new local policy version when they differ).
pub async fn mirror(store: &Store, body: &SnapshotBody) -> Result<()> {
    if body.credentials.is_empty() && !body.users.is_empty() {
        anyhow::bail!(
            "snapshot {} carries no credential verifiers: the control plane must serve this node as role dr-gateway",
            body.version
        );
    }
    store
        .mirror_users(&users(body))
        .await
        .context("mirroring users")?;
    store
        .mirror_apps(&critical_apps(body))
        .await
        .context("mirroring critical apps")?;
    store
        .mirror_devices(&devices(body))
        .await
        .context("mirroring enrolled devices")?;
    let ca = body.device_ca.as_deref();
    store
        .mirror_device_ca(
            &ca.map(device_ca_key_id).unwrap_or_default(),
            ca,
            tsuzuku_gateway::now_unix(),
        )
        .await
        .context("mirroring the device CA certificate")?;
    let have: Vec<String> = store
        .keys(tsuzuku_gateway::ASSERTION_KEY_PURPOSE)
        .await?
        .into_iter()
        .map(|k| k.kid)
        .collect();
    for k in &body.assertion_keys {
        if have.contains(&k.kid) {
            continue;
        }
        let signer = tsuzuku_gateway::assertion::Signer::from_pem(&k.pem)
            .with_context(|| format!("assertion key {} in the snapshot", k.kid))?;
        store
            .put_key(
                &k.kid,
                tsuzuku_gateway::ASSERTION_KEY_PURPOSE,
                k.pem.clone(),
                signer.jwk().to_string(),
                k.created_at,
            )
            .await?;
    }
    let current = store.current_policy().await?;
    let same = current.as_ref().is_some_and(|p| {
        p.docs.len() == body.policies.len()
            && p.docs
                .iter()
                .zip(&body.policies)
                .all(|(d, s)| d.id == s.id && d.text == s.text)
    });
    if !same {
        let mut docs: Vec<PolicyDoc> = body
            .policies
            .iter()
            .map(|p| PolicyDoc {
                id: p.id.clone(),
                text: p.text.clone(),
            })
            .collect();
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        store
            .save_policy(
                current.as_ref().map_or(0, |p| p.version),
                "control-plane snapshot",
                &format!(
                    "policy version {} from snapshot {}",
                    body.policy_version, body.version
                ),
                docs,
                tsuzuku_gateway::now_unix(),
            )
            .await
            .context("mirroring policies")?;
    }
    tracing::info!(
        version = body.version,
        users = body.users.len(),
        critical_apps = body.apps.iter().filter(|a| a.critical).count(),
        devices = body.devices.len(),
        "DR gateway mirrored snapshot"
    );
    Ok(())
}
