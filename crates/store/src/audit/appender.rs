//! SQLite files: audit appends on a connection of their own, driven directly (rusqlite) on the
//! calling thread instead of through sqlx's driver.
//!
//! Why a second driver: sqlx runs every SQLite connection on a worker thread of its own and
//! hands each statement to it through a channel, so every audit batch cost two round trips
//! between threads — the audit writer's thread waking the driver's thread and being woken
//! back, twice — on top of the SQLite work itself. The gateway's audit writer already has a
//! thread of its own (`tsuzuku-audit`), where waiting for SQLite blocks nothing else; here
//! that thread runs the transaction itself. On this project's 2-core benchmark machine the
//! hand-offs cost about as much CPU as the inserts (docs/BENCHMARKS.md).
//!
//! Both drivers link the same SQLite library (rusqlite 0.39 and sqlx 0.9 both use
//! `libsqlite3-sys` 0.37) and open the same file in WAL mode; SQLite's own locking orders this
//! connection's transactions with the pool's, as it orders any two connections'.
//!
//! The write-ahead log stays bounded: after a commit that leaves it large the appender starts
//! it over, waiting only for a short checkpoint of its own (see [`super::wal`]).
//!
//! The transaction: `BEGIN IMMEDIATE`, the head row's upsert, the linked rows, the head's
//! update, `COMMIT`. Statements are prepared once and cached on the connection. After a
//! failure the transaction is rolled back. The connection is kept only after a refusal it can
//! recover from (another writer's lock, a row past the head); after any other error (I/O, a
//! file replaced or damaged, a failed rollback) it is closed and the next append opens the file
//! again.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use std::cell::Cell;
use std::os::raw::c_int;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tsuzuku_audit::{AuditEvent, GENESIS_HASH};

use super::wal::{Restart, Step, WAL_RESTART_PAGES};
use super::{HEAD_SQL, link_all, what};
use crate::error::StoreError;

/// How long a transaction waits for another connection's write lock (as the pool's
/// connections do: `PRAGMA busy_timeout = 5000`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A checkpoint of the appender's own that makes appends wait this long or more is logged
/// (at 4 MiB of log it takes a few milliseconds).
const SLOW_CHECKPOINT: Duration = Duration::from_millis(50);

thread_local! {
    /// The pages in the write-ahead log after this thread's last commit, from SQLite's WAL
    /// hook (a plain function, called on the committing thread).
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// SQLite's WAL hook: after each commit, the pages now in the log.
fn wal_committed(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

const INSERT_SQL: &str =
    "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const UPDATE_HEAD_SQL: &str = "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE tenant_id = ?3";

/// The connection for one SQLite file's audit appends, opened on first use.
#[derive(Debug)]
pub(crate) struct SqliteAppender {
    path: PathBuf,
    /// The store URL's `vfs` parameter, so both drivers lock the file the same way.
    vfs: Option<String>,
    slot: Mutex<Slot>,
    /// Locked after `slot`, while it is held.
    restart: Mutex<Restart>,
}

#[derive(Debug)]
enum Slot {
    /// Not open yet, or closed after a failed rollback: the next append opens it.
    Idle,
    Open(Connection),
    /// The store was closed: appends fail.
    Closed,
}

impl SqliteAppender {
    /// An appender for the database file at `path` (which the pool has already created and
    /// migrated), opened through the SQLite VFS `vfs` if the store URL named one.
    pub(crate) fn new(path: &Path, vfs: Option<String>) -> SqliteAppender {
        SqliteAppender {
            path: path.to_owned(),
            vfs,
            slot: Mutex::new(Slot::Idle),
            restart: Mutex::new(Restart::new(WAL_RESTART_PAGES)),
        }
    }

    /// The same with another restart threshold (tests).
    #[cfg(test)]
    pub(crate) fn with_restart_pages(mut self, pages: i32) -> SqliteAppender {
        self.restart = Mutex::new(Restart::new(pages));
        self
    }

    /// How many times the appender has found its write-ahead log wholly copied and let the
    /// next transaction start it over (tests).
    #[cfg(test)]
    pub(crate) fn rewinds(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.restart
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rewinds()
    }

    /// How many times the helper synced the log when asked every `FLUSH_PAGES` pages (tests;
    /// its sync after each step-1 checkpoint is not counted).
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.restart
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flushes()
    }

    /// Closes the connection for good: later appends fail with [`StoreError::Unavailable`].
    pub(crate) fn close(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Slot::Closed;
        self.restart
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop_helper();
    }

    /// Appends `events` to `tenant`'s chain in one transaction on this thread, and returns
    /// their sequence numbers. Blocks while SQLite works (and while another connection holds
    /// the write lock, up to the busy timeout): call it where blocking is allowed.
    pub(crate) fn append(
        &self,
        tenant: &str,
        events: &[&AuditEvent],
    ) -> Result<Vec<i64>, StoreError> {
        let what = what(tenant, events);
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match std::mem::replace(&mut *slot, Slot::Idle) {
            Slot::Open(conn) => conn,
            Slot::Idle => open(&self.path, self.vfs.as_deref()).map_err(|e| classify(&what, &e))?,
            Slot::Closed => {
                *slot = Slot::Closed;
                return Err(StoreError::Unavailable(format!(
                    "{what}: the store was closed"
                )));
            }
        };
        match transaction(&conn, tenant, events) {
            Ok(seqs) => {
                self.after_commit(&conn);
                *slot = Slot::Open(conn);
                Ok(seqs)
            }
            Err(e) => {
                let err = classify(&what, &e);
                // Another writer's lock and a row past the head leave the connection sound;
                // anything else may not (a failing disk, the file replaced or damaged).
                let keep = matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) || is_key_violation(&e);
                // In autocommit mode nothing is open (BEGIN failed, or SQLite rolled back
                // already); otherwise roll back.
                let rolled_back = conn.is_autocommit()
                    || match conn.execute_batch("ROLLBACK") {
                        Ok(()) => true,
                        Err(r) => {
                            tracing::warn!(path = %self.path.display(), error = %r, "could not roll back an audit append; closing its connection");
                            false
                        }
                    };
                if keep && rolled_back {
                    *slot = Slot::Open(conn);
                } else if rolled_back {
                    tracing::warn!(path = %self.path.display(), error = %e, "audit append failed; the next one reopens the file");
                }
                Err(err)
            }
        }
    }
}

impl SqliteAppender {
    /// Keeps the write-ahead log bounded after a commit on `conn` (see [`super::wal`]); runs
    /// with the connection's slot held, so no append comes between its checkpoint and the
    /// next transaction.
    fn after_commit(&self, conn: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        let mut restart = self.restart.lock().unwrap_or_else(PoisonError::into_inner);
        let helper = restart.helper_state();
        let flushing = restart.flushing();
        match restart.after_commit(pages, helper, flushing) {
            Step::Nothing => {}
            Step::Flush => restart.ask_flush(&self.path, self.vfs.as_deref()),
            Step::AskHelper => restart.ask_helper(&self.path, self.vfs.as_deref()),
            Step::CheckpointNow => {
                restart.consume();
                let started = std::time::Instant::now();
                let result = super::wal::checkpoint(conn);
                let waited = started.elapsed();
                if waited >= SLOW_CHECKPOINT {
                    tracing::warn!(
                        waited_ms = waited.as_millis() as u64,
                        pages,
                        "audit appends waited for the write-ahead log's checkpoint"
                    );
                }
                match &result {
                    Ok((log, copied)) if copied < log => tracing::debug!(
                        log,
                        copied,
                        "audit log not wholly copied (a reader holds old pages); trying again later"
                    ),
                    Ok(_) => {}
                    Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                        tracing::debug!("another checkpoint is running; trying again later");
                    }
                    Err(e) => tracing::warn!(error = %e, "audit appender's WAL checkpoint failed"),
                }
                restart.checkpointed(pages, result.ok());
            }
        }
    }
}

/// Opens the file read-write (not creating it) with the settings every pooled connection has.
pub(super) fn open(path: &Path, vfs: Option<&str>) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs)?,
        None => Connection::open_with_flags(path, flags)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints are the pool's background task's (see `spawn_checkpointer`) and, once the log
    // is large, this appender's (see `super::wal`).
    conn.pragma_update_and_check(None, "wal_autocheckpoint", 0, |_| Ok(()))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.wal_hook(Some(wal_committed));
    Ok(conn)
}

fn transaction(
    conn: &Connection,
    tenant: &str,
    events: &[&AuditEvent],
) -> Result<Vec<i64>, rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let (seq, hash) = conn
        .prepare_cached(HEAD_SQL)?
        .query_row((tenant, GENESIS_HASH), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
    let (linked, seq, hash) = link_all(seq, hash, events);
    {
        let mut insert = conn.prepare_cached(INSERT_SQL)?;
        for l in &linked {
            insert.execute((
                tenant,
                l.seq,
                l.prev_hash.as_str(),
                l.hash.as_str(),
                l.event.time_ms,
                l.event.kind.as_str(),
                l.event.actor.as_deref(),
                l.event.detail.as_str(),
            ))?;
        }
    }
    conn.prepare_cached(UPDATE_HEAD_SQL)?
        .execute((seq, hash.as_str(), tenant))?;
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(linked.iter().map(|l| l.seq).collect())
}

/// A second row for a chain position: the primary key of `audit_events` (not NOT NULL or
/// CHECK failures, which are constraint violations too).
fn is_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// The store's classification of a SQLite error: locked beyond the busy timeout, or out of
/// disk or failing I/O, may work on retry (the connection is reopened first); a read-only
/// file will not; a row past the chain head or a damaged file is corruption.
fn classify(what: &str, e: &rusqlite::Error) -> StoreError {
    if is_key_violation(e) {
        return StoreError::Corrupt(format!(
            "{what}: an audit event after the chain head already exists ({e}); \
             the audit tables were changed outside tsuzuku: run an audit verification"
        ));
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!(
                "{what}: the database stayed locked by another writer beyond the busy timeout: {e}"
            ))
        }
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(format!("{what}: {e}")),
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed,
        ) => StoreError::Unavailable(format!("{what}: {e}")),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{what}: {e}"))
        }
        _ => StoreError::Sqlite(format!("{what}: {e}")),
    }
}
