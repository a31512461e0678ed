//! The gateway's shared state: settings, the current policy engine and app table (swapped
//! atomically on reload), the assertion signer, and handles to the store and audit writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tsuzuku_audit::AuditWriter;
use tsuzuku_identity::oidc::OidcClient;
use tsuzuku_identity::throttle::{IpRateLimiter, LockoutPolicy};
use tsuzuku_policy::{PolicyDoc, PolicyEngine};
use tsuzuku_store::{App, Device, Session, Store, User};

use crate::cache::TtlCache;
use crate::feed::{Feed, FeedSettings};

use crate::assertion::Signer;
use crate::device::{DeviceVerifier, Postures};

/// Error type of bodies the gateway produces.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every response and forwarded request.
pub type Body = BoxBody<Bytes, BoxError>;

/// Key purpose under which the assertion signing key is stored.
pub const ASSERTION_KEY_PURPOSE: &str = "assertion";

/// Why the gateway could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("store: {0}")]
    Store(#[from] tsuzuku_store::StoreError),
    #[error("identity assertion key: {0}")]
    Key(#[from] crate::assertion::AssertionError),
    #[error("policy: {0}")]
    Policy(#[from] tsuzuku_policy::PolicyError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Settings the binary derives from the configuration file.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `host[:port]` of the sign-in portal.
    pub portal_host: String,
    pub tz: jiff::tz::TimeZone,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub idle_timeout_secs: i64,
    pub absolute_timeout_secs: i64,
    pub assertion_ttl_secs: i64,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub lockout: LockoutPolicy,
    pub login_attempts_per_minute: u32,
    pub reload_interval: Duration,
    /// Names this gateway process in audit events.
    pub node_id: String,
    /// Label of the SSO button, when OIDC is configured.
    pub sso_label: Option<String>,
    /// Device posture older than this counts as unknown.
    pub posture_max_age_secs: i64,
    /// Whether a device that belongs to a user can sign that user in (`[gateway]
    /// device_sign_in`).
    pub device_sign_in: bool,
    /// What request paths may contain (`[gateway] path_parameters`).
    pub path_rules: tsuzuku_httpguard::path::PathRules,
}

/// Policies and apps as of one reload (or one applied control-plane snapshot).
pub(crate) struct Snapshot {
    pub policy_version: i64,
    pub engine: Arc<PolicyEngine>,
    pub apps: HashMap<String, App>,
    /// The control-plane snapshot version and issue time (Unix ms), when fed by snapshots.
    pub version: Option<i64>,
    pub issued_at_ms: Option<i64>,
    /// Users by id, when fed by snapshots (otherwise read from the store).
    pub users: Option<HashMap<String, User>>,
    /// Enrolled devices by certificate fingerprint, and the device CA they chain to.
    pub devices: HashMap<String, Arc<Device>>,
    pub device_ca: Option<String>,
}

/// One gateway process.
pub struct Gateway {
    pub(crate) settings: GatewaySettings,
    pub(crate) store: Store,
    pub(crate) audit: AuditWriter,
    pub(crate) oidc: ArcSwapOption<OidcClient>,
    /// The identity-assertion keys: the newest signs, all are published in the JWKS (so
    /// upstreams verify assertions signed just before a rotation). Swapped on reload.
    pub(crate) signers: ArcSwap<Signers>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) ip_limiter: IpRateLimiter,
    pub(crate) client: Client<HttpConnector, Body>,
    /// Sessions (with their user) by token hash, for [`SESSION_CACHE_TTL`].
    pub(crate) sessions: TtlCache<Arc<(Session, User)>>,
    /// Signed assertions (with the other identity headers) by session and app, reused for
    /// half their lifetime.
    pub(crate) assertions: TtlCache<Arc<crate::proxy::Identity>>,
    /// Set when the gateway is fed by control-plane snapshots.
    pub(crate) feed: Option<Feed>,
    /// Requests received, for load reports.
    pub(crate) requests: std::sync::atomic::AtomicU64,
    /// Client-certificate verification against the current device CA.
    pub(crate) device_verifier: Arc<DeviceVerifier>,
    /// Verified device postures.
    pub(crate) postures: Postures,
    /// Single-use memory for sign-ins while the store is a read-only standby.
    pub(crate) standby: crate::standby::Guards,
}

/// How long a node may serve a session from memory before reading it from the store again:
/// the bound on how late a sign-out, disable or revocation made elsewhere takes effect here.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(1);

impl Gateway {
    /// Builds a gateway that reads its configuration from the store: loads (or creates) the
    /// assertion key, policies and apps.
    pub async fn new(
        settings: GatewaySettings,
        store: Store,
        audit: AuditWriter,
        oidc: Option<OidcClient>,
    ) -> Result<Arc<Self>, GatewayError> {
        load_or_create_signer(&store).await?;
        let signer = signers_from_store(&store).await?;
        let snapshot = load_snapshot(&store, &settings.tz, None).await?;
        Ok(Self::assemble(
            settings, store, audit, oidc, signer, snapshot, None,
        ))
    }

    /// Builds a gateway fed by the control plane's signed snapshots (see `feed`): it starts
    /// from the newer of the snapshot on disk and one fetch within `start_timeout`, and needs
    /// neither the control plane nor the store to be up. Call [`Gateway::spawn_reloader`] to
    /// follow new snapshots.
    pub async fn with_feed(
        settings: GatewaySettings,
        store: Store,
        audit: AuditWriter,
        oidc: Option<OidcClient>,
        feed: FeedSettings,
        start_timeout: Duration,
    ) -> Result<Arc<Self>, GatewayError> {
        let feed = Feed::new(feed)?;
        let first = feed
            .initial(store.tenant_id(), &settings.node_id, start_timeout)
            .await?;
        let signer = signers_from(&first.body)?;
        let snapshot = snapshot_from(&first.body, &settings.tz)?;
        Ok(Self::assemble(
            settings,
            store,
            audit,
            oidc,
            signer,
            snapshot,
            Some(feed),
        ))
    }

    fn assemble(
        settings: GatewaySettings,
        store: Store,
        audit: AuditWriter,
        oidc: Option<OidcClient>,
        signer: Signers,
        snapshot: Snapshot,
        feed: Option<Feed>,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let per_minute = settings.login_attempts_per_minute;
        let settings_ttl = settings.assertion_ttl_secs;
        let device_verifier = Arc::new(DeviceVerifier::default());
        if let Err(e) = device_verifier.set_ca(snapshot.device_ca.as_deref()) {
            tracing::error!(error = %e, "device CA unusable; device certificates are not accepted");
        }
        Arc::new(Self {
            ip_limiter: IpRateLimiter::new(per_minute, f64::from(per_minute) / 60.0),
            settings,
            store,
            audit,
            oidc: ArcSwapOption::from(oidc.map(Arc::new)),
            signers: ArcSwap::from_pointee(signer),
            snapshot: ArcSwap::from_pointee(snapshot),
            client,
            sessions: TtlCache::new(SESSION_CACHE_TTL, 100_000),
            assertions: TtlCache::new(
                Duration::from_secs(u64::try_from(settings_ttl / 2).unwrap_or(1).max(1)),
                100_000,
            ),
            feed,
            requests: std::sync::atomic::AtomicU64::new(0),
            device_verifier,
            postures: Postures::default(),
            standby: crate::standby::Guards::default(),
        })
    }

    /// Applies a verified snapshot in one swap. A snapshot whose policies do not compile is
    /// refused whole and the one in use stays.
    pub(crate) fn install(&self, v: &tsuzuku_snapshot::Verified) -> Result<(), GatewayError> {
        let next = snapshot_from(&v.body, &self.settings.tz)?;
        let signers = signers_from(&v.body)?;
        self.use_snapshot(next);
        self.use_signers(signers);
        Ok(())
    }

    /// The control-plane snapshot in use: version and issue time (Unix ms). `None` for a
    /// gateway that reads its configuration from the store.
    pub fn snapshot_in_use(&self) -> Option<(i64, i64)> {
        let s = self.snapshot.load();
        s.version.zip(s.issued_at_ms)
    }

    /// The settings in force.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Installs the OIDC client once the provider could be discovered (the gateway starts and
    /// serves local sign-ins and existing sessions while the provider is unreachable).
    pub fn set_oidc(&self, client: OidcClient) {
        self.oidc.store(Some(Arc::new(client)));
    }

    /// The assertion signer in use (the newest key).
    pub fn signer(&self) -> Arc<Signer> {
        self.signers.load().current.clone()
    }

    /// The JWKS document: every assertion key the gateway knows, newest first.
    pub fn jwks(&self) -> serde_json::Value {
        let s = self.signers.load();
        let all: Vec<&Signer> = s.all.iter().map(|k| k.as_ref()).collect();
        crate::assertion::jwks(&all)
    }

    /// Takes up a new set of assertion keys if it differs from the one in use.
    fn use_signers(&self, next: Signers) {
        let cur = self.signers.load();
        // `current` is the first of `all`, so equal lists mean nothing changed.
        if cur
            .all
            .iter()
            .map(|k| k.kid())
            .eq(next.all.iter().map(|k| k.kid()))
        {
            return;
        }
        tracing::info!(old = %cur.current.kid(), new = %next.current.kid(), keys = next.all.len(), "identity-assertion keys changed: signing with the newest");
        self.signers.store(Arc::new(next));
    }

    /// Re-reads policies (when their version changed) and apps from the store. A gateway fed
    /// by snapshots has nothing to re-read (its feed applies new snapshots as they come).
    pub async fn reload(&self) -> Result<(), GatewayError> {
        if self.feed.is_some() {
            return Ok(());
        }
        let current = self.snapshot.load_full();
        let next = load_snapshot(&self.store, &self.settings.tz, Some(&current)).await?;
        self.use_snapshot(next);
        // Key PEMs are parsed only when the stored key ids differ from the ones in use.
        let mut keys = self.store.keys(ASSERTION_KEY_PURPOSE).await?;
        keys.sort_by(|a, b| (b.created_at, &b.kid).cmp(&(a.created_at, &a.kid)));
        let in_use = self.signers.load();
        if !keys
            .iter()
            .map(|k| k.kid.as_str())
            .eq(in_use.all.iter().map(|k| k.kid()))
        {
            self.use_signers(signers_of(
                keys.into_iter()
                    .map(|k| (k.created_at, k.kid, k.secret))
                    .collect(),
            )?);
        }
        Ok(())
    }

    fn use_snapshot(&self, next: Snapshot) {
        if let Err(e) = self.device_verifier.set_ca(next.device_ca.as_deref()) {
            tracing::error!(error = %e, "device CA unusable; keeping the one in use");
        }
        self.snapshot.store(Arc::new(next));
    }

    /// The TLS server configuration for this gateway's listener: the certificate and key from
    /// PEM files, and client certificates from enrolled devices asked for (not required).
    pub fn tls_config(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
        crate::server::tls_config_with(cert, key, Some(self.device_verifier.clone()))
    }

    /// Reloads every `reload_interval` until the gateway is dropped. A failed reload keeps the
    /// last good policies and apps (and says so in the log).
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        if self.feed.is_some() {
            let tasks = crate::feed::spawn(self);
            return tokio::spawn(async move {
                for t in tasks {
                    let _ = t.await;
                }
            });
        }
        let weak = Arc::downgrade(self);
        let every = self.settings.reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { break };
                if let Err(e) = gw.reload().await {
                    tracing::warn!(error = %e, "reload failed; keeping the last good policies and apps");
                }
            }
        })
    }

    /// Whether the gateway can serve: the store answers (keys are loaded at start). A gateway
    /// fed by snapshots decides from its snapshot and is ready without the store.
    pub async fn ready(&self) -> Result<(), String> {
        if self.feed.is_some() {
            return Ok(());
        }
        self.store
            .ping()
            .await
            .map_err(|e| format!("store unavailable: {e}"))
    }

    /// The policy version in force.
    pub fn policy_version(&self) -> i64 {
        self.snapshot.load().policy_version
    }
}

/// Makes sure the store holds an identity-assertion key (the control plane needs one to put in
/// snapshots before any gateway ran); returns the newest.
pub async fn ensure_assertion_key(store: &Store) -> Result<Signer, GatewayError> {
    load_or_create_signer(store).await
}

async fn load_or_create_signer(store: &Store) -> Result<Signer, GatewayError> {
    let keys = store.keys(ASSERTION_KEY_PURPOSE).await?;
    if let Some(newest) = keys.iter().max_by_key(|k| k.created_at) {
        return Ok(Signer::from_pem(&newest.secret)?);
    }
    let (signer, pem) = Signer::generate()?;
    let jwk = signer.jwk().to_string();
    store
        .put_key(signer.kid(), ASSERTION_KEY_PURPOSE, pem, jwk, now_unix())
        .await?;
    // Two nodes starting at once may both have created a key: use whichever is newest now.
    let keys = store.keys(ASSERTION_KEY_PURPOSE).await?;
    match keys.iter().max_by_key(|k| (k.created_at, k.kid.clone())) {
        Some(k) => Ok(Signer::from_pem(&k.secret)?),
        None => Ok(signer),
    }
}

/// The identity-assertion keys a gateway holds: the newest signs, all verify.
pub(crate) struct Signers {
    pub current: Arc<Signer>,
    /// Every key, newest first (the current one included).
    pub all: Vec<Arc<Signer>>,
}

/// Builds the key set from `(created_at, kid, pem)` triples.
fn signers_of(mut keys: Vec<(i64, String, String)>) -> Result<Signers, GatewayError> {
    keys.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let all = keys
        .iter()
        .map(|(_, _, pem)| Signer::from_pem(pem).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let current = all
        .first()
        .cloned()
        .ok_or_else(|| GatewayError::Snapshot("no identity-assertion key".into()))?;
    Ok(Signers { current, all })
}

fn signers_from(body: &tsuzuku_snapshot::SnapshotBody) -> Result<Signers, GatewayError> {
    if body.assertion_keys.is_empty() {
        return Err(GatewayError::Snapshot(
            "the snapshot carries no identity-assertion key".into(),
        ));
    }
    signers_of(
        body.assertion_keys
            .iter()
            .map(|k| (k.created_at, k.kid.clone(), k.pem.clone()))
            .collect(),
    )
}

async fn signers_from_store(store: &Store) -> Result<Signers, GatewayError> {
    signers_of(
        store
            .keys(ASSERTION_KEY_PURPOSE)
            .await?
            .into_iter()
            .map(|k| (k.created_at, k.kid, k.secret))
            .collect(),
    )
}

/// An app as a snapshot carries it, as the store keeps it.
pub fn app_from_snapshot(a: &tsuzuku_snapshot::AppEntry) -> App {
    App {
        id: a.id.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        upstream: a.upstream.clone(),
        data_class: a.data_class.clone(),
        critical: a.critical,
        isolated: a.isolated,
        created_at: a.created_at,
    }
}

/// An enrolled device as a snapshot carries it, as the store keeps it.
pub fn device_from_snapshot(d: &tsuzuku_snapshot::DeviceEntry) -> Device {
    Device {
        id: d.id.clone(),
        name: d.name.clone(),
        fingerprint: d.fingerprint.clone(),
        public_key: d.public_key.clone(),
        company_issued: d.company_issued,
        enrolled_at: d.enrolled_at,
        not_after: d.not_after,
        revoked_at: d.revoked_at,
        user_id: d.user_id.clone(),
    }
}

/// The gateway's view of a control-plane snapshot.
fn snapshot_from(
    body: &tsuzuku_snapshot::SnapshotBody,
    tz: &jiff::tz::TimeZone,
) -> Result<Snapshot, GatewayError> {
    let docs: Vec<PolicyDoc<'_>> = body
        .policies
        .iter()
        .map(|d| PolicyDoc {
            id: &d.id,
            text: &d.text,
        })
        .collect();
    let engine = PolicyEngine::compile(&docs, tz.clone())?;
    let apps = body
        .apps
        .iter()
        .map(|a| (a.host.clone(), app_from_snapshot(a)))
        .collect();
    let users = body
        .users
        .iter()
        .map(|u| {
            (
                u.id.clone(),
                User {
                    id: u.id.clone(),
                    username: u.username.clone(),
                    display_name: u.display_name.clone(),
                    email: u.email.clone(),
                    password_hash: None,
                    totp_secret: None,
                    totp_last_step: None,
                    groups: u.groups.clone(),
                    disabled: u.disabled,
                    failed_logins: 0,
                    locked_until: None,
                    oidc_subject: None,
                    created_at: u.created_at,
                },
            )
        })
        .collect();
    let devices = body
        .devices
        .iter()
        .map(|d| (d.fingerprint.clone(), Arc::new(device_from_snapshot(d))))
        .collect();
    Ok(Snapshot {
        policy_version: body.policy_version,
        engine: Arc::new(engine),
        apps,
        version: Some(body.version),
        issued_at_ms: Some(body.issued_at_ms),
        users: Some(users),
        devices,
        device_ca: body.device_ca.clone(),
    })
}

async fn load_snapshot(
    store: &Store,
    tz: &jiff::tz::TimeZone,
    current: Option<&Arc<Snapshot>>,
) -> Result<Snapshot, GatewayError> {
    let apps: HashMap<String, App> = store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| (a.host.clone(), a))
        .collect();
    let version = store.current_policy_version().await?;
    let devices: HashMap<String, Arc<Device>> = store
        .list_devices()
        .await?
        .into_iter()
        .map(|d| (d.fingerprint.clone(), Arc::new(d)))
        .collect();
    // The device CA this store issues with, or (on a DR gateway) the mirrored certificate.
    let device_ca = match store.newest_key(tsuzuku_device::CA_KEY_PURPOSE).await? {
        Some(k) => Some(k.public),
        None => store
            .newest_key(tsuzuku_store::DEVICE_CA_CERT_PURPOSE)
            .await?
            .map(|k| k.public),
    };
    if let Some(cur) = current
        && cur.policy_version == version
    {
        return Ok(Snapshot {
            policy_version: version,
            engine: cur.engine.clone(),
            apps,
            version: None,
            issued_at_ms: None,
            users: None,
            devices,
            device_ca,
        });
    }
    let engine = match store.current_policy().await? {
        Some(pv) => {
            let docs: Vec<PolicyDoc<'_>> = pv
                .docs
                .iter()
                .map(|d| PolicyDoc {
                    id: &d.id,
                    text: &d.text,
                })
                .collect();
            PolicyEngine::compile(&docs, tz.clone())?
        }
        // No policy yet: nothing is permitted (default deny).
        None => PolicyEngine::compile(&[], tz.clone())?,
    };
    Ok(Snapshot {
        policy_version: version,
        engine: Arc::new(engine),
        apps,
        version: None,
        issued_at_ms: None,
        users: None,
        devices,
        device_ca,
    })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
