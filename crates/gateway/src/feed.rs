//! A gateway fed by the control plane's signed snapshots instead of reading its configuration
//! from the store (issue 3 item 3):
//!
//! - at start, the last good snapshot from the sealed disk cache and one fetch from the control
//!   plane; the newer verified one wins, and a gateway with neither refuses to start;
//! - then a long-poll loop: every snapshot is verified (trusted key, tenant, strictly newer)
//!   before it is applied in one atomic swap and written to disk; a refused one is reported
//!   and changes nothing;
//! - the sessions this node has seen are remembered (and kept in the sealed cache), so while
//!   the store is unreachable — and after a restart in that state — existing sessions go on
//!   working until their own idle or absolute limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tsuzuku_snapshot::{DiskCache, SnapshotError, TrustedKeys, Verified, verify};
use tsuzuku_store::Session;

use crate::state::{Gateway, GatewayError, now_ms, now_unix};

/// Cache entry holding the sessions this node has seen.
const SESSIONS_ENTRY: &str = "sessions";
/// Most sessions remembered.
const MAX_KNOWN_SESSIONS: usize = 200_000;

/// Where and how a gateway gets its snapshots.
pub struct FeedSettings {
    /// Base URL of the control plane, e.g. `https://control.example:9443`.
    pub control_url: String,
    /// Bearer token the control plane expects from gateway nodes.
    pub node_token: String,
    /// Keys snapshots must be signed with (the trust file, re-read when it changes).
    pub trusted: std::sync::Arc<tsuzuku_snapshot::TrustFile>,
    /// PEM of a CA to trust for the control plane's certificate (besides the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// The sealed cache directory.
    pub cache: DiskCache,
    /// This node's role as reported to the control plane.
    pub role: String,
    /// The gateway site this node belongs to; set, the node reports its load.
    pub site: Option<String>,
}

impl std::fmt::Debug for FeedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("control_url", &self.control_url)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The running feed.
pub(crate) struct Feed {
    settings: FeedSettings,
    client: reqwest::Client,
    known: Mutex<HashMap<String, Session>>,
    dirty: AtomicBool,
    /// Last refusal or fetch error, for the log (once per distinct message) and status.
    last_problem: Mutex<Option<String>>,
}

fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, GatewayError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(40))
        .https_only(true)
        .min_tls_version(reqwest::tls::Version::TLS_1_2);
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
            GatewayError::Tls(format!("snapshot.ca_file is not a PEM certificate: {e}"))
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| GatewayError::Tls(format!("cannot build the control-plane client: {e}")))
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What one poll brought.
enum Fetched {
    New(Box<Verified>),
    Unchanged,
}

impl Feed {
    pub(crate) fn new(settings: FeedSettings) -> Result<Self, GatewayError> {
        let client = client(settings.ca_pem.as_deref())?;
        let known = match settings.cache.get(SESSIONS_ENTRY) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Vec<Session>>(&bytes) {
                Ok(list) => list
                    .into_iter()
                    .map(|s| (s.token_hash.clone(), s))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "the cached sessions do not parse; starting without them");
                    HashMap::new()
                }
            },
            Ok(None) => HashMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cached sessions; starting without them");
                HashMap::new()
            }
        };
        Ok(Self {
            settings,
            client,
            known: Mutex::new(known),
            dirty: AtomicBool::new(false),
            last_problem: Mutex::new(None),
        })
    }

    /// The keys to verify with now (a changed trust file is read again; a bad one is reported
    /// and the keys trusted before stay).
    fn trusted_now(&self) -> TrustedKeys {
        let (keys, problem) = self.settings.trusted.keys();
        if let Some(p) = problem {
            tracing::error!(problem = %p, "the snapshot trust file changed but cannot be used");
        }
        keys
    }

    /// The last good snapshot on disk; a cache that fails to open or verify is reported and
    /// ignored (never half-applied).
    pub(crate) fn load_from_disk(&self, tenant: &str) -> Option<Verified> {
        match self
            .settings
            .cache
            .load_snapshot(&self.trusted_now(), tenant)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the snapshot on disk was refused");
                None
            }
        }
    }

    async fn fetch(
        &self,
        tenant: &str,
        node: &str,
        have: Option<i64>,
        wait_secs: u64,
    ) -> Result<Fetched, String> {
        let mut url = format!(
            "{}/v1/snapshot?node={}&role={}&wait={wait_secs}",
            self.settings.control_url.trim_end_matches('/'),
            form_urlencoded::byte_serialize(node.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(self.settings.role.as_bytes()).collect::<String>(),
        );
        if let Some(v) = have {
            url.push_str(&format!("&after={v}"));
        }
        let resp = self
            .client
            .get(&url)
            .bearer_auth(&self.settings.node_token)
            .send()
            .await
            .map_err(|e| format!("control plane unreachable: {}", chain(&e)))?;
        match resp.status().as_u16() {
            204 => Ok(Fetched::Unchanged),
            200 => {
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| format!("snapshot download failed: {e}"))?;
                match verify(&bytes, &self.trusted_now(), tenant, have) {
                    Ok(v) => Ok(Fetched::New(Box::new(v))),
                    // The control plane answered with what we have (it restarted and has not
                    // published anything newer): nothing to do.
                    Err(SnapshotError::NotNewer { got, have }) if got == have => {
                        Ok(Fetched::Unchanged)
                    }
                    Err(e) => Err(format!("snapshot refused: {e}")),
                }
            }
            s => {
                let text = resp.text().await.unwrap_or_default();
                Err(format!(
                    "control plane answered {s}: {}",
                    text.lines().next().unwrap_or("")
                ))
            }
        }
    }

    /// Start-up: the newer of the disk snapshot and one fetch (within `timeout`).
    pub(crate) async fn initial(
        &self,
        tenant: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<Verified, GatewayError> {
        let disk = self.load_from_disk(tenant);
        let have = disk.as_ref().map(|v| v.body.version);
        let fetched = tokio::time::timeout(timeout, self.fetch(tenant, node, have, 0)).await;
        let fresh = match fetched {
            Ok(Ok(Fetched::New(v))) => Some(*v),
            Ok(Ok(Fetched::Unchanged)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no snapshot from the control plane at start");
                None
            }
            Err(_) => {
                tracing::warn!("the control plane did not answer at start");
                None
            }
        };
        match (fresh, disk) {
            (Some(v), _) => {
                self.save(&v);
                Ok(v)
            }
            (None, Some(d)) => {
                tracing::warn!(
                    version = d.body.version,
                    age_secs = d.body.age_secs(now_ms()),
                    "starting from the snapshot on disk"
                );
                Ok(d)
            }
            (None, None) => Err(GatewayError::Snapshot(format!(
                "no usable snapshot: the control plane at {} gave none and the cache {} holds none; start the control plane (tsuzuku serve --role control) or fix snapshot.control_url",
                self.settings.control_url,
                self.settings.cache.dir().display()
            ))),
        }
    }

    fn save(&self, v: &Verified) {
        if let Err(e) = self.settings.cache.save_snapshot(v) {
            tracing::error!(error = %e, "cannot keep the snapshot on disk; the previous one stays");
        }
    }

    fn problem(&self, msg: Option<String>) {
        let mut last = self
            .last_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = &msg
            && last.as_deref() != Some(m.as_str())
        {
            tracing::warn!(problem = %m, "snapshot feed");
        }
        *last = msg;
    }

    /// Remembers a session read from the store.
    pub(crate) fn remember(&self, s: &Session) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN_SESSIONS && !known.contains_key(&s.token_hash) {
            let now = now_unix();
            known.retain(|_, k| k.absolute_expiry > now);
            if known.len() >= MAX_KNOWN_SESSIONS {
                return;
            }
        }
        if known.get(&s.token_hash) != Some(s) {
            known.insert(s.token_hash.clone(), s.clone());
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets a session the store says is gone.
    pub(crate) fn forget(&self, token_hash: &str) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.remove(token_hash).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// A session this node saw, for when the store cannot be asked.
    pub(crate) fn known(&self, token_hash: &str) -> Option<Session> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token_hash)
            .cloned()
    }

    /// Records activity on a remembered session (the store could not take it).
    pub(crate) fn touch(&self, token_hash: &str, now: i64) {
        if let Some(s) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(token_hash)
        {
            s.last_seen = now;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    fn persist_sessions(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let now = now_unix();
        let list: Vec<Session> = {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.retain(|_, s| s.absolute_expiry > now);
            known.values().cloned().collect()
        };
        let result = serde_json::to_vec(&list)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                self.settings
                    .cache
                    .put(SESSIONS_ENTRY, &b)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            self.dirty.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot keep the known sessions on disk");
        }
    }
}

/// Long-polls the control plane and applies every verified newer snapshot; writes the known
/// sessions to disk every few seconds. Runs until the gateway is dropped.
pub(crate) fn spawn(gw: &Arc<Gateway>) -> Vec<tokio::task::JoinHandle<()>> {
    let weak = Arc::downgrade(gw);
    let poller = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(gw) = weak.upgrade() else { break };
            let Some(feed) = gw.feed.as_ref() else { break };
            let have = gw.snapshot.load().version;
            let tenant = gw.store.tenant_id().to_owned();
            let node = gw.settings.node_id.clone();
            let result = feed.fetch(&tenant, &node, have, 25).await;
            match result {
                Ok(Fetched::New(v)) => {
                    match gw.install(&v) {
                        Ok(()) => {
                            feed.save(&v);
                            feed.problem(None);
                            tracing::info!(
                                version = v.body.version,
                                policy_version = v.body.policy_version,
                                "applied snapshot"
                            );
                        }
                        Err(e) => {
                            feed.problem(Some(format!("snapshot {} refused: {e}", v.body.version)))
                        }
                    }
                    backoff = Duration::from_millis(500);
                }
                Ok(Fetched::Unchanged) => {
                    feed.problem(None);
                    backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    feed.problem(Some(e));
                    drop(gw);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    let weak = Arc::downgrade(gw);
    let persister = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { break };
            let Some(feed) = gw.feed.as_ref() else { break };
            feed.persist_sessions();
        }
    });
    let mut tasks = vec![poller, persister];
    if let Some(site) = gw.feed.as_ref().and_then(|f| f.settings.site.clone()) {
        tasks.push(spawn_load_reports(gw, site));
    }
    tasks
}

/// Reports this node's requests per second to the control plane every 2 s.
fn spawn_load_reports(gw: &Arc<Gateway>, site: String) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(gw);
    tokio::spawn(async move {
        let every = Duration::from_secs(2);
        let mut tick = tokio::time::interval(every);
        let mut last = (std::time::Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { break };
            let Some(feed) = gw.feed.as_ref() else { break };
            let now = (
                std::time::Instant::now(),
                gw.requests.load(Ordering::Relaxed),
            );
            let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
            let rps = now.1.saturating_sub(last.1) as f64 / secs;
            last = now;
            let url = format!(
                "{}/v1/load",
                feed.settings.control_url.trim_end_matches('/')
            );
            let body = serde_json::json!({
                "node": gw.settings.node_id, "site": site, "rps": rps,
            });
            let sent = feed
                .client
                .post(&url)
                .bearer_auth(&feed.settings.node_token)
                .json(&body)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "cannot report load");
            }
        }
    })
}

/// Snapshots for a process that does not run from them directly but mirrors them (the DR
/// gateway copies each one into its own local store): the same start-up rule, verification
/// and disk copy as a snapshot-fed gateway.
pub struct SnapshotFollower {
    feed: Feed,
    tenant: String,
    node: String,
}

impl SnapshotFollower {
    pub fn new(settings: FeedSettings, tenant: &str, node: &str) -> Result<Self, GatewayError> {
        Ok(Self {
            feed: Feed::new(settings)?,
            tenant: tenant.to_owned(),
            node: node.to_owned(),
        })
    }

    /// The newer of the disk copy and one fetch within `timeout`; an error when neither.
    pub async fn initial(&self, timeout: Duration) -> Result<Verified, GatewayError> {
        self.feed.initial(&self.tenant, &self.node, timeout).await
    }

    /// Long-polls from version `have` on and sends every verified newer snapshot (already kept
    /// on disk) to the returned channel, until the receiver is dropped.
    pub fn spawn(self, have: i64) -> tokio::sync::mpsc::Receiver<Verified> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut have = have;
            let mut backoff = Duration::from_millis(500);
            loop {
                match self
                    .feed
                    .fetch(&self.tenant, &self.node, Some(have), 25)
                    .await
                {
                    Ok(Fetched::New(v)) => {
                        self.feed.save(&v);
                        self.feed.problem(None);
                        have = v.body.version;
                        if tx.send(*v).await.is_err() {
                            return;
                        }
                        backoff = Duration::from_millis(500);
                    }
                    Ok(Fetched::Unchanged) => {
                        self.feed.problem(None);
                        backoff = Duration::from_millis(500);
                    }
                    Err(e) => {
                        self.feed.problem(Some(e));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}
