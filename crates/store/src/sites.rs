//! Sites: which database server the store talks to, and failover between servers.
//!
//! A PostgreSQL store is given one server per site (`open_sites`). sqlx cannot fail over
//! between hosts itself (no multi-host URLs, no `target_session_attrs`), so this module does:
//!
//! - A monitor task probes every server every [`SiteOptions::check_interval`] (and at once
//!   when a query fails with a connection error or a read-only refusal) over one probe
//!   connection per server: `pg_is_in_recovery()`, the primary's timeline, the standby's
//!   replay position and last replayed commit time.
//! - [`choose`] (pure) picks the server: a writable primary if one answers (the current one if
//!   it still is; among several, the highest timeline — the most recently promoted), else the
//!   standby that has replayed the most, else none.
//! - The store's one connection pool is pointed at the chosen server
//!   (`Pool::set_connect_options`): new connections, including the retries of queries that are
//!   waiting for a connection right now, go there; connections opened before the switch are
//!   discarded when next taken from the pool.
//! - [`StoreRole`] reports the outcome for status pages and `/readyz`. Writes refused by a
//!   standby (SQLSTATE `25006`) become [`StoreError::ReadOnly`] whose message says since when
//!   the store is in read-only failover and what to do.
//!
//! Promotion ([`Sites::promote`]) follows one fencing rule: it is refused while any writable
//! primary answers, so this node never creates a second writable primary next to a live one.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use tokio::sync::Notify;

use crate::error::{self, StoreError};

/// Tuning of a PostgreSQL store's connections and failover checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteOptions {
    /// How often every server is probed (also probed at once after a connection error).
    pub check_interval: Duration,
    /// How long one probe (connect + query) may take before the server counts as unreachable.
    pub probe_timeout: Duration,
    /// How long a query waits for a pooled connection (connection attempts to a server that
    /// refuses are retried within this time, and follow a switch to another server).
    pub acquire_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Open even when no server answers: the store starts [`StoreRole::Unavailable`] (every
    /// query fails with [`StoreError::Unavailable`]) and picks a server up as soon as one
    /// answers. For gateways that must come up from their snapshot while the database is
    /// down; such an opener never migrates the schema.
    pub start_unavailable: bool,
    /// Promote the most advanced standby by itself when no writable primary has answered for
    /// a while — only under the fencing rule of [`auto_promote_verdict`]. `None` (the default):
    /// promotion is an operator's decision (`tsuzuku site promote`).
    pub auto_promote: Option<AutoPromote>,
}

/// Automatic promotion settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPromote {
    /// How long no writable primary must have answered.
    pub after: Duration,
    /// A host:port in a third place (e.g. the other site's control plane) that must answer a
    /// TCP connection: a process that cannot reach it may be the one cut off, and must not
    /// promote.
    pub witness: Option<String>,
}

/// What the fencing rule says about promoting now (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteVerdict {
    /// Promote the standby now.
    Promote,
    /// Not yet, or not allowed; the reason is logged.
    Hold(String),
}

/// The fencing rule for automatic promotion, a function of what was observed:
/// 1. no server has answered as a writable primary for at least `after`;
/// 2. the standby to promote is not streaming WAL from a primary (if it still were, a primary
///    is alive and only this process is cut off from it);
/// 3. when a witness is configured, it answers (this process is not the isolated one).
///
/// Together with `promote`'s own check (refused while any configured server answers as a
/// writable primary), this keeps two writable primaries from existing unless the old primary
/// is cut off from its own standby, this process and the witness at once.
pub fn auto_promote_verdict(
    cfg: &AutoPromote,
    no_primary_for: Option<Duration>,
    standby_streaming: Option<bool>,
    witness_answers: Option<bool>,
) -> PromoteVerdict {
    let Some(gone) = no_primary_for else {
        return PromoteVerdict::Hold("a writable primary answers".into());
    };
    if gone < cfg.after {
        return PromoteVerdict::Hold(format!(
            "no primary for {} ms of the {} ms required",
            gone.as_millis(),
            cfg.after.as_millis()
        ));
    }
    match standby_streaming {
        None => return PromoteVerdict::Hold("no standby answers".into()),
        Some(true) => {
            return PromoteVerdict::Hold(
                "the standby still streams WAL from a primary: the primary is alive, only this process cannot reach it".into(),
            );
        }
        Some(false) => {}
    }
    if cfg.witness.is_some() && witness_answers != Some(true) {
        return PromoteVerdict::Hold(
            "the fencing witness does not answer: this process may be the one cut off".into(),
        );
    }
    PromoteVerdict::Promote
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            check_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(5),
            max_connections: crate::MAX_CONNECTIONS,
            start_unavailable: false,
            auto_promote: None,
        }
    }
}

/// What the store can do right now, and with which server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreRole {
    /// Reads and writes go to this writable server (or the embedded SQLite file).
    Primary {
        /// The server's URL, password redacted.
        server: String,
    },
    /// No writable primary answers: reads are served by this standby, writes are refused with
    /// [`StoreError::ReadOnly`] until a standby is promoted or the primary returns.
    ReadOnlyStandby {
        /// The standby's URL, password redacted.
        server: String,
        /// When this process first found no writable primary; if it never saw one, the time of
        /// the last transaction the standby replayed from it (or when it started looking).
        since: SystemTime,
    },
    /// No configured server answers.
    Unavailable {
        /// What each server answered.
        reason: String,
    },
}

impl StoreRole {
    /// True if writes can succeed.
    pub fn is_writable(&self) -> bool {
        matches!(self, StoreRole::Primary { .. })
    }

    /// True if reads can succeed.
    pub fn is_readable(&self) -> bool {
        !matches!(self, StoreRole::Unavailable { .. })
    }
}

impl fmt::Display for StoreRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreRole::Primary { server } => write!(f, "primary ({server})"),
            StoreRole::ReadOnlyStandby { server, since } => {
                write!(f, "read-only standby ({server}) since {}", rfc3339(*since))
            }
            StoreRole::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

/// One configured server.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) shown: String,
    pub(crate) options: AnyConnectOptions,
}

/// What one probe of one server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) in_recovery: bool,
    /// The primary's timeline (from its current WAL file name); `None` on standbys.
    pub(crate) timeline: Option<u32>,
    /// Bytes of WAL replayed (standbys); `None` on primaries.
    pub(crate) replay_lsn: Option<i64>,
    /// Commit time of the last transaction replayed (standbys).
    pub(crate) replay_at: Option<SystemTime>,
    /// A standby whose WAL receiver streams from a primary right now.
    pub(crate) streaming: bool,
}

/// The server to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Primary(usize),
    Standby(usize),
    None,
}

/// Picks the server to use from the probes (`None` = unreachable), preferring `current` among
/// equals so the store does not flap between servers.
pub(crate) fn choose(current: Option<usize>, probes: &[Option<Probe>]) -> Choice {
    let reachable = || {
        probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
    };
    let primaries: Vec<(usize, &Probe)> = reachable().filter(|(_, p)| !p.in_recovery).collect();
    if let Some(i) = current.filter(|c| primaries.iter().any(|(i, _)| i == c)) {
        return Choice::Primary(i);
    }
    // Several primaries: the most recently promoted (highest timeline) is the real one; an
    // old primary restarted after a failover is on an older timeline. Ties: list order.
    if let Some((i, _)) = primaries
        .iter()
        .min_by_key(|(i, p)| (std::cmp::Reverse(p.timeline.unwrap_or(0)), *i))
    {
        return Choice::Primary(*i);
    }
    let standbys: Vec<(usize, &Probe)> = reachable().filter(|(_, p)| p.in_recovery).collect();
    let best = standbys.iter().map(|(_, p)| p.replay_lsn).max().flatten();
    let most_advanced = |i: &usize| standbys.iter().any(|(j, p)| j == i && p.replay_lsn == best);
    if let Some(i) = current.filter(most_advanced) {
        return Choice::Standby(i);
    }
    standbys
        .iter()
        .find(|(i, _)| most_advanced(i))
        .map_or(Choice::None, |(i, _)| Choice::Standby(*i))
}

/// The probe: role, timeline (primary), replay position and time (standby). Only functions
/// any login may call; the CASE keeps `pg_walfile_name` (refused during recovery) off standbys.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery() AS in_recovery,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS walfile,
    CAST(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0') AS BIGINT) AS replay_lsn,
    CAST(EXTRACT(EPOCH FROM pg_last_xact_replay_timestamp()) * 1000 AS BIGINT) AS replay_ms,
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS wal_status";

async fn probe_query(node: &Node, slot: &mut Option<AnyConnection>) -> Result<Probe, sqlx::Error> {
    let conn = match slot {
        Some(conn) => conn,
        None => slot.insert(AnyConnection::connect_with(&node.options).await?),
    };
    let row = sqlx::query(PROBE_SQL).fetch_one(&mut *conn).await?;
    let walfile: Option<String> = row.try_get("walfile")?;
    let replay_ms: Option<i64> = row.try_get("replay_ms")?;
    let wal_status: Option<String> = row.try_get("wal_status")?;
    Ok(Probe {
        streaming: wal_status.as_deref() == Some("streaming"),
        in_recovery: row.try_get("in_recovery")?,
        // A WAL file name starts with the timeline as 8 hex digits.
        timeline: walfile
            .as_deref()
            .and_then(|w| w.get(..8))
            .and_then(|t| u32::from_str_radix(t, 16).ok()),
        replay_lsn: row.try_get("replay_lsn")?,
        replay_at: replay_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    })
}

/// Probes one server over its probe connection (opened if needed, dropped on any failure).
async fn probe(
    node: &Node,
    slot: &mut Option<AnyConnection>,
    limit: Duration,
) -> Result<Probe, String> {
    let result = tokio::time::timeout(limit, probe_query(node, slot)).await;
    let outcome = match result {
        Ok(Ok(p)) => return Ok(p),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} ms", limit.as_millis()),
    };
    *slot = None;
    Err(outcome)
}

/// Probes every server at once.
async fn probe_all(
    nodes: &[Node],
    slots: &mut [Option<AnyConnection>],
    limit: Duration,
) -> Vec<Result<Probe, String>> {
    futures_util::future::join_all(
        nodes
            .iter()
            .zip(slots.iter_mut())
            .map(|(node, slot)| probe(node, slot, limit)),
    )
    .await
}

fn summary(nodes: &[Node], results: &[Result<Probe, String>]) -> String {
    nodes
        .iter()
        .zip(results)
        .map(|(n, r)| match r {
            Ok(p) if p.in_recovery => format!("{}: standby", n.shown),
            Ok(_) => format!("{}: primary", n.shown),
            Err(e) => format!("{}: {e}", n.shown),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// When the pool was last pointed at another server. Connections opened before that (plus a
/// grace period for connection attempts that were under way) are discarded when next taken
/// from the pool, so no query keeps talking to the server the store moved away from.
#[derive(Debug)]
pub(crate) struct SwitchClock {
    at: Mutex<Option<Instant>>,
    grace: Duration,
}

impl SwitchClock {
    pub(crate) fn new(grace: Duration) -> SwitchClock {
        SwitchClock {
            at: Mutex::new(None),
            grace,
        }
    }

    fn mark(&self) {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// True if a connection of this age was opened before the last switch was complete.
    pub(crate) fn predates_switch(&self, age: Duration) -> bool {
        let Some(at) = *self.at.lock().unwrap_or_else(PoisonError::into_inner) else {
            return false;
        };
        match Instant::now().checked_sub(age) {
            Some(opened) => opened < at + self.grace,
            None => true,
        }
    }
}

/// Pool settings for PostgreSQL servers.
pub(crate) fn pg_pool_options(options: &SiteOptions, clock: Arc<SwitchClock>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .before_acquire(move |_conn, meta| {
            let keep = !clock.predates_switch(meta.age);
            Box::pin(async move { Ok(keep) })
        })
}

enum Kind {
    /// SQLite: one file, always the primary.
    Embedded,
    /// PostgreSQL: one server per site.
    Servers {
        nodes: Vec<Node>,
        options: SiteOptions,
        clock: Arc<SwitchClock>,
    },
}

struct State {
    active: Option<usize>,
    role: StoreRole,
    /// Set while no writable primary answers.
    no_primary_since: Option<SystemTime>,
    /// A writable primary answered at least once since start.
    seen_primary: bool,
    split_brain_reported: bool,
    closed: bool,
    /// Monotonic: since when no writable primary answers (for automatic promotion).
    no_primary_at: Option<Instant>,
    /// Whether the standby in use streams WAL from a primary.
    standby_streaming: Option<bool>,
    /// The last reason automatic promotion held back, logged once.
    auto_hold: Option<String>,
}

/// The servers of one store, the one in use, and the monitor that keeps choosing.
pub(crate) struct Sites {
    kind: Kind,
    state: RwLock<State>,
    wake: Arc<Notify>,
    monitor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// An automatic promotion is under way.
    promoting: std::sync::atomic::AtomicBool,
    /// Claims while read-only (`once.rs`).
    claims: crate::once::Claims,
}

impl fmt::Debug for Sites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sites").field("role", &self.role()).finish()
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        if let Some(task) = self
            .monitor
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Smallest pause between two checks, however often errors ask for one.
const MIN_CHECK_GAP: Duration = Duration::from_millis(100);

impl Sites {
    /// An embedded SQLite file: always the primary, nothing to monitor.
    pub(crate) fn embedded(shown: String) -> Sites {
        Sites {
            state: RwLock::new(State {
                active: Some(0),
                role: StoreRole::Primary { server: shown },
                no_primary_since: None,
                seen_primary: true,
                split_brain_reported: false,
                closed: false,
                no_primary_at: None,
                standby_streaming: None,
                auto_hold: None,
            }),
            kind: Kind::Embedded,
            wake: Arc::new(Notify::new()),
            monitor: Mutex::new(None),
            promoting: std::sync::atomic::AtomicBool::new(false),
            claims: crate::once::Claims::default(),
        }
    }

    /// PostgreSQL servers, not yet probed.
    pub(crate) fn servers(
        nodes: Vec<Node>,
        options: SiteOptions,
        clock: Arc<SwitchClock>,
    ) -> Sites {
        Sites {
            kind: Kind::Servers {
                nodes,
                options,
                clock,
            },
            state: RwLock::new(State {
                active: None,
                role: StoreRole::Unavailable {
                    reason: "not checked yet".into(),
                },
                no_primary_since: None,
                seen_primary: false,
                split_brain_reported: false,
                closed: false,
                no_primary_at: None,
                standby_streaming: None,
                auto_hold: None,
            }),
            wake: Arc::new(Notify::new()),
            monitor: Mutex::new(None),
            promoting: std::sync::atomic::AtomicBool::new(false),
            claims: crate::once::Claims::default(),
        }
    }

    /// The connection holding this process's read-only claims.
    pub(crate) fn claims(&self) -> &crate::once::Claims {
        &self.claims
    }

    pub(crate) fn role(&self) -> StoreRole {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .role
            .clone()
    }

    /// Probes every server once with fresh connections and applies the result; returns the
    /// probe connections for the monitor and, if nothing answered, why.
    pub(crate) async fn first_check(
        &self,
        pool_for: impl FnOnce(&AnyConnectOptions) -> AnyPool,
    ) -> Result<(AnyPool, Vec<Option<AnyConnection>>), StoreError> {
        let Kind::Servers { nodes, options, .. } = &self.kind else {
            return Err(StoreError::Invalid(
                "an embedded store has no servers to check".into(),
            ));
        };
        let mut slots: Vec<Option<AnyConnection>> = nodes.iter().map(|_| None).collect();
        let results = probe_all(nodes, &mut slots, options.probe_timeout).await;
        let probes: Vec<Option<Probe>> = results.iter().map(|r| r.as_ref().ok().cloned()).collect();
        let first = match choose(None, &probes) {
            Choice::Primary(i) | Choice::Standby(i) => i,
            Choice::None if options.start_unavailable => 0,
            Choice::None => {
                return Err(StoreError::Unavailable(format!(
                    "none of the store's database servers answered ({}); check that they run and that the URLs are right",
                    summary(nodes, &results)
                )));
            }
        };
        let node = nodes
            .get(first)
            .ok_or_else(|| StoreError::Invalid(format!("server #{first} is not configured")))?;
        let pool = pool_for(&node.options);
        self.apply(&pool, &results);
        Ok((pool, slots))
    }

    /// Starts the monitor task (needs a tokio runtime).
    pub(crate) fn start_monitor(
        self: &Arc<Self>,
        pool: AnyPool,
        slots: Vec<Option<AnyConnection>>,
    ) {
        let Kind::Servers { options, .. } = &self.kind else {
            return;
        };
        let task = tokio::spawn(monitor(
            Arc::downgrade(self),
            pool,
            Arc::clone(&self.wake),
            slots,
            options.check_interval,
        ));
        if let Some(old) = self
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task)
        {
            old.abort();
        }
    }

    /// Stops monitoring (the store was closed).
    pub(crate) fn close(&self) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        st.closed = true;
        st.role = StoreRole::Unavailable {
            reason: "the store was closed".into(),
        };
        if let Some(task) = self
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Takes a round of probe results into use: picks the server, points the pool at it if it
    /// changed, and updates the role.
    fn apply(&self, pool: &AnyPool, results: &[Result<Probe, String>]) {
        let Kind::Servers { nodes, clock, .. } = &self.kind else {
            return;
        };
        let probes: Vec<Option<Probe>> = results.iter().map(|r| r.as_ref().ok().cloned()).collect();
        let shown = |i: usize| nodes.get(i).map_or_else(String::new, |n| n.shown.clone());
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if st.closed {
            return;
        }
        let now = SystemTime::now();
        let primaries: Vec<String> = probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| !p.in_recovery))
            .map(|(i, _)| shown(i))
            .collect();
        if primaries.len() > 1 {
            if !st.split_brain_reported {
                tracing::error!(
                    servers = %primaries.join(", "),
                    "more than one writable PostgreSQL primary answers; the store writes to the most recently promoted one only. \
                     Stop the other (it is an old primary) and rebuild it as a standby"
                );
                st.split_brain_reported = true;
            }
        } else {
            st.split_brain_reported = false;
        }
        let choice = choose(st.active, &probes);
        match choice {
            Choice::Primary(_) => {
                st.no_primary_at = None;
                st.standby_streaming = None;
            }
            Choice::Standby(i) => {
                st.no_primary_at.get_or_insert_with(Instant::now);
                st.standby_streaming = probes.get(i).and_then(|p| p.as_ref()).map(|p| p.streaming);
            }
            Choice::None => {
                st.no_primary_at.get_or_insert_with(Instant::now);
                st.standby_streaming = None;
            }
        }
        let seen_primary = st.seen_primary;
        let (active, role) = match choice {
            Choice::Primary(i) => {
                st.no_primary_since = None;
                st.seen_primary = true;
                (Some(i), StoreRole::Primary { server: shown(i) })
            }
            Choice::Standby(i) => {
                let replayed = probes
                    .get(i)
                    .and_then(|p| p.as_ref())
                    .and_then(|p| p.replay_at);
                let since = *st.no_primary_since.get_or_insert_with(|| {
                    if seen_primary {
                        now
                    } else {
                        replayed.map_or(now, |r| r.min(now))
                    }
                });
                (
                    Some(i),
                    StoreRole::ReadOnlyStandby {
                        server: shown(i),
                        since,
                    },
                )
            }
            Choice::None => {
                st.no_primary_since.get_or_insert(now);
                (
                    st.active,
                    StoreRole::Unavailable {
                        reason: format!("no database server answers ({})", summary(nodes, results)),
                    },
                )
            }
        };
        if active != st.active
            && let Some(node) = active.and_then(|i| nodes.get(i))
        {
            pool.set_connect_options(node.options.clone());
            if st.active.is_some() {
                clock.mark();
            }
        }
        if role != st.role {
            match &role {
                StoreRole::Primary { server } => {
                    tracing::info!(%server, "store: reads and writes go to the primary");
                }
                StoreRole::ReadOnlyStandby { server, since } => tracing::warn!(
                    %server,
                    since = %rfc3339(*since),
                    "store: no writable primary answers; serving reads from the standby, refusing writes until a standby is promoted (`tsuzuku site promote`) or the primary returns"
                ),
                StoreRole::Unavailable { reason } => {
                    tracing::error!(%reason, "store: no database server answers");
                }
            }
        }
        st.active = active;
        st.role = role;
    }

    /// Classifies a driver error like [`error::db`], and also: asks the monitor for an
    /// immediate check after connection errors or a standby's refusal, and explains a
    /// standby's refusal (SQLSTATE 25006) with the failover state.
    pub(crate) fn classify(&self, what: &str, e: sqlx::Error) -> StoreError {
        let read_only = error::is_pg_read_only(&e);
        if read_only || error::is_connection_trouble(&e) {
            self.wake.notify_one();
        }
        if !read_only {
            return error::db(what, e);
        }
        let refusal = match &e {
            sqlx::Error::Database(d) => d.message().to_owned(),
            other => other.to_string(),
        };
        StoreError::ReadOnly(match self.role() {
            StoreRole::ReadOnlyStandby { server, since } => format!(
                "{what}: tsuzuku is in read-only failover since {} ({} ago): no writable primary answers, \
                 so the standby {server} serves reads and refuses changes ({refusal}). \
                 To accept changes again, promote the standby with `tsuzuku site promote` once the primary's site is known to be lost or fenced, \
                 or bring the primary back",
                rfc3339(since),
                ago(since),
            ),
            _ => format!(
                "{what}: the database server is a read-only standby and refused the change ({refusal}, SQLSTATE 25006); \
                 tsuzuku is checking again which server is the primary: retry shortly, and if no primary returns, \
                 promote a standby with `tsuzuku site promote`"
            ),
        })
    }

    /// Promotes the most advanced reachable standby (`pg_promote`), refusing while any
    /// writable primary answers (the fencing rule), and waits until the store writes to it.
    /// Applies the fencing rule ([`auto_promote_verdict`]) and, when it says so, promotes in
    /// the background (promotion waits for the monitor to see the new primary).
    async fn consider_promotion(self: &Arc<Self>, cfg: &AutoPromote) {
        let (gone, streaming) = {
            let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if st.closed || self.promoting.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            (st.no_primary_at.map(|t| t.elapsed()), st.standby_streaming)
        };
        if gone.is_none_or(|g| g < cfg.after) {
            return;
        }
        let witness = match &cfg.witness {
            None => None,
            Some(addr) => Some(matches!(
                tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(addr.as_str())
                )
                .await,
                Ok(Ok(_))
            )),
        };
        match auto_promote_verdict(cfg, gone, streaming, witness) {
            PromoteVerdict::Hold(why) => {
                let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
                if st.auto_hold.as_deref() != Some(why.as_str()) {
                    tracing::warn!(reason = %why, "automatic promotion held back");
                    st.auto_hold = Some(why);
                }
            }
            PromoteVerdict::Promote => {
                self.promoting
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(
                    after_ms = cfg.after.as_millis() as u64,
                    "no writable primary and the fencing rule holds: promoting the standby automatically"
                );
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    match me.promote().await {
                        Ok(role) => tracing::warn!(%role, "automatic promotion done"),
                        Err(e) => {
                            tracing::error!(error = %e, "automatic promotion failed; will retry")
                        }
                    }
                    me.promoting
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
        }
    }

    pub(crate) async fn promote(&self) -> Result<StoreRole, StoreError> {
        let Kind::Servers { nodes, options, .. } = &self.kind else {
            return Err(StoreError::Invalid(
                "the embedded SQLite store has no standby to promote; promotion applies to a PostgreSQL store with a standby per site".into(),
            ));
        };
        let mut slots: Vec<Option<AnyConnection>> = nodes.iter().map(|_| None).collect();
        let results = probe_all(nodes, &mut slots, options.probe_timeout).await;
        if let Some(node) = nodes
            .iter()
            .zip(&results)
            .find_map(|(n, r)| matches!(r, Ok(p) if !p.in_recovery).then_some(n))
        {
            return Err(StoreError::Conflict(format!(
                "refusing to promote a standby: the primary {} is writable and answers, and promoting now would make two writable primaries (split brain); \
                 promote only when the primary's site is lost or its server is stopped",
                node.shown
            )));
        }
        let probes: Vec<Option<Probe>> = results.iter().map(|r| r.as_ref().ok().cloned()).collect();
        let Choice::Standby(i) = choose(None, &probes) else {
            return Err(StoreError::Unavailable(format!(
                "no standby answers, so there is nothing to promote ({})",
                summary(nodes, &results)
            )));
        };
        let (Some(node), Some(Some(conn))) = (nodes.get(i), slots.get_mut(i)) else {
            return Err(StoreError::Unavailable(format!(
                "the standby #{i} to promote is no longer connected; try again"
            )));
        };
        let what = format!("promoting the standby {}", node.shown);
        tracing::warn!(server = %node.shown, "promoting the standby to primary");
        let promoted: bool = sqlx::query("SELECT pg_promote(true, 30) AS promoted")
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get("promoted"))
            .map_err(|e| self.classify(&what, e))?;
        if !promoted {
            return Err(StoreError::Unavailable(format!(
                "{what}: the server did not finish promotion within 30 s; check its log, then check `tsuzuku status` or promote again"
            )));
        }
        // Take the new primary into use now rather than at the next scheduled check.
        let started = Instant::now();
        loop {
            self.wake.notify_one();
            let role = self.role();
            if role.is_writable() || started.elapsed() > Duration::from_secs(10) {
                return Ok(role);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn monitor(
    sites: Weak<Sites>,
    pool: AnyPool,
    wake: Arc<Notify>,
    mut slots: Vec<Option<AnyConnection>>,
    interval: Duration,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
        let Some(sites) = sites.upgrade() else {
            return;
        };
        if let Kind::Servers { nodes, options, .. } = &sites.kind {
            let results = probe_all(nodes, &mut slots, options.probe_timeout).await;
            sites.apply(&pool, &results);
            if let Some(cfg) = &options.auto_promote {
                sites.consider_promotion(cfg).await;
            }
        }
        drop(sites);
        tokio::time::sleep(MIN_CHECK_GAP).await;
    }
}

/// `2025-10-09T12:34:56Z` (UTC, whole seconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3 s`, `5 min 2 s`, `2 h 5 min`: how long ago `t` was.
fn ago(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests;
