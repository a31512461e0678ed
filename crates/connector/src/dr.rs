//! Disaster-recovery (DR) mode in the connector: watching the signed DR trigger record, keeping
//! the last verified state across restarts, fetching the signed allowlist for the `controlled`
//! internet mode, and publishing the current conclusion on a watch channel for the proxy
//! (docs/CONTINUITY.md).
//!
//! The record's format, its checking and what to remember between lookups are `tsuzuku-dr`'s
//! pure core ([`tsuzuku_dr::memory::Memory::observe`]); the routing decision is the pure
//! [`crate::route`]; this module is the IO shell around them: DNS lookups on an interval, on
//! every network change ([`netwatch`]) and on [`DrWatcher::recheck_now`], the state file, HTTP
//! fetches of the allowlist and its cache.
//!
//! - A lookup that times out or fails (SERVFAIL, REFUSED, network down) changes nothing: the
//!   last verified state stands until its record expires.
//! - Every refused record and every refused allowlist is logged with its reason and shown by
//!   `tsuzuku connect status`.
//! - Leaving DR mode (`off`, withdrawn, expired) goes through [`Phase::Returning`] while normal
//!   site selection has no healthy site: critical apps stay on the DR gateway until a normal site
//!   answers its probes.
//! - The DR gateway and the critical app hosts ([`DrTargets`]) travel with the published state,
//!   so the proxy reads both, and the phase, from one snapshot; a new signed site list replaces
//!   them in a running connector ([`DrWatcher::set_targets`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tsuzuku_dr::lookup::{self, Answer, LookupError, Transport, TxtLookup};
use tsuzuku_dr::{DrMode, Member, Memory, TrustedKeys, statefile};

use crate::internet::fetch::{ListFetcher, ListSource};
use crate::internet::{self, HostSet, InvalidPattern, ListError, SignedList};
use crate::route::DrRouting;
use crate::select::{Health, Selection, human};
use crate::state::SiteState;

pub mod netwatch;
#[cfg(test)]
mod tests;

/// The customer's DR gateway: its host name (TLS name of forwarded requests) and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrGateway {
    pub host: String,
    pub endpoints: Vec<SocketAddr>,
}

/// Where critical apps go in DR mode: the DR gateway and the critical app hosts. Replaced as a
/// whole, never field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrTargets {
    pub gateway: DrGateway,
    /// The patterns as given.
    pub critical_hosts: Vec<String>,
    /// The same, parsed.
    pub critical: HostSet,
}

impl DrTargets {
    /// Checks the gateway has an address and every critical host is a valid pattern.
    pub fn new(gateway: DrGateway, critical_hosts: Vec<String>) -> Result<Self, DrError> {
        if gateway.endpoints.is_empty() {
            return Err(DrError::NoGatewayAddress(gateway.host));
        }
        let critical = HostSet::parse(&critical_hosts).map_err(DrError::Critical)?;
        Ok(Self {
            gateway,
            critical_hosts,
            critical,
        })
    }
}

impl fmt::Display for DrTargets {
    /// `DR gateway dr.example.com at 10.0.0.5:443; critical apps: a.example.com, b.example.com`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self
            .gateway
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        write!(
            f,
            "DR gateway {} at {}; critical apps: {}",
            self.gateway.host,
            addrs.join(", "),
            if self.critical_hosts.is_empty() {
                "none".to_owned()
            } else {
                self.critical_hosts.join(", ")
            }
        )
    }
}

/// What the connector needs for DR mode.
#[derive(Clone, Debug)]
pub struct DrConfig {
    /// The TXT record's name, e.g. `_tsuzuku-dr.example.com`.
    pub record_name: String,
    /// How DNS is asked (system resolver, UDP/TCP, DNS over TLS or HTTPS).
    pub transport: Transport,
    /// The DR public keys records (and allowlists) must be signed with.
    pub trusted: TrustedKeys,
    /// How often the record is looked up. Default 30 s.
    pub interval: Duration,
    /// Time limit of one lookup. Default 5 s (at most the interval).
    pub lookup_timeout: Duration,
    /// Where the last verified state is kept across restarts.
    pub state_file: Option<PathBuf>,
    /// This device and its user's groups (drills name them).
    pub member: Member,
    pub gateway: DrGateway,
    /// App hosts that stay reachable in DR mode, through the DR gateway (patterns such as
    /// `app.example.com` or `*.crm.example.com`).
    pub critical_hosts: Vec<String>,
    /// The customer's own allowlist entries for the `controlled` mode.
    pub allow: Vec<String>,
    /// Whether the record is also looked up on every change of the host's addresses and
    /// routes ([`netwatch`]). Default true.
    pub watch_network: bool,
    /// Where the signed allowlist is fetched: an HTTP(S) URL or an object in an S3-compatible
    /// bucket ([`ListSource`]).
    pub allowlist_source: Option<ListSource>,
    /// How often the signed allowlist is fetched again. Default 15 min.
    pub allowlist_refresh: Duration,
    /// Where the last verified allowlist is cached.
    pub allowlist_cache: Option<PathBuf>,
}

impl DrConfig {
    /// A configuration with the documented defaults.
    pub fn new(
        record_name: impl Into<String>,
        transport: Transport,
        trusted: TrustedKeys,
        gateway: DrGateway,
    ) -> Self {
        Self {
            record_name: record_name.into(),
            transport,
            trusted,
            interval: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(5),
            state_file: None,
            member: Member::default(),
            gateway,
            critical_hosts: Vec::new(),
            allow: Vec::new(),
            watch_network: true,
            allowlist_source: None,
            allowlist_refresh: Duration::from_secs(15 * 60),
            allowlist_cache: None,
        }
    }
}

/// DR settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrError {
    #[error("no DR record name: give the TXT record's name, such as _tsuzuku-dr.example.com")]
    NoRecordName,
    #[error(
        "no trusted DR key: give the DR public key (dr-public-key.pem) records are signed with"
    )]
    NoKeys,
    #[error("the DR gateway {0} has no address: give HOST@ADDR[,ADDR...]")]
    NoGatewayAddress(String),
    #[error("DR setting {field} must be {expected}")]
    Setting {
        field: &'static str,
        expected: &'static str,
    },
    #[error("critical app host: {0}")]
    Critical(#[source] InvalidPattern),
    #[error("allowlist entry: {0}")]
    Allow(#[source] InvalidPattern),
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// Where the connector stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Normal,
    /// DR mode, with the record's terms.
    Active(DrMode),
    /// DR mode ended, but normal site selection has no healthy site yet.
    Returning,
}

impl Phase {
    pub fn routing(&self) -> DrRouting {
        match self {
            Phase::Normal => DrRouting::Normal,
            Phase::Active(m) => DrRouting::Active(m.internet),
            Phase::Returning => DrRouting::Returning,
        }
    }

    fn same_kind(&self, other: &Phase) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// The next phase: DR mode while the record says so; after it, returning until normal site
/// selection has a healthy site. Pure.
pub fn next_phase(prev: &Phase, dr: Option<DrMode>, normal_healthy: bool) -> Phase {
    match (dr, prev) {
        (Some(m), _) => Phase::Active(m),
        (None, Phase::Active(_) | Phase::Returning) if !normal_healthy => Phase::Returning,
        (None, _) => Phase::Normal,
    }
}

/// Whether normal site selection has a site in use that answers its probes. Pure.
pub fn normal_site_healthy(selection: &Selection) -> bool {
    selection
        .site
        .as_deref()
        .and_then(|s| selection.site_view(s))
        .is_some_and(|v| matches!(v.health, Health::Healthy { .. }))
}

/// The outcome of the last lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCheck {
    /// Unix seconds.
    pub at: i64,
    /// Whether DNS answered (with records or that there are none).
    pub answered: bool,
    /// What was found and concluded, in words.
    pub outcome: String,
    /// Records refused at this lookup, with their reasons.
    pub rejections: Vec<String>,
}

/// What is known about the signed allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListInfo {
    /// `t` of the list in use.
    pub issued_at: Option<i64>,
    /// Patterns from the signed list.
    pub patterns: usize,
    /// When it was last fetched successfully (unix seconds).
    pub fetched_at: Option<i64>,
    /// The last fetch or verification problem (cleared by a good fetch).
    pub last_error: Option<String>,
}

/// The published DR state.
#[derive(Clone, Debug)]
pub struct DrStatus {
    pub phase: Phase,
    /// When the current phase began (unix seconds).
    pub since: i64,
    /// The conclusion from the record, in words.
    pub conclusion: String,
    pub last_check: Option<LastCheck>,
    /// The state file's problem at start-up, if any.
    pub state_file_error: Option<String>,
    /// The allowlist in force in `controlled` mode: the customer's entries and the signed list.
    pub allowlist: Arc<HostSet>,
    pub list: ListInfo,
    /// Where the record is looked up, for display.
    pub record_name: String,
    pub transport: String,
    pub interval: Duration,
    /// Where critical apps go in DR mode.
    pub targets: Arc<DrTargets>,
}

impl DrStatus {
    pub fn active(&self) -> bool {
        matches!(self.phase, Phase::Active(_))
    }

    pub fn drill(&self) -> bool {
        matches!(self.phase, Phase::Active(m) if m.drill)
    }
}

fn show_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

impl fmt::Display for DrStatus {
    /// The DR part of `tsuzuku connect status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.phase {
            Phase::Active(m) => writeln!(
                f,
                "disaster recovery: ACTIVE{} since {}, internet {} until {}",
                if m.drill { " (drill)" } else { "" },
                show_time(self.since),
                m.internet,
                show_time(m.until)
            )?,
            Phase::Returning => writeln!(
                f,
                "disaster recovery: RETURNING since {}: DR mode ended; critical apps stay on the DR gateway until a normal site is healthy",
                show_time(self.since)
            )?,
            Phase::Normal => writeln!(
                f,
                "disaster recovery: not active (since {})",
                show_time(self.since)
            )?,
        }
        writeln!(f, "  conclusion: {}", self.conclusion)?;
        writeln!(f, "  {}", self.targets)?;
        writeln!(
            f,
            "  record: {} via {}, checked every {}",
            self.record_name,
            self.transport,
            human(self.interval)
        )?;
        match &self.last_check {
            Some(c) => {
                writeln!(f, "  last check {}: {}", show_time(c.at), c.outcome)?;
                for r in &c.rejections {
                    writeln!(f, "    refused: {r}")?;
                }
            }
            None => writeln!(f, "  last check: none yet")?,
        }
        if let Some(e) = &self.state_file_error {
            writeln!(f, "  state file: {e}")?;
        }
        write!(f, "  allowlist: {} patterns", self.allowlist.len())?;
        if let Some(t) = self.list.issued_at {
            write!(
                f,
                " ({} from the signed list issued {}",
                self.list.patterns,
                show_time(t)
            )?;
            if let Some(at) = self.list.fetched_at {
                write!(f, ", fetched {}", show_time(at))?;
            }
            write!(f, ")")?;
        }
        writeln!(f)?;
        if let Some(e) = &self.list.last_error {
            writeln!(f, "    allowlist problem: {e}")?;
        }
        Ok(())
    }
}

/// What the proxy needs to route in DR mode: the published state, with the phase, the
/// allowlist and the [`DrTargets`] in one snapshot.
#[derive(Clone, Debug)]
pub struct DrLink {
    pub status: watch::Receiver<Arc<DrStatus>>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running DR watcher (and allowlist fetcher). Dropping it stops them.
pub struct DrWatcher {
    tx: Arc<watch::Sender<Arc<DrStatus>>>,
    recheck: Arc<Notify>,
    link: DrLink,
    _tasks: Vec<AbortOnDrop>,
}

impl fmt::Debug for DrWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrWatcher").finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl DrWatcher {
    /// Checks the settings, loads the remembered state (so a restarted connector in a disaster
    /// is in DR mode at once), and starts looking the record up and fetching the allowlist.
    pub fn start(config: DrConfig, state: Arc<SiteState>) -> Result<Self, DrError> {
        if config.record_name.trim().is_empty() {
            return Err(DrError::NoRecordName);
        }
        if config.trusted.is_empty() {
            return Err(DrError::NoKeys);
        }
        if config.interval.is_zero() {
            return Err(DrError::Setting {
                field: "interval",
                expected: "more than zero",
            });
        }
        if config.lookup_timeout.is_zero() {
            return Err(DrError::Setting {
                field: "lookup_timeout",
                expected: "more than zero",
            });
        }
        if config.allowlist_refresh.is_zero() {
            return Err(DrError::Setting {
                field: "allowlist_refresh",
                expected: "more than zero",
            });
        }
        let targets = DrTargets::new(config.gateway.clone(), config.critical_hosts.clone())?;
        let own = HostSet::parse(&config.allow).map_err(DrError::Allow)?;
        let lookup = TxtLookup::new(
            &config.transport,
            config.lookup_timeout.min(config.interval),
        )?;

        let now = now_unix();
        let (memory, state_file_error) = match &config.state_file {
            Some(p) => match statefile::load(p, &config.trusted) {
                Ok(m) => (m.unwrap_or_default(), None),
                Err(e) => {
                    tracing::error!(error = %e, "DR state file refused; starting without remembered DR state");
                    (Memory::default(), Some(e.to_string()))
                }
            },
            None => (Memory::default(), None),
        };
        let conclusion = memory.conclude(now, &config.member);
        let phase = next_phase(&Phase::Normal, conclusion.dr, false);
        if let Phase::Active(m) = phase {
            tracing::warn!(internet = %m.internet, drill = m.drill, "starting in DR mode from the remembered DR record");
        }

        // The signed allowlist held from an earlier run.
        let mut list_info = ListInfo::default();
        let mut held: Option<SignedList> = None;
        if let Some(p) = &config.allowlist_cache {
            match read_cache(p, &config.trusted) {
                Ok(Some(l)) => {
                    list_info.issued_at = Some(l.issued_at);
                    list_info.patterns = l.hosts.len();
                    held = Some(l);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cached DR allowlist refused");
                    list_info.last_error = Some(format!("cached list {}: {e}", p.display()));
                }
            }
        }
        let allowlist = Arc::new(match &held {
            Some(l) => own.union(&l.hosts),
            None => own.clone(),
        });

        let status = DrStatus {
            phase,
            since: now,
            conclusion: conclusion.to_string(),
            last_check: None,
            state_file_error,
            allowlist,
            list: list_info,
            record_name: config.record_name.clone(),
            transport: config.transport.to_string(),
            interval: config.interval,
            targets: Arc::new(targets),
        };
        let (tx, rx) = watch::channel(Arc::new(status));
        let tx = Arc::new(tx);
        let recheck = Arc::new(Notify::new());
        let fetch_now = Arc::new(Notify::new());
        let config = Arc::new(config);
        let mut tasks = vec![AbortOnDrop(tokio::spawn(
            Watch {
                config: config.clone(),
                lookup,
                memory,
                tx: tx.clone(),
                state,
                fetch_now: fetch_now.clone(),
            }
            .run(recheck.clone()),
        ))];
        if config.watch_network {
            let recheck = recheck.clone();
            match netwatch::spawn(move |change| {
                tracing::info!(%change, "network change: looking up DR record");
                recheck.notify_one();
            }) {
                Ok(task) => tasks.push(AbortOnDrop(task)),
                Err(e) => tracing::warn!(error = %e, "network changes are not watched"),
            }
        }
        if let Some(source) = config.allowlist_source.clone() {
            match ListFetcher::new(
                source,
                config.trusted.clone(),
                held,
                Duration::from_secs(10),
            ) {
                Ok(fetcher) => tasks.push(AbortOnDrop(tokio::spawn(
                    Fetch {
                        config: config.clone(),
                        fetcher,
                        own,
                        tx: tx.clone(),
                    }
                    .run(fetch_now),
                ))),
                Err(e) => tracing::error!(error = %e, "the DR allowlist is not fetched"),
            }
        }
        Ok(Self {
            tx,
            recheck,
            link: DrLink { status: rx },
            _tasks: tasks,
        })
    }

    /// The current DR state.
    pub fn status(&self) -> Arc<DrStatus> {
        self.tx.borrow().clone()
    }

    /// A receiver woken when the DR state changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DrStatus>> {
        self.tx.subscribe()
    }

    /// Looks the record up now (after a network change) instead of at the next interval.
    pub fn recheck_now(&self) {
        self.recheck.notify_one();
    }

    /// Replaces the DR gateway and the critical app hosts (from a new signed site list) in one
    /// step: the next request is routed with the new ones, and tunnels whose route changes
    /// with them are closed. Returns whether anything changed; an unusable gateway or host
    /// pattern changes nothing.
    pub fn set_targets(
        &self,
        gateway: DrGateway,
        critical_hosts: Vec<String>,
    ) -> Result<bool, DrError> {
        let targets = Arc::new(DrTargets::new(gateway, critical_hosts)?);
        let changed = self.tx.send_if_modified(|status| {
            if *status.targets == *targets {
                return false;
            }
            let mut s = (**status).clone();
            s.targets = targets.clone();
            *status = Arc::new(s);
            true
        });
        if changed {
            tracing::info!(targets = %targets, "DR gateway and critical apps updated");
        }
        Ok(changed)
    }

    /// What the proxy routes with.
    pub fn link(&self) -> DrLink {
        self.link.clone()
    }
}

/// The lookup loop's state.
struct Watch {
    config: Arc<DrConfig>,
    lookup: TxtLookup,
    memory: Memory,
    tx: Arc<watch::Sender<Arc<DrStatus>>>,
    state: Arc<SiteState>,
    fetch_now: Arc<Notify>,
}

/// How often the phase is reconsidered between lookups (a record's expiry, a normal site
/// becoming healthy while returning).
const RECONSIDER_EVERY: Duration = Duration::from_millis(500);

impl Watch {
    async fn run(mut self, recheck: Arc<Notify>) {
        let mut lookups = tokio::time::interval(self.config.interval);
        lookups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconsider = tokio::time::interval(RECONSIDER_EVERY);
        reconsider.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = lookups.tick() => self.check().await,
                () = recheck.notified() => {
                    self.check().await;
                    lookups.reset();
                }
                _ = reconsider.tick() => {
                    let now = now_unix();
                    let c = self.memory.conclude(now, &self.config.member);
                    self.apply(c.dr, c.to_string(), now, None);
                }
            }
        }
    }

    async fn check(&mut self) {
        let name = &self.config.record_name;
        let result = self.lookup.lookup(name).await;
        let now = now_unix();
        let step = self.memory.observe(
            lookup::observation(&result),
            &self.config.trusted,
            now,
            &self.config.member,
        );
        for r in &step.rejections {
            tracing::warn!(record = %name, reason = %r, "DR record refused; the last verified state stands");
        }
        let outcome = match &result {
            Ok(Answer::Records(r)) => format!(
                "{} record(s); {} ({})",
                r.len(),
                step.conclusion,
                if step.rejections.is_empty() {
                    "verified"
                } else if step.conclusion.record.is_some() {
                    "some refused"
                } else {
                    "refused"
                }
            ),
            Ok(Answer::Withdrawn { nxdomain }) => format!(
                "no record ({}): {}",
                if *nxdomain {
                    "NXDOMAIN"
                } else {
                    "no TXT record"
                },
                step.conclusion
            ),
            Err(e) => {
                tracing::warn!(record = %name, error = %e, "DR record lookup failed; the last verified state stands");
                format!(
                    "lookup failed ({e}); the last verified state stands: {}",
                    step.conclusion
                )
            }
        };
        if step.changed
            && let Some(p) = &self.config.state_file
            && let Err(e) = statefile::save(p, &self.memory)
        {
            tracing::error!(error = %e, "cannot save the DR state");
        }
        let check = LastCheck {
            at: now,
            answered: result.is_ok(),
            outcome,
            rejections: step.rejections.iter().map(ToString::to_string).collect(),
        };
        self.apply(
            step.conclusion.dr,
            step.conclusion.to_string(),
            now,
            Some(check),
        );
    }

    /// Publishes the phase that follows from the conclusion and normal site health.
    fn apply(&self, dr: Option<DrMode>, conclusion: String, now: i64, check: Option<LastCheck>) {
        let healthy = normal_site_healthy(&self.state.selection());
        let mut entered_controlled = false;
        self.tx.send_if_modified(|status| {
            let next = next_phase(&status.phase, dr, healthy);
            let changed_phase = next != status.phase;
            if !changed_phase && check.is_none() && status.conclusion == conclusion {
                return false;
            }
            let mut s = (**status).clone();
            if changed_phase {
                log_change(&s.phase, &next);
                if !next.same_kind(&s.phase) {
                    s.since = now;
                }
                entered_controlled = matches!(next, Phase::Active(m) if m.internet == tsuzuku_dr::InternetMode::Controlled)
                    && !matches!(s.phase, Phase::Active(_));
                s.phase = next;
            }
            s.conclusion = conclusion;
            if let Some(c) = check {
                s.last_check = Some(c);
            }
            *status = Arc::new(s);
            true
        });
        if entered_controlled {
            self.fetch_now.notify_one();
        }
    }
}

fn log_change(from: &Phase, to: &Phase) {
    match to {
        Phase::Active(m) => tracing::warn!(
            internet = %m.internet,
            drill = m.drill,
            until = %show_time(m.until),
            "DR mode active: critical apps go to the DR gateway"
        ),
        Phase::Returning => tracing::warn!(
            "DR mode ended; critical apps stay on the DR gateway until a normal site is healthy"
        ),
        Phase::Normal => {
            if !matches!(from, Phase::Normal) {
                tracing::warn!("DR mode over: back to normal sites");
            }
        }
    }
}

/// The allowlist fetcher's state.
struct Fetch {
    config: Arc<DrConfig>,
    fetcher: ListFetcher,
    own: HostSet,
    tx: Arc<watch::Sender<Arc<DrStatus>>>,
}

/// After a failed fetch, the next try comes this soon (or at the refresh interval if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl Fetch {
    async fn run(mut self, fetch_now: Arc<Notify>) {
        loop {
            let wait = match self.fetcher.refresh().await {
                Ok(fetched) => {
                    self.publish(fetched);
                    self.config.allowlist_refresh
                }
                Err(e) => {
                    // The fetcher still holds the last good list; nothing published changes
                    // but the problem.
                    tracing::warn!(error = %e, "DR allowlist refused or not fetched; the last good list stays");
                    let msg = e.to_string();
                    self.tx.send_modify(|s| {
                        let mut n = (**s).clone();
                        n.list.last_error = Some(msg);
                        *s = Arc::new(n);
                    });
                    self.config.allowlist_refresh.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = fetch_now.notified() => {}
            }
        }
    }

    fn publish(&self, fetched: internet::fetch::Fetched) {
        if let Some(p) = &self.config.allowlist_cache
            && let Err(e) = write_atomically(p, &fetched.bytes)
        {
            tracing::warn!(file = %p.display(), error = %e, "cannot cache the DR allowlist");
        }
        let list = fetched.list;
        let allowlist = Arc::new(self.own.union(&list.hosts));
        let info = ListInfo {
            issued_at: Some(list.issued_at),
            patterns: list.hosts.len(),
            fetched_at: Some(now_unix()),
            last_error: None,
        };
        tracing::info!(
            patterns = info.patterns,
            issued_at = list.issued_at,
            from = %self.fetcher.source(),
            "DR allowlist fetched and verified"
        );
        self.tx.send_modify(|s| {
            let mut n = (**s).clone();
            n.allowlist = allowlist;
            n.list = info;
            *s = Arc::new(n);
        });
    }
}

/// Reads and verifies the cached allowlist; `Ok(None)` when there is none.
fn read_cache(path: &Path, trusted: &TrustedKeys) -> Result<Option<SignedList>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
        Ok(m) if m.len() > internet::MAX_LIST_BYTES as u64 => {
            return Err(ListError::TooLarge {
                len: usize::try_from(m.len()).unwrap_or(usize::MAX),
            }
            .to_string());
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    internet::verify_list(&bytes, trusted)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Writes `<path>.tmp`, fsyncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
