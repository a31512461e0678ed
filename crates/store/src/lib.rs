//! Tsuzuku's durable state: users, apps, sessions, one-time codes, versioned policies, signing
//! keys and the hash-chained audit log, behind one SQL schema that runs on SQLite (the embedded
//! default) and on PostgreSQL (the distributed backend: one server per site, streaming
//! replication, failover between the sites done by the store itself, see
//! [`StoreRoot::open_sites`]). Every query is a single SQL text with `$n` placeholders run
//! through sqlx's `AnyPool`, with one exception: audit appends on a SQLite file go through a
//! rusqlite connection of their own, on the calling thread (module `audit`). Times are BIGINT
//! Unix seconds, audit times milliseconds, booleans BIGINT 0/1, JSON TEXT.
//!
//! Every table has a `tenant_id` column and every query is scoped by it (DP-9): a [`Store`] is
//! a [`StoreRoot`] bound to one tenant, and nothing it does can see or change another tenant's
//! rows.
//!
//! Encryption at rest: given a master key ([`StoreRoot::set_master_key`]), the store seals
//! e-mail addresses, display names, TOTP secrets and signing keys' secrets on write and opens
//! them on read, with per-tenant data keys kept wrapped in `data_keys` (module `crypt`,
//! docs/ENCRYPTION.md).
//!
//! **Architecture invariant:** this crate knows SQL and nothing about HTTP, Cedar, sessions'
//! cookies or cryptography; its only link to the audit chain is calling `tsuzuku-audit`'s
//! chain functions, and its only link to encryption is calling `tsuzuku-keyring` to seal and
//! open values (it holds no cipher of its own). Password hashes and token hashes are stored as
//! given.
#![forbid(unsafe_code)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::Connection as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

mod apps;
mod audit;
mod crypt;
mod devices;
mod dr;
mod error;
mod gsites;
mod keys;
mod migrate;
mod mirror;
mod nodes;
mod once;
mod policy;
mod sessions;
mod sites;
#[cfg(any(test, feature = "testsuite"))]
pub mod suite;
mod users;

pub use apps::{App, NewApp};
pub use crypt::{DataKeyInfo, EncryptionStatus, Rotation, TenantEncryption};
pub use devices::{Device, EnrolGrant, StoredPosture};
pub use dr::{DrAuditUpload, DrTransition, UploadedEvent};
pub use error::StoreError;
pub use gsites::{GatewaySite, SiteExclusion};
pub use keys::StoredKey;
pub use mirror::DEVICE_CA_CERT_PURPOSE;
pub use nodes::{ConnectorReport, NodeReport};
pub use policy::{PolicyDoc, PolicyVersion};
pub use sessions::{Handoff, OidcPending, Session};
pub use sites::{AutoPromote, PromoteVerdict, SiteOptions, StoreRole, auto_promote_verdict};
/// The keyring crate, so callers load a [`keyring::MasterKey`] without depending on it.
pub use tsuzuku_keyring as keyring;
pub use users::{NewUser, User};

/// The schema version this build migrates a database to (one row per version in
/// `schema_migrations`).
pub fn latest_schema_version() -> i64 {
    migrate::latest_version()
}

/// The tenant used when a deployment has only one.
pub const DEFAULT_TENANT: &str = "default";

/// Connections per pool for file and server databases.
const MAX_CONNECTIONS: u32 = 8;

/// The whole database; hand out per-tenant views with [`StoreRoot::tenant`]. Cheap to clone
/// (clones share the pool).
#[derive(Debug, Clone)]
pub struct StoreRoot {
    pool: AnyPool,
    /// SQLite files only: the connection for audit appends (see [`audit::SqliteAppender`]).
    appender: Option<Arc<audit::SqliteAppender>>,
    sites: Arc<sites::Sites>,
    crypt: Arc<crypt::Crypt>,
    /// In-memory SQLite only: keeps the database alive (see [`MemoryDb`]).
    memory: Option<Arc<MemoryDb>>,
}

/// One tenant's view of the store. Every method reads and writes only that tenant's rows.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    appender: Option<Arc<audit::SqliteAppender>>,
    tenant: Arc<str>,
    sites: Arc<sites::Sites>,
    crypt: Arc<crypt::Crypt>,
    memory: Option<Arc<MemoryDb>>,
}

/// A connection to an in-memory SQLite database held outside the pool.
///
/// An in-memory database lives as long as one connection to it is open. The pool's one
/// connection is not enough: sqlx closes a pooled connection that fails its check on release
/// (a query future dropped half-way, say) and opens a new one, which would find an empty
/// database. The database is named (shared cache) so the new connection reaches the same one,
/// and this connection keeps it alive for as long as any clone of the store exists.
struct MemoryDb {
    _conn: std::sync::Mutex<sqlx::AnyConnection>,
}

impl std::fmt::Debug for MemoryDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryDb")
    }
}

/// How often the SQLite write-ahead log is checkpointed in the background.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The settings of every SQLite connection: WAL, `synchronous=NORMAL` (a commit survives the
/// process being killed; only a power loss can take the last ones), a 5 s busy timeout, foreign
/// keys, and no checkpoints inside commits.
async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        for pragma in [
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON",
            // Checkpoints run in the background (`spawn_checkpointer`), not inside whichever
            // commit crosses the WAL's 1000-page mark.
            "PRAGMA wal_autocheckpoint = 0",
        ] {
            sqlx::query(pragma).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// The audit appender of a SQLite file store (module `audit`): the same file, by its absolute
/// path, through the same VFS as the pool's connections. None for an `immutable` file, which
/// takes no writes (appends then fail through the pool with the driver's read-only error).
fn sqlite_appender(
    url: &str,
    pool: &AnyPool,
    shown: &str,
) -> Result<Option<Arc<audit::SqliteAppender>>, StoreError> {
    let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("store URL {shown} is not usable: {e}")))?;
    let options = pool.connect_options();
    let param = |name: &str| {
        options
            .database_url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("immutable").is_some_and(|v| v == "true" || v == "1") {
        return Ok(None);
    }
    let path = std::fs::canonicalize(file.get_filename())
        .unwrap_or_else(|_| file.get_filename().to_owned());
    Ok(Some(Arc::new(audit::SqliteAppender::new(
        &path,
        param("vfs"),
    ))))
}

/// Checkpoints a SQLite store's write-ahead log every [`CHECKPOINT_EVERY`] (passive: it never
/// waits for readers or writers) for as long as the pool lives. With SQLite's own
/// auto-checkpoint, the checkpoint (about a thousand page writes and an fsync) ran inside the
/// commit that crossed the threshold, and every request waiting on that audit batch waited for
/// it too.
fn spawn_checkpointer(pool: &AnyPool) {
    let pool = pool.clone();
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "background WAL checkpoint failed; retrying");
            }
        }
    });
}

impl StoreRoot {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// PostgreSQL: `postgres://user:password@host:port/db` (or `postgresql://`), or several
    /// such URLs separated by commas, one per site: the same as [`StoreRoot::open_sites`].
    ///
    /// SQLite: `sqlite:///abs/path/store.db` (the file is created if missing; `?mode=rwc` is
    /// added when the URL names no mode), or `sqlite::memory:` for a private in-memory database
    /// (one connection). Each SQLite connection runs in WAL mode with `synchronous=NORMAL`, a
    /// 5 s busy timeout and foreign keys on; the WAL is checkpointed by a background task, not
    /// inside commits.
    pub async fn open(url: &str) -> Result<StoreRoot, StoreError> {
        StoreRoot::open_with(url, SiteOptions::default()).await
    }

    /// [`StoreRoot::open`] with explicit [`SiteOptions`] for a PostgreSQL store (ignored for
    /// SQLite, which is a local file).
    pub async fn open_with(url: &str, options: SiteOptions) -> Result<StoreRoot, StoreError> {
        if is_postgres(url) {
            let urls: Vec<String> = split_url_list(url);
            return StoreRoot::open_sites_with(&urls, options).await;
        }
        sqlx::any::install_default_drivers();
        let in_memory = is_sqlite_memory(url);
        let url = if in_memory {
            named_memory_url(url)
        } else {
            with_default_mode(url)
        };
        let shown = redact(&url);
        // Opened before the pool, so the database outlives every pooled connection.
        let memory = if in_memory {
            let conn = sqlx::AnyConnection::connect(&url)
                .await
                .map_err(|e| error::db(&format!("opening the store at {shown}"), e))?;
            Some(Arc::new(MemoryDb {
                _conn: std::sync::Mutex::new(conn),
            }))
        } else {
            None
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if memory.is_some() { 1 } else { MAX_CONNECTIONS })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)));
        if memory.is_some() {
            // One connection, kept (the held one keeps the data even if it is replaced).
            options = options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options.connect(&url).await.map_err(|e| match e {
            sqlx::Error::Configuration(c) => StoreError::Invalid(format!(
                "store URL {shown} is not usable: {c} (expected e.g. sqlite:///var/lib/tsuzuku/store.db)"
            )),
            other => match error::db(&format!("opening the store at {shown}"), other) {
                StoreError::Database(e) => StoreError::Unavailable(format!(
                    "cannot open the store at {shown}: {e} (check that the directory exists and is writable)"
                )),
                classified => classified,
            },
        })?;
        migrate::run(&pool, false).await?;
        let appender = if memory.is_some() {
            None
        } else {
            spawn_checkpointer(&pool);
            sqlite_appender(&url, &pool, &shown)?
        };
        Ok(StoreRoot {
            pool,
            appender,
            sites: Arc::new(sites::Sites::embedded(shown)),
            crypt: Arc::default(),
            memory,
        })
    }

    /// Opens a PostgreSQL store with one server per site (primary and streaming hot
    /// standbys, in any order), with the default [`SiteOptions`].
    ///
    /// Tsuzuku fails over between them itself: reads and writes go to the server that is not
    /// in recovery; when none is, reads go to the standby that has replayed the most and
    /// writes fail with [`StoreError::ReadOnly`], whose message says since when and what to do.
    /// Every server is checked every [`SiteOptions::check_interval`] and at once after a
    /// connection error, so a lost primary is noticed within about a second and a promoted
    /// standby takes writes without a restart. See [`StoreRoot::role`] and
    /// [`StoreRoot::promote`].
    ///
    /// The schema is brought up to date on the primary. Opening with only a standby
    /// reachable works (read-only) if its schema is current. Fails with
    /// [`StoreError::Unavailable`] if no server answers.
    pub async fn open_sites(urls: &[String]) -> Result<StoreRoot, StoreError> {
        StoreRoot::open_sites_with(urls, SiteOptions::default()).await
    }

    /// [`StoreRoot::open_sites`] with explicit timeouts and check interval.
    pub async fn open_sites_with(
        urls: &[String],
        options: SiteOptions,
    ) -> Result<StoreRoot, StoreError> {
        sqlx::any::install_default_drivers();
        if urls.is_empty() {
            return Err(StoreError::Invalid(
                "no database server URL given; give one postgres:// URL per site".into(),
            ));
        }
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            let shown = redact(url);
            if !is_postgres(url) {
                return Err(StoreError::Invalid(format!(
                    "store URL {shown} is not a PostgreSQL URL; every site's URL must start with postgres:// (e.g. postgres://tsuzuku@db1.example:5432/tsuzuku)"
                )));
            }
            let options = AnyConnectOptions::from_str(url).map_err(|e| {
                StoreError::Invalid(format!(
                    "store URL {shown} is not usable: {e} (expected e.g. postgres://tsuzuku@db1.example:5432/tsuzuku)"
                ))
            })?;
            nodes.push(sites::Node { shown, options });
        }
        let clock = Arc::new(sites::SwitchClock::new(options.probe_timeout));
        let pool_options = sites::pg_pool_options(&options, Arc::clone(&clock));
        let start_unavailable = options.start_unavailable;
        let sites = Arc::new(sites::Sites::servers(nodes, options, clock));
        let (pool, probes) = sites
            .first_check(|first| pool_options.connect_lazy_with(first.clone()))
            .await?;
        match sites.role() {
            StoreRole::Primary { .. } => migrate::run(&pool, true).await?,
            StoreRole::ReadOnlyStandby { server, .. } => {
                migrate::check_current(&pool, &server).await?
            }
            StoreRole::Unavailable { reason } if start_unavailable => {
                tracing::warn!(%reason, "no database server answers; starting unavailable");
            }
            StoreRole::Unavailable { reason } => return Err(StoreError::Unavailable(reason)),
        }
        sites.start_monitor(pool.clone(), probes);
        Ok(StoreRoot {
            pool,
            appender: None,
            sites,
            crypt: Arc::default(),
            memory: None,
        })
    }

    /// Which server the store uses and whether it accepts writes (for `tsuzuku status` and
    /// `/readyz`). Always [`StoreRole::Primary`] for SQLite.
    pub fn role(&self) -> StoreRole {
        self.sites.role()
    }

    /// Promotes the reachable standby that has replayed the most to a writable primary
    /// (`SELECT pg_promote(true, 30)`) and returns the new role once the store writes to it.
    ///
    /// **Fencing rule:** refused with [`StoreError::Conflict`] while any configured server
    /// answers as a writable primary, so promotion never creates a second writable primary
    /// next to a live one. It cannot see a primary it cannot reach: promote only when the
    /// primary's site is lost or its server is stopped (docs/STORAGE.md).
    pub async fn promote(&self) -> Result<StoreRole, StoreError> {
        self.sites.promote().await
    }

    /// Classifies a driver error of this store (see [`sites::Sites::classify`]).
    pub(crate) fn db(&self, what: &str, e: sqlx::Error) -> StoreError {
        self.sites.classify(what, e)
    }

    /// The view of one tenant. Tenant ids are opaque; [`DEFAULT_TENANT`] is the usual one.
    pub fn tenant(&self, tenant_id: &str) -> Store {
        Store {
            pool: self.pool.clone(),
            appender: self.appender.clone(),
            tenant: Arc::from(tenant_id),
            sites: Arc::clone(&self.sites),
            crypt: Arc::clone(&self.crypt),
            memory: self.memory.clone(),
        }
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.db("pinging the store", e))?;
        Ok(())
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.sites.close();
        if let Some(appender) = &self.appender {
            appender.close();
        }
        self.pool.close().await;
    }

    /// The raw pool, for the storage test suite's tamper tests only.
    #[cfg(any(test, feature = "testsuite"))]
    #[doc(hidden)]
    pub fn raw_pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl Store {
    /// The tenant this view is bound to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.root().ping().await
    }

    /// The whole database this view belongs to.
    pub fn root(&self) -> StoreRoot {
        StoreRoot {
            pool: self.pool.clone(),
            appender: self.appender.clone(),
            sites: Arc::clone(&self.sites),
            crypt: Arc::clone(&self.crypt),
            memory: self.memory.clone(),
        }
    }

    /// Classifies a driver error of this store (see [`sites::Sites::classify`]).
    pub(crate) fn db(&self, what: &str, e: sqlx::Error) -> StoreError {
        self.sites.classify(what, e)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `postgres://a,postgres://b` → both URLs (a comma starts a new URL only where one begins).
fn split_url_list(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        match urls.last_mut() {
            Some(last) if !is_postgres(part) => {
                last.push(',');
                last.push_str(part);
            }
            _ => urls.push(part.to_owned()),
        }
    }
    urls
}

fn is_sqlite_memory(url: &str) -> bool {
    url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
}

/// An in-memory SQLite URL with a name of its own, so every connection of one store reaches
/// the same database and no two stores share one (see [`MemoryDb`]). A URL that already
/// names its database (`sqlite:name?mode=memory`) is kept.
fn named_memory_url(url: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (name, _) = rest.split_once('?').unwrap_or((rest, ""));
    if !name.is_empty() && name != ":memory:" {
        return url.to_owned();
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "sqlite:file:tsuzuku-memory-{}-{n}?mode=memory",
        std::process::id()
    )
}

/// `sqlite:` file URLs without a `mode` get `mode=rwc` so a missing file is created.
fn with_default_mode(url: &str) -> String {
    if !url.starts_with("sqlite:") || is_sqlite_memory(url) {
        return url.to_owned();
    }
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query.split('&').any(|kv| kv.starts_with("mode=")) {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The URL with any password replaced, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
