//! Tsuzuku's durable state: users, apps, sessions, one-time codes, versioned policies, signing
//! keys and the hash-chained audit log, behind one SQL schema that runs on SQLite today and on
//! PostgreSQL later (every query is a single SQL text with `$n` placeholders run through sqlx's
//! `AnyPool`; times are BIGINT Unix seconds, audit times milliseconds, booleans BIGINT 0/1, JSON
//! TEXT).
//!
//! Every table has a `tenant_id` column and every query is scoped by it (DP-9): a [`Store`] is
//! a [`StoreRoot`] bound to one tenant, and nothing it does can see or change another tenant's
//! rows.
//!
//! **Architecture invariant:** this crate knows SQL and nothing about HTTP, Cedar, sessions'
//! cookies or cryptography; its only link to the audit chain is calling `tsuzuku-audit`'s
//! chain functions. Secrets handed to it (password hashes, TOTP secrets, signing keys) are
//! stored as given.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

mod apps;
mod audit;
mod error;
mod keys;
mod migrate;
mod policy;
mod sessions;
#[cfg(any(test, feature = "testsuite"))]
pub mod suite;
mod users;

pub use apps::{App, NewApp};
pub use error::StoreError;
pub use keys::StoredKey;
pub use policy::{PolicyDoc, PolicyVersion};
pub use sessions::{Handoff, OidcPending, Session};
pub use users::{NewUser, User};

/// The tenant used when a deployment has only one.
pub const DEFAULT_TENANT: &str = "default";

/// Connections per pool for file and server databases.
const MAX_CONNECTIONS: u32 = 8;

/// The whole database; hand out per-tenant views with [`StoreRoot::tenant`]. Cheap to clone
/// (clones share the pool).
#[derive(Debug, Clone)]
pub struct StoreRoot {
    pool: AnyPool,
}

/// One tenant's view of the store. Every method reads and writes only that tenant's rows.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    tenant: Arc<str>,
}

impl StoreRoot {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// SQLite: `sqlite:///abs/path/store.db` (the file is created if missing; `?mode=rwc` is
    /// added when the URL names no mode), or `sqlite::memory:` for a private in-memory database
    /// (one connection). Each SQLite connection runs in WAL mode with `synchronous=NORMAL`, a
    /// 5 s busy timeout and foreign keys on.
    pub async fn open(url: &str) -> Result<StoreRoot, StoreError> {
        sqlx::any::install_default_drivers();
        let url = with_default_mode(url);
        let shown = redact(&url);
        let memory = is_sqlite_memory(&url);
        let mut options = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { MAX_CONNECTIONS })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                        for pragma in [
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        if memory {
            // The database lives as long as its one connection: never let it be recycled.
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
        migrate::run(&pool).await?;
        Ok(StoreRoot { pool })
    }

    /// The view of one tenant. Tenant ids are opaque; [`DEFAULT_TENANT`] is the usual one.
    pub fn tenant(&self, tenant_id: &str) -> Store {
        Store {
            pool: self.pool.clone(),
            tenant: Arc::from(tenant_id),
        }
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| error::db("pinging the store", e))?;
        Ok(())
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
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
        }
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
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
