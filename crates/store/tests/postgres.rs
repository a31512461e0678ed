#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The storage suite against a real PostgreSQL primary (the same checks the SQLite tests run),
//! plus what is specific to PostgreSQL: concurrent first opens racing through the migrations,
//! the schema's tenant scoping, the role, and the fencing rule of promotion. One server for
//! the file: one test starts it and runs the checks in turn (each works in fresh tenants).

use std::time::Duration;

use sqlx::Row;
use tsuzuku_store::{SiteOptions, StoreError, StoreRole, StoreRoot, suite};
use tsuzuku_testkit::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_storage_suite_and_its_own_checks() {
    let pg = PgCluster::start_primary()
        .await
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = pg.url();
    // Three openers race through the migrations of the fresh database.
    let (a, b, c) = tokio::join!(
        StoreRoot::open(&url),
        StoreRoot::open(&url),
        StoreRoot::open(&url)
    );
    let (root, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    b.close().await;
    c.close().await;

    suite::run_all(&url).await;
    migrations_ran_once_and_every_table_is_scoped_by_tenant(&root).await;
    a_writable_primary_is_reported_and_promotion_is_refused_while_it_answers(&root, &url).await;
    root.close().await;
}

async fn migrations_ran_once_and_every_table_is_scoped_by_tenant(root: &StoreRoot) {
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations")
        .fetch_one(root.raw_pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(
        applied,
        tsuzuku_store::latest_schema_version(),
        "one row per migration, however many opened at once"
    );
    let rows = sqlx::query(
        "SELECT CAST(t.table_name AS TEXT) AS table_name,
            (SELECT CAST(c.is_nullable AS TEXT) FROM information_schema.columns c
              WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
                AND c.column_name = 'tenant_id') AS nullable,
            (SELECT CAST(k.column_name AS TEXT) FROM information_schema.table_constraints tc
               JOIN information_schema.key_column_usage k
                 ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
                AND k.table_name = tc.table_name
              WHERE tc.table_schema = t.table_schema AND tc.table_name = t.table_name
                AND tc.constraint_type = 'PRIMARY KEY' AND k.ordinal_position = 1) AS pk_first
         FROM information_schema.tables t WHERE t.table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(root.raw_pool())
    .await
    .unwrap();
    let mut tables = Vec::new();
    for row in rows {
        let name: String = row.try_get("table_name").unwrap();
        let nullable: Option<String> = row.try_get("nullable").unwrap();
        let pk_first: Option<String> = row.try_get("pk_first").unwrap();
        if name == "schema_migrations" {
            assert_eq!(nullable, None);
            continue;
        }
        assert_eq!(
            nullable.as_deref(),
            Some("NO"),
            "{name}.tenant_id must be NOT NULL"
        );
        assert_eq!(
            pk_first.as_deref(),
            Some("tenant_id"),
            "{name}: tenant_id must lead the primary key"
        );
        tables.push(name);
    }
    // Every table but schema_migrations (checked above to have tenant_id first).
    assert_eq!(tables.len(), 21, "{tables:?}");
}

async fn a_writable_primary_is_reported_and_promotion_is_refused_while_it_answers(
    root: &StoreRoot,
    url: &str,
) {
    assert_eq!(
        root.role(),
        StoreRole::Primary {
            server: url.to_owned()
        }
    );
    match root.promote().await {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains(url), "{msg}");
            assert!(msg.contains("two writable primaries"), "{msg}");
        }
        other => panic!("expected the fencing rule to refuse, got {other:?}"),
    }
    assert!(root.role().is_writable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_and_bad_urls_are_clear_errors() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://tsuzuku:s3cret@127.0.0.1:{port}/tsuzuku");
    let options = SiteOptions {
        probe_timeout: Duration::from_millis(500),
        ..SiteOptions::default()
    };
    match StoreRoot::open_sites_with(&[dead], options).await {
        Err(e @ StoreError::Unavailable(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
            assert!(!msg.contains("s3cret"), "password leaked: {msg}");
            assert!(e.is_transient());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        StoreRoot::open_sites(&[]).await,
        Err(StoreError::Invalid(_))
    ));
    match StoreRoot::open_sites(&["sqlite:///tmp/x.db".into()]).await {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("postgres://"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
