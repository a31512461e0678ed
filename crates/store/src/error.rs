//! [`StoreError`]: what can go wrong talking to the store, classified so callers can react
//! (conflict → tell the user, read-only → a standby is serving, unavailable → retry later).

use std::borrow::Cow;

/// An error from the store. Messages name the tenant and the input that was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write collides with existing state (duplicate name, stale version, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row to change does not exist in this tenant.
    #[error("not found: {0}")]
    NotFound(String),
    /// The input is unacceptable regardless of the stored state.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database accepts only reads (a standby, or a read-only file); writes must go to the
    /// primary.
    #[error("the store is read-only: {0}")]
    ReadOnly(String),
    /// The database cannot be reached or is too busy right now; retrying later may work.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be decoded; it was changed outside Tsuzuku or is damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database's schema is newer than this build of Tsuzuku understands.
    #[error("incompatible store schema: {0}")]
    Incompatible(String),
    /// Encryption at rest: the master key does not unwrap the data keys
    /// ([`tsuzuku_keyring::KeyringError::WrongMasterKey`]), a data key is damaged, or a sealed
    /// value does not open. The message says which key is needed.
    #[error(transparent)]
    Keyring(#[from] tsuzuku_keyring::KeyringError),
    /// An encrypted value was read, or a key operation asked for, without a master key.
    #[error("no master key: {0}")]
    NoMasterKey(String),
    /// Any other database error.
    /// The driver's error is part of the message, not a `source`: printed once.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Any other error of the SQLite connection that appends audit events (a driver of its
    /// own, see docs/STORAGE.md); the message says what was being done.
    #[error("database error: {0}")]
    Sqlite(String),
}

impl StoreError {
    /// True when retrying the same operation later may succeed (busy, unreachable, failing
    /// over).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLite primary result codes (the driver reports extended codes; the low byte is primary).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
/// PostgreSQL: `read_only_sql_transaction` (a hot standby refused a write).
const PG_READ_ONLY: &str = "25006";

/// PostgreSQL SQLSTATEs that mean the server or the connection went away: class 08
/// (connection exception) and `admin_shutdown`, `crash_shutdown`, `cannot_connect_now`
/// (a server shutting down, crashing, or still starting / recovering).
fn is_pg_connection_loss(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// True for a hot standby's refusal to write (SQLSTATE 25006).
pub(crate) fn is_pg_read_only(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some(PG_READ_ONLY))
}

/// True when the error says the database server could not be reached or went away, so
/// another server may have to be used.
pub(crate) fn is_connection_trouble(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| is_pg_connection_loss(&c)),
        _ => false,
    }
}

/// Classifies a driver error. `what` says what was being done, for the message.
pub(crate) fn db(what: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "{what}: timed out waiting for a database connection (database overloaded or unreachable)"
        )),
        sqlx::Error::PoolClosed => {
            StoreError::Unavailable(format!("{what}: the connection pool was closed"))
        }
        sqlx::Error::Io(io) => StoreError::Unavailable(format!("{what}: {io}")),
        sqlx::Error::Tls(tls) => StoreError::Unavailable(format!("{what}: TLS: {tls}")),
        sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(format!("{what}: the database worker crashed"))
        }
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or(Cow::Borrowed(""));
            let sqlite_primary = code.parse::<i64>().ok().map(|c| c & 0xff);
            if code == PG_READ_ONLY {
                StoreError::ReadOnly(format!(
                    "{what}: the database server is a read-only standby and refused the change ({}, SQLSTATE 25006); \
                     writes work again once a standby is promoted (`tsuzuku site promote`) or the primary returns",
                    d.message()
                ))
            } else if sqlite_primary == Some(SQLITE_READONLY) {
                StoreError::ReadOnly(format!("{what}: {}", d.message()))
            } else if matches!(sqlite_primary, Some(SQLITE_BUSY | SQLITE_LOCKED)) {
                StoreError::Unavailable(format!(
                    "{what}: the database stayed locked by another writer beyond the busy timeout: {}",
                    d.message()
                ))
            } else if is_pg_connection_loss(&code) {
                StoreError::Unavailable(format!(
                    "{what}: the database server ended the connection ({}, SQLSTATE {code}); retry shortly",
                    d.message()
                ))
            } else {
                StoreError::Database(e)
            }
        }
        _ => StoreError::Database(e),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Decoding a column failed: the row does not have the shape the schema promises.
pub(crate) fn corrupt(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
