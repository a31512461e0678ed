//! `tsuzuku keys`: encryption at rest — status, master-key rotation, sealing old plaintext.
//! The cryptography is `tsuzuku-keyring`'s and the storage the store's; this module loads keys
//! from the places the operator names, prints, and records admin events.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use tsuzuku_audit::EventKind;
use tsuzuku_config::MasterKeySource;
use tsuzuku_store::keyring::MasterKey;

use crate::cli::KeysCmd;
use crate::env::{self, Env};
use crate::outln;

pub async fn run(env: &Env, c: KeysCmd) -> Result<ExitCode> {
    match c {
        KeysCmd::Status => status(env).await,
        KeysCmd::Rotate {
            new_key_file,
            new_key_env,
        } => rotate(env, new_key_file, new_key_env).await,
        KeysCmd::SealExisting => seal_existing(env).await,
        KeysCmd::SnapshotPublic => super::control::snapshot_public(env).await,
        KeysCmd::SnapshotRotate { activate } => {
            super::control::snapshot_rotate(env, activate).await
        }
        KeysCmd::AssertionRotate => super::control::assertion_rotate(env).await,
    }
}

/// How the configuration names the master key, for people.
fn configured_source(env: &Env) -> String {
    if !env.config.keys.enabled {
        return "none (keys.enabled = false)".into();
    }
    match env.config.keys.source() {
        MasterKeySource::File(p) => format!("key file {}", env.path(&p).display()),
        MasterKeySource::Env(var) => format!("environment variable {var}"),
        MasterKeySource::Command(argv) => format!("command `{}`", argv.join(" ")),
    }
}

async fn status(env: &Env) -> Result<ExitCode> {
    let store = env.store().await?;
    let status = store.root().encryption_status().await?;
    let source = configured_source(env);
    if env.json {
        let tenants: Vec<serde_json::Value> = status
            .tenants
            .iter()
            .map(|t| {
                serde_json::json!({
                    "tenant": t.tenant,
                    "data_keys": t.data_keys.iter().map(|k| serde_json::json!({
                        "id": k.id, "master_id": k.master_id, "created_at": k.created_at,
                    })).collect::<Vec<_>>(),
                    "sealed": t.sealed,
                    "plaintext": t.plaintext,
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "master_key_id": status.master_id,
                "master_key_source": source,
                "tenants": tenants,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    match &status.master_id {
        Some(id) => outln!("master key: {id} ({source})")?,
        None => outln!("master key: none ({source}); values are stored as given")?,
    }
    if status.tenants.is_empty() {
        outln!("no data keys and no values to encrypt yet")?;
    }
    let mut plaintext = 0;
    for t in &status.tenants {
        outln!(
            "tenant {}: {} encrypted, {} plaintext value(s)",
            t.tenant,
            t.sealed,
            t.plaintext
        )?;
        for k in &t.data_keys {
            outln!(
                "  data key {} (wrapped by master key {}, created {})",
                k.id,
                k.master_id,
                jiff::Timestamp::from_second(k.created_at)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| k.created_at.to_string())
            )?;
        }
        plaintext += t.plaintext;
    }
    if plaintext > 0 && status.master_id.is_some() {
        outln!(
            "{plaintext} value(s) predate encryption; `tsuzuku keys seal-existing` encrypts them"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The new master key: an existing key file is loaded, a missing one created (mode 0600).
fn new_master_key(file: Option<PathBuf>, var: Option<String>) -> Result<MasterKey> {
    Ok(match (file, var) {
        (Some(path), _) => {
            let path = std::path::absolute(&path).unwrap_or(path);
            if path.exists() {
                MasterKey::load(&path)?
            } else {
                MasterKey::create(&path)?
            }
        }
        (None, Some(var)) => MasterKey::from_env(&var)?,
        (None, None) => bail!("give the new master key with --new-key-file or --new-key-env"),
    })
}

async fn rotate(env: &Env, file: Option<PathBuf>, var: Option<String>) -> Result<ExitCode> {
    // The current key first: a new key file is created only once the store opened with it.
    let store = env.store().await?;
    let root = store.root();
    let Some(current) = root.master_key_id() else {
        bail!("encryption at rest is off (keys.enabled = false): there is no master key to rotate");
    };
    let new = new_master_key(file, var)?;
    if current == new.id() {
        bail!(
            "the new master key ({}) is the current one (id {current}); give a different key",
            new.source()
        );
    }
    let new_source = new.source().clone();
    let config_line = match &new_source {
        tsuzuku_store::keyring::KeySource::File { path, .. } => {
            format!("master_key_file = {:?}", path.display().to_string())
        }
        tsuzuku_store::keyring::KeySource::Env { var } => format!("master_key_env = {var:?}"),
        other => format!("# the new key's source: {other}"),
    };
    let rotation = root
        .rotate_master_key(new)
        .await
        .context("the master key was not rotated; the data keys are unchanged")?;
    env::audit(
        &store,
        EventKind::Admin,
        serde_json::json!({
            "action": "keys.rotate",
            "old_master_id": rotation.old_master_id,
            "new_master_id": rotation.new_master_id,
            "data_keys": rotation.data_keys.iter().map(|(t, k)| format!("{t}/{k}")).collect::<Vec<_>>(),
        }),
    )
    .await?;
    if env.json {
        outln!(
            "{}",
            serde_json::json!({
                "old_master_id": rotation.old_master_id,
                "new_master_id": rotation.new_master_id,
                "data_keys": rotation.data_keys.len(),
                "config": format!("[keys]\n{config_line}"),
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "re-wrapped {} data key(s): master key {} -> {} ({new_source})",
        rotation.data_keys.len(),
        rotation.old_master_id,
        rotation.new_master_id
    )?;
    outln!("now set in the configuration (replacing the current master key setting):")?;
    outln!()?;
    outln!("  [keys]")?;
    outln!("  {config_line}")?;
    outln!()?;
    outln!(
        "and restart the nodes one by one; running nodes keep working meanwhile. Keep the old \
         master key ({}) as long as you keep database backups made before now.",
        rotation.old_master_id
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn seal_existing(env: &Env) -> Result<ExitCode> {
    let store = env.store().await?;
    let sealed = store.root().seal_plaintext().await?;
    env::audit(
        &store,
        EventKind::Admin,
        serde_json::json!({"action": "keys.seal_existing", "sealed": sealed}),
    )
    .await?;
    if env.json {
        outln!("{}", serde_json::json!({"sealed": sealed}))?;
    } else {
        outln!("encrypted {sealed} value(s) that were stored in plaintext")?;
    }
    Ok(ExitCode::SUCCESS)
}
