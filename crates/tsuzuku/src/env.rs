//! The environment a command runs in: data directory, configuration, store.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tsuzuku_audit::{AuditEvent, EventKind};
use tsuzuku_config::{Config, MasterKeySource};
use tsuzuku_store::keyring::MasterKey;
use tsuzuku_store::{Store, StoreRoot};

/// A loaded data directory.
pub struct Env {
    pub data_dir: PathBuf,
    pub config: Config,
    pub json: bool,
}

impl Env {
    /// Loads the configuration of `data_dir` (or `config`).
    pub fn load(data_dir: &Path, config: Option<&Path>, json: bool) -> Result<Self> {
        let config_path = config
            .map(Path::to_owned)
            .unwrap_or_else(|| data_dir.join("tsuzuku.toml"));
        if !config_path.exists() {
            if config.is_some() {
                anyhow::bail!(
                    "no configuration file at {} (--config)",
                    config_path.display()
                );
            }
            anyhow::bail!(
                "no configuration at {}; run `tsuzuku init` or `tsuzuku quickstart` first, or pass --data-dir",
                config_path.display()
            );
        }
        let config = Config::load(&config_path)?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            config,
            json,
        })
    }

    /// The store URL with a relative SQLite path resolved against the data directory.
    pub fn store_url(&self) -> String {
        store_url(&self.data_dir, &self.config.store.url)
    }

    /// Opens the store for the configured tenant (with its master key, see
    /// [`Env::store_root`]); the tenant gets its data key now if it has none, so a fresh data
    /// directory is encrypted from its first write.
    pub async fn store(&self) -> Result<Store> {
        let store = self.store_root().await?.tenant(&self.config.store.tenant);
        if store.root().master_key_id().is_some() && store.root().role().is_writable() {
            store
                .ensure_data_key()
                .await
                .context("cannot create the tenant's data key")?;
        }
        Ok(store)
    }

    /// Opens the whole store (every tenant; site roles) and gives it the master key of `[keys]`
    /// (encryption at rest, docs/ENCRYPTION.md). The key file is created only while the store
    /// holds no data key; afterwards a missing key is an error, never a new key. A wrong key
    /// fails here.
    pub async fn store_root(&self) -> Result<StoreRoot> {
        self.store_root_with(tsuzuku_store::SiteOptions::default())
            .await
    }

    /// The control plane's store: with automatic promotion when `[store]` configures it.
    pub async fn store_for_control(&self) -> Result<Store> {
        let options = tsuzuku_store::SiteOptions {
            auto_promote: self.config.store.auto_promote_after_ms.map(|ms| {
                tsuzuku_store::AutoPromote {
                    after: std::time::Duration::from_millis(ms),
                    witness: self.config.store.fencing_witness.clone(),
                }
            }),
            ..tsuzuku_store::SiteOptions::default()
        };
        let store = self
            .store_root_with(options)
            .await?
            .tenant(&self.config.store.tenant);
        if store.root().master_key_id().is_some() && store.root().role().is_writable() {
            store
                .ensure_data_key()
                .await
                .context("cannot create the tenant's data key")?;
        }
        Ok(store)
    }

    async fn store_root_with(&self, options: tsuzuku_store::SiteOptions) -> Result<StoreRoot> {
        let root = StoreRoot::open_with(&self.store_url(), options)
            .await
            .with_context(|| format!("cannot open the store {}", redact(&self.store_url())))?;
        let has_keys = root
            .has_data_keys()
            .await
            .context("cannot read the store's data keys")?;
        if !self.config.keys.enabled {
            if has_keys {
                anyhow::bail!(
                    "keys.enabled is false in the configuration, but the store holds encrypted data; \
                     set keys.enabled = true and configure its master key"
                );
            }
            return Ok(root);
        }
        let master = self.master_key(!has_keys)?;
        if master.was_created() {
            tracing::warn!(
                master_key = master.id(),
                "created a new master key ({}); back it up apart from the database: without it the encrypted data cannot be read",
                master.source()
            );
        }
        root.set_master_key(master).await?;
        Ok(root)
    }

    /// Opens the store for a gateway fed by snapshots, which must start even when no database
    /// server answers: the store then starts unavailable, and the master key is given to it
    /// in the background as soon as a server answers (sessions and sign-ins need it; the
    /// snapshot does not).
    pub async fn store_for_snapshot_gateway(&self) -> Result<Store> {
        let options = tsuzuku_store::SiteOptions {
            start_unavailable: true,
            // Requests must not queue behind a dead server: a snapshot-fed gateway answers from
            // its snapshot and the sessions it has seen when the store is slow to answer, so a
            // short wait costs nothing when the store is merely busy.
            acquire_timeout: std::time::Duration::from_millis(250),
            ..tsuzuku_store::SiteOptions::default()
        };
        let url = self.store_url();
        let root = StoreRoot::open_with(&url, options)
            .await
            .with_context(|| format!("cannot open the store {}", redact(&url)))?;
        if !self.config.keys.enabled {
            return Ok(root.tenant(&self.config.store.tenant));
        }
        if root.role().is_readable() {
            let master = self.master_key(false)?;
            root.set_master_key(master).await?;
            return Ok(root.tenant(&self.config.store.tenant));
        }
        let master = self.master_key(false)?;
        let later = root.clone();
        tokio::spawn(async move {
            let mut master = Some(master);
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if !later.role().is_readable() {
                    continue;
                }
                let Some(m) = master.take() else { return };
                match later.set_master_key(m).await {
                    Ok(()) => {
                        tracing::info!("database reachable; encryption keys loaded");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the encryption keys; sign-ins will fail until restart");
                        return;
                    }
                }
            }
        });
        Ok(root.tenant(&self.config.store.tenant))
    }

    /// Loads the configured master key; `create` allows creating a missing key file (only
    /// while nothing is encrypted yet).
    pub fn master_key(&self, create: bool) -> Result<MasterKey> {
        Ok(match self.config.keys.source() {
            MasterKeySource::File(p) => {
                let path = self.path(&p);
                if create {
                    if let Some(dir) = path.parent()
                        && !dir.exists()
                    {
                        use std::os::unix::fs::DirBuilderExt as _;
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(dir)
                            .with_context(|| {
                                format!("creating the master key directory {}", dir.display())
                            })?;
                    }
                    MasterKey::load_or_create(&path)?
                } else {
                    MasterKey::load(&path)?
                }
            }
            MasterKeySource::Env(var) => MasterKey::from_env(&var)?,
            MasterKeySource::Command(argv) => MasterKey::from_command(&argv)?,
        })
    }

    /// Resolves a path from the configuration.
    pub fn path(&self, p: &Path) -> PathBuf {
        tsuzuku_config::resolve(&self.data_dir, p)
    }
}

/// `sqlite:store.db` relative to `dir` becomes `sqlite:///abs/dir/store.db?mode=rwc`.
pub fn store_url(dir: &Path, url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.starts_with("//") || rest.starts_with(':') {
            return url.to_owned();
        }
        let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = tsuzuku_config::resolve(dir, Path::new(file));
        let abs = std::path::absolute(&path).unwrap_or(path);
        let q = if query.is_empty() { "mode=rwc" } else { query };
        return format!("sqlite://{}?{q}", abs.display());
    }
    url.to_owned()
}

/// A store URL (list) with passwords replaced by `***`.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = u.get(s + 3..at).unwrap_or("");
                match creds.split_once(':') {
                    Some((user, _)) => format!(
                        "{}{user}:***{}",
                        u.get(..s + 3).unwrap_or(""),
                        u.get(at..).unwrap_or("")
                    ),
                    None => u.to_owned(),
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Who runs an admin command, for the audit trail.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Records an admin change in the audit trail; the change is refused to be reported as done
/// unless the event is recorded.
pub async fn audit(store: &Store, kind: EventKind, detail: serde_json::Value) -> Result<()> {
    let ev = AuditEvent {
        time_ms: tsuzuku_gateway::now_ms(),
        kind,
        actor: Some(actor()),
        tenant: store.tenant_id().to_owned(),
        detail: detail.into(),
    };
    store
        .append_audit(vec![ev])
        .await
        .context("the change was made but could not be recorded in the audit trail")?;
    Ok(())
}
