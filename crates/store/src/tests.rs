#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The storage suite run against SQLite files in temporary directories, plus SQLite-specific
//! checks (pragmas, schema shape, opening).

use sqlx::Row;
use tempfile::TempDir;

use super::*;
use crate::suite;

fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}/store.db", dir.path().display())
}

async fn fresh() -> (TempDir, StoreRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open(&db_url(&dir)).await.unwrap();
    (dir, root)
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, root) = fresh().await;
            suite::$name(&root).await;
        }
    )*};
}

suite_tests!(
    ping,
    users_crud,
    user_conflicts,
    login_failures_and_lockout,
    totp_step_replay_guard,
    oidc_users,
    oidc_user_lookup,
    apps_crud_and_conflicts,
    sessions_lifecycle,
    handoff_single_use_and_expiry,
    oidc_pending_single_use,
    policy_versions_and_optimistic_concurrency,
    signing_keys,
    tenant_isolation,
    audit_append_and_read,
    audit_tampering_is_detected,
    audit_verify_reads_every_row_and_the_head,
    audit_verify_reports_unreadable_rows_and_goes_on,
    audit_verify_flags_details_not_stored_canonically,
    audit_verify_is_not_fooled_by_concurrent_appends,
    audit_multi_tenant_batches,
    audit_writer_loses_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_concurrent_writers_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    // Opened concurrently too: both race through migrations on a new file.
    let (a, b) = tokio::join!(StoreRoot::open(&url), StoreRoot::open(&url));
    suite::audit_concurrent_writers_keep_one_chain(&a.unwrap(), &b.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    suite::audit_survives_reopen(&db_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_twice_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    suite::run_all(&url).await;
    // Fresh tenants per check: the suite can rerun on a database that already has data.
    suite::run_all(&url).await;
}

#[tokio::test]
async fn every_table_is_scoped_by_tenant() {
    let (_dir, root) = fresh().await;
    let rows = sqlx::query(
        "SELECT m.name AS table_name,
                SUM(CASE WHEN p.name = 'tenant_id' AND p.\"notnull\" = 1 THEN 1 ELSE 0 END) AS has_tenant,
                SUM(CASE WHEN p.name = 'tenant_id' AND p.pk = 1 THEN 1 ELSE 0 END) AS tenant_leads_pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
         GROUP BY m.name ORDER BY m.name",
    )
    .fetch_all(root.raw_pool())
    .await
    .unwrap();
    let mut tables = Vec::new();
    for row in rows {
        let name: String = row.try_get("table_name").unwrap();
        let has: i64 = row.try_get("has_tenant").unwrap();
        let leads: i64 = row.try_get("tenant_leads_pk").unwrap();
        if name == "schema_migrations" {
            assert_eq!(has, 0);
            continue;
        }
        assert_eq!(has, 1, "table {name} lacks tenant_id TEXT NOT NULL");
        assert_eq!(
            leads, 1,
            "table {name}: tenant_id must lead the primary key"
        );
        tables.push(name);
    }
    assert_eq!(
        tables,
        [
            "apps",
            "audit_events",
            "audit_head",
            "connector_reports",
            "data_keys",
            "device_posture",
            "devices",
            "dr_audit_uploads",
            "dr_transitions",
            "enrol_tokens",
            "gateway_nodes",
            "gateway_sites",
            "handoffs",
            "oidc_pending",
            "policy_docs",
            "policy_head",
            "policy_versions",
            "sessions",
            "signing_keys",
            "site_exclusions",
            "users"
        ]
    );
}

#[tokio::test]
async fn sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys() {
    let (dir, root) = fresh().await;
    let pool = root.raw_pool();
    // Check several pooled connections, not just the first.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(sync, 1, "synchronous=NORMAL");
        let busy: i64 = sqlx::query("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(busy, 5000);
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(fk, 1);
        let auto: i64 = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(
            auto, 0,
            "checkpoints run in the background, not inside commits"
        );
    }
    assert!(dir.path().join("store.db-wal").exists());
}

/// With auto-checkpoint off, only the background checkpointer keeps the WAL from growing: after
/// it ran, the next writes reuse the log from its start instead of appending to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_checkpointer_keeps_the_wal_from_growing() {
    let (dir, root) = fresh().await;
    let store = root.tenant("default");
    let wal = dir.path().join("store.db-wal");
    let write = |round: usize| {
        let store = store.clone();
        async move {
            for i in 0..200 {
                store
                    .put_key(
                        &format!("k{round}-{i}"),
                        "test",
                        "x".repeat(2000),
                        "p".into(),
                        1,
                    )
                    .await
                    .unwrap();
            }
        }
    };
    // Without checkpoints the log holds every round (about 4x the first); with them each round
    // after a checkpoint starts the log over, so it stays near one round's size.
    write(1).await;
    let first = std::fs::metadata(&wal).unwrap().len();
    for round in 2..=4 {
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        write(round).await;
    }
    let last = std::fs::metadata(&wal).unwrap().len();
    assert!(
        last < first * 5 / 2,
        "the WAL grew from {first} to {last} bytes over four rounds: nothing checkpointed it"
    );
}

#[tokio::test]
async fn open_creates_the_file_and_reopening_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    assert!(!path.exists());
    let root = StoreRoot::open(&db_url(&dir)).await.unwrap();
    assert!(path.exists());
    root.tenant(DEFAULT_TENANT)
        .create_user(
            NewUser {
                username: "kim".into(),
                display_name: "Kim".into(),
                ..NewUser::default()
            },
            1,
        )
        .await
        .unwrap();
    root.close().await;
    // An explicit mode is kept as given.
    let url = format!("{}?mode=rw", db_url(&dir));
    let root = StoreRoot::open(&url).await.unwrap();
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations")
        .fetch_one(root.raw_pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(applied, migrate::latest_version());
    assert!(
        root.tenant(DEFAULT_TENANT)
            .get_user_by_name("kim")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open(&db_url(&dir)).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(999_i64)
        .bind("from the future")
        .bind(0_i64)
        .execute(root.raw_pool())
        .await
        .unwrap();
    root.close().await;
    match StoreRoot::open(&db_url(&dir)).await {
        Err(StoreError::Incompatible(msg)) => assert!(msg.contains("999"), "{msg}"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

#[tokio::test]
async fn opening_in_a_missing_directory_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/no/such/dir/store.db", dir.path().display());
    match StoreRoot::open(&url).await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.to_string().contains("/no/such/dir/store.db"), "{e}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn in_memory_store_keeps_its_data_across_calls() {
    let root = StoreRoot::open("sqlite::memory:").await.unwrap();
    let s = root.tenant(DEFAULT_TENANT);
    let u = s
        .create_user(
            NewUser {
                username: "mem".into(),
                display_name: "Mem".into(),
                ..NewUser::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(s.get_user(&u.id).await.unwrap().unwrap().username, "mem");
    suite::audit_append_and_read(&root).await;
}

/// sqlx closes a pooled connection that fails its check on release (a query future dropped
/// half-way) and opens another: an in-memory store's data is still there, and two in-memory
/// stores never see each other's data.
#[tokio::test]
async fn in_memory_store_outlives_its_pooled_connection() {
    let root = StoreRoot::open("sqlite::memory:").await.unwrap();
    let other = StoreRoot::open("sqlite::memory:").await.unwrap();
    let s = root.tenant(DEFAULT_TENANT);
    let u = s
        .create_user(
            NewUser {
                username: "kept".into(),
                display_name: "Kept".into(),
                ..NewUser::default()
            },
            1,
        )
        .await
        .unwrap();
    root.raw_pool()
        .acquire()
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    assert_eq!(s.get_user(&u.id).await.unwrap().unwrap().username, "kept");
    let o = other.tenant(DEFAULT_TENANT);
    assert!(o.get_user(&u.id).await.unwrap().is_none());
    assert_eq!(
        named_memory_url("sqlite:kept?mode=memory"),
        "sqlite:kept?mode=memory"
    );
    assert_ne!(
        named_memory_url("sqlite::memory:"),
        named_memory_url("sqlite::memory:")
    );
}

#[tokio::test]
async fn closed_store_reports_unavailable() {
    let (_dir, root) = fresh().await;
    root.close().await;
    let err = root.ping().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)));
}

#[test]
fn sqlite_urls_get_create_mode_unless_they_name_one() {
    assert_eq!(
        with_default_mode("sqlite:///var/lib/t/store.db"),
        "sqlite:///var/lib/t/store.db?mode=rwc"
    );
    assert_eq!(
        with_default_mode("sqlite:///x.db?cache=shared"),
        "sqlite:///x.db?cache=shared&mode=rwc"
    );
    assert_eq!(
        with_default_mode("sqlite:///x.db?mode=ro"),
        "sqlite:///x.db?mode=ro"
    );
    assert_eq!(with_default_mode("sqlite::memory:"), "sqlite::memory:");
    assert_eq!(with_default_mode("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn passwords_are_redacted_from_urls() {
    assert_eq!(
        redact("postgres://tsuzuku:s3cret@db.example:5432/t?sslmode=require"),
        "postgres://tsuzuku:***@db.example:5432/t?sslmode=require"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
}

/// Architecture invariant: the store knows SQL, not HTTP, Cedar or crypto libraries.
/// The store knows SQL. Encryption at rest is done by calling `tsuzuku-keyring` (the one
/// allowed crypto-adjacent dependency): the store decides which columns are sealed and where the
/// wrapped data keys live, the keyring does all the cryptography. No cipher, hash or TLS crate
/// may be a direct dependency of the store.
#[test]
fn store_depends_on_no_http_policy_or_crypto_crates() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("[dev-dependencies]")
        .next()
        .unwrap();
    // The keyring is allowed; take it out before looking for "ring" and the like.
    assert!(deps.contains("tsuzuku-keyring"));
    let deps = deps.replace("keyring", "");
    for forbidden in [
        "aes",
        "gcm",
        "chacha",
        "zeroize",
        "hyper",
        "http",
        "reqwest",
        "cedar",
        "tsuzuku-policy",
        "tsuzuku-identity",
        "tsuzuku-gateway",
        "sha2",
        "argon2",
        "ring",
        "rustls",
        "jsonwebtoken",
    ] {
        assert!(
            !deps.contains(forbidden),
            "tsuzuku-store must not depend on {forbidden}"
        );
    }
}
