#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Encryption at rest on a real PostgreSQL server: the `data_keys` migration, sealed raw rows,
//! reading back, a wrong master key at open, and master-key rotation (the SQLite checks are in
//! `src/crypt/tests.rs`).

use sqlx::Row;
use tsuzuku_keyring::{Keyring, KeyringError, MasterKey};
use tsuzuku_store::{DEFAULT_TENANT, NewUser, StoreError, StoreRoot};
use tsuzuku_testkit::postgres::PgCluster;

fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_sealed_values_and_rotates_the_master_key() {
    let pg = PgCluster::start_primary()
        .await
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = pg.url();
    let root = StoreRoot::open_with_master(&url, key(1)).await.unwrap();
    let s = root.tenant(DEFAULT_TENANT);
    let u = s
        .create_user(
            NewUser {
                username: "kim".into(),
                display_name: "Kim Private".into(),
                email: Some("kim@example.org".into()),
                totp_secret: Some("TOTPSECRETPG".into()),
                ..NewUser::default()
            },
            1,
        )
        .await
        .unwrap();
    s.put_key("k1", "assertion", "pg-secret-key".into(), "pub".into(), 1)
        .await
        .unwrap();
    let row = sqlx::query("SELECT email, display_name, totp_secret FROM users WHERE id = $1")
        .bind(&u.id)
        .fetch_one(root.raw_pool())
        .await
        .unwrap();
    for col in ["email", "display_name", "totp_secret"] {
        let v: String = row.try_get(col).unwrap();
        assert!(Keyring::is_sealed(&v), "{col}: {v}");
        assert!(!v.contains("kim") && !v.contains("TOTPSECRET"), "{v}");
    }
    root.rotate_master_key(key(2)).await.unwrap();
    root.close().await;

    let err = StoreRoot::open_with_master(&url, key(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Keyring(KeyringError::WrongMasterKey { .. })
        ),
        "{err}"
    );
    let root = StoreRoot::open_with_master(&url, key(2)).await.unwrap();
    let s = root.tenant(DEFAULT_TENANT);
    let back = s.get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(back.email.as_deref(), Some("kim@example.org"));
    assert_eq!(back.display_name, "Kim Private");
    assert_eq!(back.totp_secret.as_deref(), Some("TOTPSECRETPG"));
    assert_eq!(
        s.keys("assertion").await.unwrap()[0].secret,
        "pg-secret-key"
    );
    root.close().await;
}
