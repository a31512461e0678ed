//! `tsuzuku serve --role control`, `tsuzuku status` and `tsuzuku keys snapshot-public`: the
//! control plane that publishes signed gateway snapshots, and what it knows about the nodes.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tsuzuku_control::{Publisher, ServeOptions};

use crate::env::Env;
use crate::output;
use crate::{out, outln};

/// Reads the node token file, creating it (32 random bytes, hex, mode 0600) if missing.
pub fn read_or_create_token(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = t.trim().to_owned();
            if t.len() < 32 {
                anyhow::bail!(
                    "node token file {} holds {} characters; a token needs at least 32 (delete it to have a new one made)",
                    path.display(),
                    t.len()
                );
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore as _;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let token = hex::encode(b);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating the node token file {}", path.display()))?;
            f.write_all(token.as_bytes())?;
            tracing::warn!(file = %path.display(), "created a token; copy keys/node-token to every gateway's snapshot.node_token_file, keys/dr-node-token only to DR gateways");
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading the node token file {}", path.display())),
    }
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn serve(env: &Env, shutdown: impl std::future::Future<Output = ()>) -> Result<ExitCode> {
    let c = &env.config;
    let store = env.store_for_control().await?;
    tsuzuku_gateway::ensure_assertion_key(&store)
        .await
        .context("the identity-assertion key")?;
    tsuzuku_control::enroll::ensure_device_ca(&store, jiff::Timestamp::now().as_second())
        .await
        .context("the device CA")?;
    let publisher = Publisher::with_portal_host(store, Some(c.gateway.portal_host.clone()))
        .await
        .context("cannot publish the first gateway snapshot")?;
    let token = read_or_create_token(&env.path(&c.control.node_token_file))?;
    let dr_token = read_or_create_token(&env.path(&c.control.dr_token_file))?;
    if dr_token == token {
        anyhow::bail!(
            "control.dr_token_file and control.node_token_file hold the same token; the DR token must differ (it unlocks credential verifiers)"
        );
    }
    let tls = tsuzuku_gateway::tls_config(
        &env.path(&c.gateway.tls_cert),
        &env.path(&c.gateway.tls_key),
    )?;
    let listener = tokio::net::TcpListener::bind(c.control.listen)
        .await
        .with_context(|| format!("cannot listen on {} (control.listen)", c.control.listen))?;
    let _refresher = publisher.spawn(Duration::from_millis(c.control.publish_interval_ms));
    tracing::info!(listen = %c.control.listen, kid = publisher.kid(), "control plane serving");
    // A server keeps serving when nobody reads its output any more.
    let _ = outln!("READY https://{}", listener.local_addr()?);
    tsuzuku_control::serve(
        publisher,
        listener,
        tls,
        ServeOptions {
            node_token: token,
            dr_token,
            max_wait: Duration::from_secs(60),
        },
        shutdown,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `tsuzuku keys snapshot-public`.
pub async fn snapshot_public(env: &Env) -> Result<ExitCode> {
    let store = env.store().await?;
    let signer = tsuzuku_control::signing_key(&store, tsuzuku_gateway::now_unix()).await?;
    out!("{}", signer.public_pem()?)?;
    // During a rotation, the prepared next key too: trust files must hold both.
    for next in store.keys(NEXT_SNAPSHOT_KEY_PURPOSE).await? {
        out!("{}", next.public)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `tsuzuku keys assertion-rotate`: a new identity-assertion key, the previous one kept for
/// verification, older ones deleted.
pub async fn assertion_rotate(env: &Env) -> Result<ExitCode> {
    use tsuzuku_gateway::ASSERTION_KEY_PURPOSE;
    let store = env.store().await?;
    let now = tsuzuku_gateway::now_unix();
    let mut keys = store.keys(ASSERTION_KEY_PURPOSE).await?;
    keys.sort_by(|a, b| (b.created_at, &b.kid).cmp(&(a.created_at, &a.kid)));
    let (signer, pem) = tsuzuku_gateway::assertion::Signer::generate()?;
    // Strictly newer than every stored key, so it is the one gateways sign with.
    let created = keys
        .first()
        .map_or(now, |k| now.max(k.created_at.saturating_add(1)));
    store
        .put_key(
            signer.kid(),
            ASSERTION_KEY_PURPOSE,
            pem,
            signer.jwk().to_string(),
            created,
        )
        .await?;
    let mut retired = Vec::new();
    for old in keys.iter().skip(1) {
        if store.delete_key(&old.kid).await? {
            retired.push(old.kid.clone());
        }
    }
    crate::env::audit(
        &store,
        tsuzuku_audit::EventKind::Admin,
        serde_json::json!({"action": "keys.assertion_rotate", "new": signer.kid(), "previous": keys.first().map(|k| k.kid.clone()), "retired": retired}),
    )
    .await?;
    output::done(
        env.json,
        &format!(
            "identity assertions are signed with key {} from each gateway's next reload or snapshot; the previous key stays in the JWKS{}",
            signer.kid(),
            if retired.is_empty() {
                String::new()
            } else {
                format!("; retired {}", retired.join(", "))
            }
        ),
        serde_json::json!({"key": signer.kid(), "previous": keys.first().map(|k| k.kid.clone()), "retired": retired}),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Key purpose of a prepared, not yet active, snapshot signing key.
const NEXT_SNAPSHOT_KEY_PURPOSE: &str = "snapshot-next";

/// `tsuzuku keys snapshot-rotate [--activate]`.
pub async fn snapshot_rotate(env: &Env, activate: bool) -> Result<ExitCode> {
    let store = env.store().await?;
    let now = tsuzuku_gateway::now_unix();
    let current = tsuzuku_control::signing_key(&store, now).await?;
    let next = store.keys(NEXT_SNAPSHOT_KEY_PURPOSE).await?;
    if !activate {
        if let Some(k) = next.first() {
            output::done(
                env.json,
                &format!(
                    "the next snapshot key {} is already prepared; trust it everywhere, then run `tsuzuku keys snapshot-rotate --activate`",
                    k.kid
                ),
                serde_json::json!({"active": current.kid(), "next": k.kid, "created": false}),
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let signer = tsuzuku_snapshot::SnapshotSigner::generate();
        store
            .put_key(
                signer.kid(),
                NEXT_SNAPSHOT_KEY_PURPOSE,
                signer.to_pem()?,
                signer.public_pem()?,
                now,
            )
            .await?;
        crate::env::audit(
            &store,
            tsuzuku_audit::EventKind::Admin,
            serde_json::json!({"action": "keys.snapshot_prepare", "current": current.kid(), "next": signer.kid()}),
        )
        .await?;
        output::done(
            env.json,
            &format!(
                "prepared the next snapshot key {}; put the output of `tsuzuku keys snapshot-public` (both keys) in every gateway's snapshot.trust and every connector's --control-trust file (they re-read it), then run `tsuzuku keys snapshot-rotate --activate`",
                signer.kid()
            ),
            serde_json::json!({"active": current.kid(), "next": signer.kid(), "created": true}),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(k) = next.into_iter().next() else {
        bail!("no next snapshot key is prepared; run `tsuzuku keys snapshot-rotate` first");
    };
    if !store
        .set_key_purpose(
            &k.kid,
            tsuzuku_control::SNAPSHOT_KEY_PURPOSE,
            now.saturating_add(1),
        )
        .await?
    {
        bail!(
            "the prepared key {} disappeared; run `tsuzuku keys snapshot-rotate` again",
            k.kid
        );
    }
    let mut retired = Vec::new();
    for old in store.keys(tsuzuku_control::SNAPSHOT_KEY_PURPOSE).await? {
        if old.kid != k.kid && store.delete_key(&old.kid).await? {
            retired.push(old.kid);
        }
    }
    crate::env::audit(
        &store,
        tsuzuku_audit::EventKind::Admin,
        serde_json::json!({"action": "keys.snapshot_activate", "active": k.kid, "retired": retired}),
    )
    .await?;
    output::done(
        env.json,
        &format!(
            "snapshot key {} is active from the control plane's next refresh; retired {}. Remove the old key from the trust files when every gateway and connector has taken a snapshot or site list signed with the new one",
            k.kid,
            if retired.is_empty() {
                "nothing".to_owned()
            } else {
                retired.join(", ")
            }
        ),
        serde_json::json!({"active": k.kid, "retired": retired}),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `tsuzuku status`.
pub async fn status(env: &Env) -> Result<ExitCode> {
    let store = env.store().await?;
    let role = store.root().role();
    let nodes = store.list_nodes().await?;
    let now = tsuzuku_gateway::now_ms();
    let secs = |ms: i64| (now.saturating_sub(ms) / 1000).max(0);
    if !env.json {
        outln!("store: {role}")?;
    }
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.role.clone(),
                n.snapshot_version
                    .map_or_else(|| "none".into(), |v| v.to_string()),
                n.snapshot_issued_ms
                    .map_or_else(|| "-".into(), |ms| format!("{} s", secs(ms))),
                format!("{} s ago", secs(n.last_seen_ms)),
            ]
        })
        .collect();
    let json = serde_json::json!({
        "store": {"role": role.to_string(), "writable": role.is_writable()},
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "node": n.node_id,
            "role": n.role,
            "snapshot_version": n.snapshot_version,
            "snapshot_age_secs": n.snapshot_issued_ms.map(secs),
            "last_seen_secs": secs(n.last_seen_ms),
        })).collect::<Vec<_>>(),
    });
    // Experience monitoring: connectors that reported in the last two minutes, per site.
    let reports = store.connector_reports(now.saturating_sub(120_000)).await?;
    let per_site = per_site(&reports);
    let mut json = json;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "sites".into(),
            serde_json::json!(
                per_site
                    .iter()
                    .map(|s| serde_json::json!({
                        "site": s.site, "connectors": s.connectors,
                        "median_latency_ms": s.median_latency_ms, "max_loss_pct": s.max_loss_pct,
                    }))
                    .collect::<Vec<_>>()
            ),
        );
    }
    output::print(
        env.json,
        &[
            "node",
            "role",
            "snapshot version",
            "snapshot age",
            "last seen",
        ],
        rows,
        json,
    )?;
    if !env.json {
        output::print(
            false,
            &[
                "site",
                "connectors (last 2 min)",
                "median latency",
                "worst loss",
            ],
            per_site
                .iter()
                .map(|s| {
                    vec![
                        s.site.clone(),
                        s.connectors.to_string(),
                        s.median_latency_ms
                            .map_or_else(|| "-".into(), |l| format!("{l} ms")),
                        s.max_loss_pct
                            .map_or_else(|| "-".into(), |l| format!("{l}%")),
                    ]
                })
                .collect(),
            serde_json::Value::Null,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Connectors per site, from their reports.
struct SiteUse {
    site: String,
    connectors: usize,
    median_latency_ms: Option<i64>,
    max_loss_pct: Option<i64>,
}

fn per_site(reports: &[tsuzuku_store::ConnectorReport]) -> Vec<SiteUse> {
    let mut by: std::collections::BTreeMap<String, Vec<&tsuzuku_store::ConnectorReport>> =
        Default::default();
    for r in reports {
        by.entry(r.site.clone().unwrap_or_else(|| "(none)".into()))
            .or_default()
            .push(r);
    }
    by.into_iter()
        .map(|(site, rs)| {
            let mut lat: Vec<i64> = rs.iter().filter_map(|r| r.latency_ms).collect();
            lat.sort_unstable();
            SiteUse {
                site,
                connectors: rs.len(),
                median_latency_ms: lat.get(lat.len() / 2).copied(),
                max_loss_pct: rs.iter().filter_map(|r| r.loss_pct).max(),
            }
        })
        .collect()
}
