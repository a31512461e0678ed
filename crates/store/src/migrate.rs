//! Schema migrations: an ordered list of embedded SQL statements, applied at open and recorded
//! in `schema_migrations`. Portable SQL only (SQLite and PostgreSQL): BIGINT, TEXT, composite
//! primary keys, `ON CONFLICT`.
//!
//! Every table except `schema_migrations` (which describes the database, not a tenant) has a
//! `tenant_id TEXT NOT NULL` column leading its primary key.
//!
//! Several processes may open the same database at once: each migration runs in a transaction
//! whose first statement claims its version row, so exactly one opener applies it and the
//! others wait for it and skip. On PostgreSQL every migration transaction (and the one that
//! creates `schema_migrations`) first takes a transaction-scoped advisory lock, because
//! concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail there with a unique violation
//! in the catalog instead of waiting.

use sqlx::{AnyPool, Row};

use crate::error::{StoreError, db};

struct Migration {
    version: i64,
    name: &'static str,
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        statements: &[
            "CREATE TABLE users (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            username TEXT NOT NULL,
            display_name TEXT NOT NULL,
            email TEXT,
            password_hash TEXT,
            totp_secret TEXT,
            totp_last_step BIGINT,
            groups_json TEXT NOT NULL,
            disabled BIGINT NOT NULL DEFAULT 0,
            failed_logins BIGINT NOT NULL DEFAULT 0,
            last_failed_login BIGINT,
            locked_until BIGINT,
            oidc_issuer TEXT,
            oidc_subject TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, id),
            UNIQUE (tenant_id, username),
            UNIQUE (tenant_id, oidc_issuer, oidc_subject)
        )",
            "CREATE TABLE apps (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            upstream TEXT NOT NULL,
            data_class TEXT NOT NULL,
            critical BIGINT NOT NULL,
            isolated BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, id),
            UNIQUE (tenant_id, name),
            UNIQUE (tenant_id, host)
        )",
            "CREATE TABLE sessions (
            tenant_id TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            login_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            auth_method TEXT NOT NULL,
            mfa BIGINT NOT NULL,
            auth_time BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            absolute_expiry BIGINT NOT NULL,
            source_ip TEXT NOT NULL,
            scope TEXT NOT NULL,
            PRIMARY KEY (tenant_id, token_hash),
            FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )",
            "CREATE INDEX sessions_login ON sessions (tenant_id, login_id)",
            "CREATE INDEX sessions_user ON sessions (tenant_id, user_id)",
            "CREATE INDEX sessions_expiry ON sessions (tenant_id, absolute_expiry)",
            "CREATE TABLE handoffs (
            tenant_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            login_id TEXT NOT NULL,
            app_host TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, code_hash)
        )",
            "CREATE TABLE oidc_pending (
            tenant_id TEXT NOT NULL,
            state TEXT NOT NULL,
            nonce TEXT NOT NULL,
            pkce_verifier TEXT NOT NULL,
            return_to TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, state)
        )",
            "CREATE TABLE policy_head (
            tenant_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            PRIMARY KEY (tenant_id)
        )",
            "CREATE TABLE policy_versions (
            tenant_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            author TEXT NOT NULL,
            change_comment TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, version)
        )",
            "CREATE TABLE policy_docs (
            tenant_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            doc_id TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (tenant_id, version, doc_id),
            FOREIGN KEY (tenant_id, version) REFERENCES policy_versions (tenant_id, version)
        )",
            "CREATE TABLE signing_keys (
            tenant_id TEXT NOT NULL,
            kid TEXT NOT NULL,
            purpose TEXT NOT NULL,
            secret_key TEXT NOT NULL,
            public_key TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, kid)
        )",
            "CREATE INDEX signing_keys_purpose ON signing_keys (tenant_id, purpose, created_at)",
            "CREATE TABLE audit_head (
            tenant_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (tenant_id)
        )",
            "CREATE TABLE audit_events (
            tenant_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            time_ms BIGINT NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT,
            detail TEXT NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        )",
        ],
    },
    Migration {
        version: 2,
        name: "data keys for encryption at rest",
        statements: &["CREATE TABLE data_keys (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            master_id TEXT NOT NULL,
            wrapped TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, id)
        )"],
    },
    Migration {
        version: 3,
        name: "gateway nodes and the snapshot each one uses",
        statements: &["CREATE TABLE gateway_nodes (
            tenant_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            role TEXT NOT NULL,
            snapshot_version BIGINT,
            snapshot_issued_ms BIGINT,
            last_seen_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, node_id)
        )"],
    },
    Migration {
        version: 4,
        name: "gateway sites and their time-limited exclusions",
        statements: &[
            "CREATE TABLE gateway_sites (
            tenant_id TEXT NOT NULL,
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            endpoints_json TEXT NOT NULL,
            preference BIGINT NOT NULL,
            capacity_rps BIGINT,
            dr BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, name)
        )",
            "CREATE TABLE site_exclusions (
            tenant_id TEXT NOT NULL,
            site TEXT NOT NULL,
            until_ms BIGINT NOT NULL,
            reason TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, site),
            FOREIGN KEY (tenant_id, site) REFERENCES gateway_sites (tenant_id, name) ON DELETE CASCADE
        )",
        ],
    },
    Migration {
        version: 5,
        name: "connector experience reports",
        statements: &["CREATE TABLE connector_reports (
            tenant_id TEXT NOT NULL,
            device TEXT NOT NULL,
            site TEXT,
            latency_ms BIGINT,
            loss_pct BIGINT,
            switches BIGINT NOT NULL,
            reported_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, device)
        )"],
    },
    Migration {
        version: 6,
        name: "connectors' DR-mode transitions and DR gateways' uploaded audit chains",
        statements: &[
            "CREATE TABLE dr_transitions (
            tenant_id TEXT NOT NULL,
            device TEXT NOT NULL,
            seq BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            state TEXT NOT NULL,
            drill BIGINT NOT NULL,
            reported_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, device, seq)
        )",
            "CREATE TABLE dr_audit_uploads (
            tenant_id TEXT NOT NULL,
            chain_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            last_seq BIGINT NOT NULL,
            last_hash TEXT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, chain_id)
        )",
        ],
    },
    Migration {
        version: 7,
        name: "device trust: enrolled devices, enrolment tokens, posture, sessions bound to devices",
        statements: &[
            "CREATE TABLE devices (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            public_key TEXT NOT NULL,
            company_issued BIGINT NOT NULL,
            enrolled_at BIGINT NOT NULL,
            not_after BIGINT NOT NULL,
            revoked_at BIGINT,
            PRIMARY KEY (tenant_id, id),
            UNIQUE (tenant_id, fingerprint)
        )",
            "CREATE TABLE enrol_tokens (
            tenant_id TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            company_issued BIGINT NOT NULL,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, token_hash)
        )",
            "CREATE TABLE device_posture (
            tenant_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            report TEXT NOT NULL,
            collected_at BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, device_id)
        )",
            "ALTER TABLE sessions ADD COLUMN device_id TEXT",
        ],
    },
    Migration {
        version: 8,
        name: "devices owned by a user (sign-in with the device certificate)",
        statements: &[
            "ALTER TABLE enrol_tokens ADD COLUMN user_id TEXT",
            "ALTER TABLE devices ADD COLUMN user_id TEXT",
        ],
    },
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Key of the PostgreSQL advisory lock that serialises migrations ("tsuzuku" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x0074_7375_7a75_6b75;

/// On PostgreSQL, waits for the migration lock; released when the transaction ends.
async fn lock_migrations(
    conn: &mut sqlx::AnyConnection,
    postgres: bool,
    what: &str,
) -> Result<(), StoreError> {
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(|e| db(what, e))?;
    }
    Ok(())
}

async fn schema_version(pool: &AnyPool) -> Result<Option<i64>, StoreError> {
    sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get("v"))
        .map_err(|e| db("reading the schema version", e))
}

fn refuse_newer(newest: Option<i64>) -> Result<(), StoreError> {
    let latest = latest_version();
    match newest {
        Some(newest) if newest > latest => Err(StoreError::Incompatible(format!(
            "the database is at schema version {newest} but this build of tsuzuku knows only up to {latest}; run a newer tsuzuku"
        ))),
        _ => Ok(()),
    }
}

/// Brings the schema up to date. `postgres` selects the PostgreSQL locking.
pub(crate) async fn run(pool: &AnyPool, postgres: bool) -> Result<(), StoreError> {
    let what = "creating the schema_migrations table";
    let mut tx = pool.begin().await.map_err(|e| db(what, e))?;
    lock_migrations(&mut tx, postgres, what).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL,
            PRIMARY KEY (version)
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db(what, e))?;
    tx.commit().await.map_err(|e| db(what, e))?;

    refuse_newer(schema_version(pool).await?)?;

    let now = unix_now();
    for m in MIGRATIONS {
        let what = format!("applying schema migration {} ({})", m.version, m.name);
        let mut tx = pool.begin().await.map_err(|e| db(&what, e))?;
        lock_migrations(&mut tx, postgres, &what).await?;
        // Claiming the version row first takes the write lock (SQLite) or the row (PostgreSQL):
        // a concurrent opener waits here and then finds the migration applied.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| db(&what, e))?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await.map_err(|e| db(&what, e))?;
            continue;
        }
        for statement in m.statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| db(&what, e))?;
        }
        tx.commit().await.map_err(|e| db(&what, e))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
    }
    Ok(())
}

/// For a store opened on a standby (no primary reachable): the schema cannot be changed there,
/// so it must already be the one this build writes.
pub(crate) async fn check_current(pool: &AnyPool, server: &str) -> Result<(), StoreError> {
    let newest = match schema_version(pool).await {
        Ok(v) => v,
        // No schema_migrations table yet: the primary was never opened by tsuzuku.
        Err(StoreError::Database(_)) => None,
        Err(e) => return Err(e),
    };
    refuse_newer(newest)?;
    let latest = latest_version();
    if newest.unwrap_or(0) < latest {
        return Err(StoreError::ReadOnly(format!(
            "only the read-only standby {server} answers and its schema is at version {} while this build needs {latest}; \
             the schema can be brought up to date only on a writable primary: start tsuzuku when the primary answers, \
             or promote the standby (`tsuzuku site promote`) first",
            newest.unwrap_or(0)
        )));
    }
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
