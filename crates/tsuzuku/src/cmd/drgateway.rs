//! `tsuzuku serve --role dr-gateway`: the gateway the customer runs in its own data centre for
//! disaster recovery (issue 5, RS-7). In normal times it follows the control plane's snapshots
//! (the variant with credential verifiers) and mirrors them into its own local SQLite store;
//! when everything else is gone it signs people in, decides and audits from that copy alone,
//! and uploads its audit events to the control plane whenever it is reachable.

use anyhow::{Context as _, Result};
use tsuzuku_snapshot::SnapshotBody;
use tsuzuku_store::{App, PolicyDoc, Store, User};

/// How often the DR gateway looks for audit events to upload when there is nothing new or the
/// control plane is unreachable.
const UPLOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Events per upload.
const UPLOAD_BATCH: usize = 200;

/// The audit uploader's settings: the control plane and credentials of the snapshot feed, and
/// the acknowledged position kept in `audit-upload.json` in the data directory.
pub fn uploader_settings(
    feed: &tsuzuku_gateway::FeedSettings,
    node: &str,
    data_dir: &std::path::Path,
) -> tsuzuku_control::upload::UploaderSettings {
    tsuzuku_control::upload::UploaderSettings {
        control_url: feed.control_url.clone(),
        node_token: feed.node_token.clone(),
        ca_pem: feed.ca_pem.clone(),
        node: node.to_owned(),
        position_file: data_dir.join("audit-upload.json"),
        every: UPLOAD_EVERY,
        batch: UPLOAD_BATCH,
    }
}

/// Only critical apps stay reachable in DR mode.
fn critical_apps(body: &SnapshotBody) -> Vec<App> {
    body.apps
        .iter()
        .filter(|a| a.critical)
        .map(|a| App {
            id: a.id.clone(),
            name: a.name.clone(),
            host: a.host.clone(),
            upstream: a.upstream.clone(),
            data_class: a.data_class.clone(),
            critical: a.critical,
            isolated: a.isolated,
            created_at: a.created_at,
        })
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

/// Copies a verified snapshot into the local store: users with their credentials, the critical
/// apps, the assertion keys, and the policies (as a new local policy version when they differ).
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
        "DR gateway mirrored snapshot"
    );
    Ok(())
}
