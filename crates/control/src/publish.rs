//! Building, signing and publishing snapshots.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tsuzuku_snapshot::body::{FORMAT, next_version};
use tsuzuku_snapshot::{
    AppEntry, CredentialEntry, DeviceEntry, ExclusionEntry, KeyEntry, PolicyEntry, SiteEntry,
    SiteListBody, SnapshotBody, SnapshotSigner, UserEntry,
};
use tsuzuku_store::Store;

use crate::error::ControlError;

/// Key purpose under which the snapshot signing key is stored.
pub const SNAPSHOT_KEY_PURPOSE: &str = "snapshot";
/// Key purpose of the identity-assertion keys gateways sign with (as the gateway stores them).
const ASSERTION_KEY_PURPOSE: &str = "assertion";

/// One published version in wire form.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: i64,
    pub issued_at_ms: i64,
    pub digest: String,
    pub bytes: Bytes,
}

/// Reads the store's current configuration into a snapshot document, with the users'
/// credential verifiers (the DR-gateway variant; [`Publisher`] strips them for ordinary
/// gateways).
pub async fn body_from_store(
    store: &Store,
    version: i64,
    now_ms: i64,
) -> Result<SnapshotBody, ControlError> {
    // The policy version is read first and its documents by number, so the pair is consistent
    // even when a new version is saved in between.
    let policy = store.current_policy().await?;
    let apps = store.list_apps().await?;
    let users = store.list_users().await?;
    let mut keys = store.keys(ASSERTION_KEY_PURPOSE).await?;
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    let device_ca = store
        .newest_key(tsuzuku_device::CA_KEY_PURPOSE)
        .await?
        .map(|k| k.public);
    let devices = store.list_devices().await?;
    Ok(SnapshotBody {
        device_ca,
        devices: devices
            .into_iter()
            .map(|d| DeviceEntry {
                id: d.id,
                name: d.name,
                fingerprint: d.fingerprint,
                public_key: d.public_key,
                company_issued: d.company_issued,
                enrolled_at: d.enrolled_at,
                not_after: d.not_after,
                revoked_at: d.revoked_at,
                user_id: d.user_id,
            })
            .collect(),
        format: FORMAT,
        tenant: store.tenant_id().to_owned(),
        version,
        issued_at_ms: now_ms,
        policy_version: policy.as_ref().map_or(0, |p| p.version),
        policies: policy
            .map(|p| {
                p.docs
                    .into_iter()
                    .map(|d| PolicyEntry {
                        id: d.id,
                        text: d.text,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        apps: apps
            .into_iter()
            .map(|a| AppEntry {
                id: a.id,
                name: a.name,
                host: a.host,
                upstream: a.upstream,
                data_class: a.data_class,
                critical: a.critical,
                isolated: a.isolated,
                created_at: a.created_at,
            })
            .collect(),
        credentials: users
            .iter()
            .map(|u| CredentialEntry {
                user_id: u.id.clone(),
                password_hash: u.password_hash.clone(),
                totp_secret: u.totp_secret.clone(),
                oidc_subject: u.oidc_subject.clone(),
            })
            .collect(),
        users: users
            .into_iter()
            .map(|u| UserEntry {
                id: u.id,
                username: u.username,
                display_name: u.display_name,
                email: u.email,
                groups: u.groups,
                disabled: u.disabled,
                created_at: u.created_at,
            })
            .collect(),
        assertion_keys: keys
            .into_iter()
            .map(|k| KeyEntry {
                kid: k.kid,
                pem: k.secret,
                created_at: k.created_at,
            })
            .collect(),
    })
}

/// A gateway node's last load report.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub site: String,
    /// Requests per second it served over its last report period.
    pub rps: f64,
    pub at_ms: i64,
}

/// Load reports older than this are ignored.
const LOAD_FRESH_MS: i64 = 10_000;
/// A site sheds at or above this share of its capacity.
pub const SHED_AT_PERCENT: i64 = 90;

/// Which sites shed load at `now_ms` (pure): a site with a known capacity whose nodes' fresh
/// reports add up to `SHED_AT_PERCENT` of it or more. Each hint says whether the other
/// sites' spare capacity can take its load, and lapses 10–15 s later unless renewed.
pub fn shedding(
    sites: &[tsuzuku_store::GatewaySite],
    excluded: &[String],
    loads: &[NodeLoad],
    now_ms: i64,
) -> Vec<tsuzuku_snapshot::ShedEntry> {
    let load_of = |site: &str| -> f64 {
        loads
            .iter()
            .filter(|l| l.site == site && now_ms.saturating_sub(l.at_ms) <= LOAD_FRESH_MS)
            .map(|l| l.rps)
            .sum()
    };
    let until_ms = (now_ms / 5_000).saturating_add(3).saturating_mul(5_000);
    sites
        .iter()
        .filter_map(|s| {
            let cap = s.capacity_rps.filter(|c| *c > 0)? as f64;
            let load = load_of(&s.name);
            if load * 100.0 < SHED_AT_PERCENT as f64 * cap {
                return None;
            }
            let pct = (load * 100.0 / cap).floor() as i64;
            let spare: f64 = sites
                .iter()
                .filter(|o| o.name != s.name && !excluded.contains(&o.name))
                .filter_map(|o| {
                    o.capacity_rps
                        .filter(|c| *c > 0)
                        .map(|c| (c as f64 - load_of(&o.name)).max(0.0))
                })
                .sum();
            Some(tsuzuku_snapshot::ShedEntry {
                site: s.name.clone(),
                until_ms,
                load_pct: pct,
                others_can_absorb: spare >= load,
            })
        })
        .collect()
}

/// Reads the gateway sites and the exclusions in force at `now_ms` into a site list, with the
/// load-shedding hints from `loads`. The critical hosts are the critical apps' hosts and, when
/// there is one, the sign-in portal's host (`portal_host`): in DR mode people sign in at the DR
/// gateway's portal, so connectors must send it there too.
pub async fn sites_from_store(
    store: &Store,
    version: i64,
    now_ms: i64,
    loads: &[NodeLoad],
    portal_host: Option<&str>,
) -> Result<SiteListBody, ControlError> {
    let (dr_sites, sites): (Vec<_>, Vec<_>) = store
        .list_gateway_sites()
        .await?
        .into_iter()
        .partition(|s| s.dr);
    let critical_hosts: Vec<String> = store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| a.critical)
        .map(|a| a.host)
        .collect();
    let critical_hosts = match portal_host {
        Some(p) if !critical_hosts.is_empty() && !critical_hosts.iter().any(|h| h == p) => {
            let mut all = critical_hosts;
            all.push(p.to_owned());
            all
        }
        _ => critical_hosts,
    };
    let dr_gateway = dr_sites.into_iter().next().map(|s| SiteEntry {
        name: s.name,
        host: s.host,
        endpoints: s.endpoints,
        preference: s.preference,
    });
    let exclusions = store.active_site_exclusions(now_ms).await?;
    let excluded: Vec<String> = exclusions.iter().map(|e| e.site.clone()).collect();
    let shedding = shedding(&sites, &excluded, loads, now_ms);
    Ok(SiteListBody {
        format: FORMAT,
        tenant: store.tenant_id().to_owned(),
        version,
        issued_at_ms: now_ms,
        sites: sites
            .into_iter()
            .map(|s| SiteEntry {
                name: s.name,
                host: s.host,
                endpoints: s.endpoints,
                preference: s.preference,
            })
            .collect(),
        exclusions: exclusions
            .into_iter()
            .map(|e| ExclusionEntry {
                site: e.site,
                until_ms: e.until_ms,
                reason: e.reason,
            })
            .collect(),
        shedding,
        dr_gateway,
        critical_hosts,
    })
}

/// Loads the snapshot signing key from the store, creating it on first use.
pub async fn signing_key(store: &Store, now: i64) -> Result<SnapshotSigner, ControlError> {
    let newest = |keys: Vec<tsuzuku_store::StoredKey>| {
        keys.into_iter()
            .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
    };
    if let Some(k) = newest(store.keys(SNAPSHOT_KEY_PURPOSE).await?) {
        return Ok(SnapshotSigner::from_pem(&k.secret)?);
    }
    let signer = SnapshotSigner::generate();
    store
        .put_key(
            signer.kid(),
            SNAPSHOT_KEY_PURPOSE,
            signer.to_pem()?,
            signer.public_pem()?,
            now,
        )
        .await?;
    // Two control planes starting at once may both have created one: use the newest.
    match newest(store.keys(SNAPSHOT_KEY_PURPOSE).await?) {
        Some(k) => Ok(SnapshotSigner::from_pem(&k.secret)?),
        None => Ok(signer),
    }
}

/// Publishes signed snapshots of one tenant.
pub struct Publisher {
    store: Store,
    /// The signing key in use; replaced when the store's newest snapshot key changes (key
    /// rotation, `tsuzuku keys snapshot-rotate --activate`).
    signer: Mutex<Arc<SnapshotSigner>>,
    /// Set when the signer changed, so the next refresh publishes even if nothing else did.
    resign: std::sync::atomic::AtomicBool,
    tx: watch::Sender<Option<Arc<Published>>>,
    /// The same versions with credential verifiers, for DR gateways.
    dr_tx: watch::Sender<Option<Arc<Published>>>,
    sites_tx: watch::Sender<Option<Arc<Published>>>,
    /// Gateway nodes' load reports, by node.
    loads: Mutex<std::collections::HashMap<String, NodeLoad>>,
    /// Serialises refreshes.
    refreshing: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    /// The sign-in portal's host (`[gateway] portal_host`), a critical host in DR mode.
    portal_host: Option<String>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("tenant", &self.store.tenant_id())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Publisher {
    /// Loads (or creates) the signing key and publishes the first version.
    pub async fn new(store: Store) -> Result<Arc<Self>, ControlError> {
        Self::with_portal_host(store, None).await
    }

    /// [`Publisher::new`], naming the sign-in portal's host so the site list carries it among
    /// the critical hosts (people sign in there in DR mode).
    pub async fn with_portal_host(
        store: Store,
        portal_host: Option<String>,
    ) -> Result<Arc<Self>, ControlError> {
        let signer = signing_key(&store, now_ms() / 1000).await?;
        let (tx, _) = watch::channel(None);
        let (sites_tx, _) = watch::channel(None);
        let (dr_tx, _) = watch::channel(None);
        let p = Arc::new(Self {
            store,
            signer: Mutex::new(Arc::new(signer)),
            resign: std::sync::atomic::AtomicBool::new(false),
            tx,
            dr_tx,
            sites_tx,
            loads: Mutex::new(std::collections::HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            portal_host,
        });
        p.refresh().await?;
        Ok(p)
    }

    /// The public key gateways must trust (`snapshot.trust`), as SPKI PEM.
    pub fn public_pem(&self) -> Result<String, ControlError> {
        Ok(self.signer().public_pem()?)
    }

    /// The key id snapshots are signed with.
    pub fn kid(&self) -> String {
        self.signer().kid().to_owned()
    }

    fn signer(&self) -> Arc<SnapshotSigner> {
        self.signer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes up the store's newest snapshot key if it is not the one in use.
    async fn follow_signing_key(&self) -> Result<(), ControlError> {
        let Some(k) = self.store.newest_key(SNAPSHOT_KEY_PURPOSE).await? else {
            return Ok(());
        };
        if k.kid == self.kid() {
            return Ok(());
        }
        let next = SnapshotSigner::from_pem(&k.secret)?;
        tracing::info!(old = %self.kid(), new = %next.kid(), "snapshot signing key rotated: signing with the new key");
        *self.signer.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.resign.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The version currently published.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.tx.borrow().clone()
    }

    /// Notified on every new version.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.tx.subscribe()
    }

    /// Notified on every new version of the DR-gateway variant (with credential verifiers).
    pub fn subscribe_dr(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.dr_tx.subscribe()
    }

    /// Records a gateway node's load report (kept in memory: load is only worth its last
    /// few seconds).
    pub fn report_load(&self, node: &str, load: NodeLoad) {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        if loads.len() >= 10_000 && !loads.contains_key(node) {
            let now = load.at_ms;
            loads.retain(|_, l| now.saturating_sub(l.at_ms) <= LOAD_FRESH_MS);
        }
        loads.insert(node.to_owned(), load);
    }

    /// The connectors' site list currently published.
    pub fn current_sites(&self) -> Option<Arc<Published>> {
        self.sites_tx.borrow().clone()
    }

    /// Notified on every new site list.
    pub fn subscribe_sites(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.sites_tx.subscribe()
    }

    /// The store this publisher reads (and records node reports in).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the store and publishes a new version if anything a gateway uses changed.
    /// Returns whether it published.
    pub async fn refresh(&self) -> Result<bool, ControlError> {
        let _one = self.refreshing.lock().await;
        self.follow_signing_key().await?;
        let resign = self.resign.swap(false, std::sync::atomic::Ordering::SeqCst);
        let sites = self.refresh_sites(resign).await?;
        Ok(self.refresh_snapshot(resign).await? || sites)
    }

    async fn refresh_sites(&self, resign: bool) -> Result<bool, ControlError> {
        let previous = self.current_sites();
        let now = now_ms();
        let loads: Vec<NodeLoad> = self
            .loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let body = sites_from_store(
            &self.store,
            next_version(previous.as_ref().map(|p| p.version), now),
            now,
            &loads,
            self.portal_host.as_deref(),
        )
        .await?;
        let digest = body.content_digest();
        if !resign && previous.as_ref().is_some_and(|p| p.digest == digest) {
            return Ok(false);
        }
        let bytes = self.signer().sign_sites(&body)?;
        tracing::info!(
            version = body.version,
            sites = body.sites.len(),
            shedding = body.shedding.len(),
            exclusions = body.exclusions.len(),
            "published site list"
        );
        self.sites_tx.send_replace(Some(Arc::new(Published {
            version: body.version,
            issued_at_ms: body.issued_at_ms,
            digest,
            bytes: Bytes::from(bytes),
        })));
        Ok(true)
    }

    async fn refresh_snapshot(&self, resign: bool) -> Result<bool, ControlError> {
        let previous = self.current();
        let now = now_ms();
        let prev_version = previous.as_ref().map(|p| p.version);
        let body = body_from_store(&self.store, next_version(prev_version, now), now).await?;
        if body.assertion_keys.is_empty() {
            return Err(ControlError::NoAssertionKey);
        }
        let digest = body.content_digest();
        if !resign && previous.as_ref().is_some_and(|p| p.digest == digest) {
            return Ok(false);
        }
        let signer = self.signer();
        let dr_bytes = signer.sign(&body)?;
        let mut ordinary = body.clone();
        ordinary.credentials.clear();
        let bytes = signer.sign(&ordinary)?;
        self.dr_tx.send_replace(Some(Arc::new(Published {
            version: body.version,
            issued_at_ms: body.issued_at_ms,
            digest: digest.clone(),
            bytes: Bytes::from(dr_bytes),
        })));
        tracing::info!(
            version = body.version,
            policy_version = body.policy_version,
            apps = body.apps.len(),
            users = body.users.len(),
            "published gateway snapshot"
        );
        self.tx.send_replace(Some(Arc::new(Published {
            version: body.version,
            issued_at_ms: body.issued_at_ms,
            digest,
            bytes: Bytes::from(bytes),
        })));
        Ok(true)
    }

    /// Refreshes every `every` until the publisher is dropped; a failed refresh keeps the
    /// published version (gateways go on with it) and is logged once per distinct error.
    pub fn spawn(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { break };
                let result = p.refresh().await;
                let mut last = p.last_error.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(_) => *last = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "cannot refresh the gateway snapshot; gateways keep the published one");
                        }
                        *last = Some(msg);
                    }
                }
            }
        })
    }
}
