#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Encryption at rest: what the raw rows hold, reading back, wrong keys, rotation, plaintext
//! from before encryption, and the whole storage suite on an encrypted store.

use sqlx::Row;
use tempfile::TempDir;
use tsuzuku_keyring::{Keyring, KeyringError, MasterKey};

use crate::{DEFAULT_TENANT, NewUser, StoreError, StoreRoot, suite};

const EMAIL: &str = "kim.secret@example.org";
const NAME: &str = "Kim Plaintext-Name";
const TOTP: &str = "JBSWY3DPEHPK3PXPSECRETTOTP";
const KEY_SECRET: &str = "-----PRIVATE ed25519 very secret-----";

fn url(dir: &TempDir) -> String {
    format!("sqlite://{}/store.db", dir.path().display())
}

fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

async fn add_kim(root: &StoreRoot) -> String {
    let s = root.tenant(DEFAULT_TENANT);
    let u = s
        .create_user(
            NewUser {
                username: "kim".into(),
                display_name: NAME.into(),
                email: Some(EMAIL.into()),
                password_hash: Some("$argon2id$hash".into()),
                totp_secret: Some(TOTP.into()),
                groups: vec!["staff".into()],
            },
            1,
        )
        .await
        .unwrap();
    s.put_key("k1", "assertion", KEY_SECRET.into(), "public".into(), 2)
        .await
        .unwrap();
    u.id
}

/// Every stored value of the sealed columns, raw.
async fn raw_values(root: &StoreRoot) -> Vec<String> {
    let mut out = Vec::new();
    for row in sqlx::query("SELECT email, display_name, totp_secret FROM users")
        .fetch_all(root.raw_pool())
        .await
        .unwrap()
    {
        for col in ["email", "display_name", "totp_secret"] {
            if let Some(v) = row.try_get::<Option<String>, _>(col).unwrap() {
                out.push(v);
            }
        }
    }
    for row in sqlx::query("SELECT secret_key FROM signing_keys")
        .fetch_all(root.raw_pool())
        .await
        .unwrap()
    {
        out.push(row.try_get("secret_key").unwrap());
    }
    out
}

async fn assert_kim_reads_back(root: &StoreRoot, id: &str) {
    let s = root.tenant(DEFAULT_TENANT);
    let u = s.get_user(id).await.unwrap().unwrap();
    assert_eq!(u.email.as_deref(), Some(EMAIL));
    assert_eq!(u.display_name, NAME);
    assert_eq!(u.totp_secret.as_deref(), Some(TOTP));
    assert_eq!(u.password_hash.as_deref(), Some("$argon2id$hash"));
    let by_name = s.get_user_by_name("kim").await.unwrap().unwrap();
    assert_eq!(by_name, u);
    assert_eq!(s.list_users().await.unwrap(), vec![u]);
    assert_eq!(s.keys("assertion").await.unwrap()[0].secret, KEY_SECRET);
}

#[tokio::test]
async fn raw_rows_hold_no_plaintext_and_the_store_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    let id = add_kim(&root).await;
    let raw = raw_values(&root).await;
    assert_eq!(raw.len(), 4);
    for v in &raw {
        assert!(Keyring::is_sealed(v), "not sealed: {v}");
        for plain in [EMAIL, NAME, TOTP, KEY_SECRET, "kim.secret", "SECRETTOTP"] {
            assert!(!v.contains(plain), "{plain} visible in {v}");
        }
    }
    // The data key is stored wrapped, naming the master key.
    let row = sqlx::query("SELECT tenant_id, master_id, wrapped FROM data_keys")
        .fetch_one(root.raw_pool())
        .await
        .unwrap();
    assert_eq!(
        row.try_get::<String, _>("tenant_id").unwrap(),
        DEFAULT_TENANT
    );
    assert_eq!(row.try_get::<String, _>("master_id").unwrap(), key(1).id());
    assert!(
        row.try_get::<String, _>("wrapped")
            .unwrap()
            .starts_with("tzk1:")
    );
    assert_kim_reads_back(&root, &id).await;
    root.close().await;
    // Reopened with the same key: still readable.
    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    assert_kim_reads_back(&root, &id).await;
    let status = root.encryption_status().await.unwrap();
    assert_eq!(status.master_id.as_deref(), Some(key(1).id()));
    assert_eq!(status.tenants.len(), 1);
    assert_eq!(status.tenants[0].sealed, 4);
    assert_eq!(status.tenants[0].plaintext, 0);
    assert_eq!(status.tenants[0].data_keys.len(), 1);
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    let kim = add_kim(&root).await;
    let s = root.tenant(DEFAULT_TENANT);
    let lee = s
        .create_user(
            NewUser {
                username: "lee".into(),
                display_name: "Lee".into(),
                ..NewUser::default()
            },
            1,
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE users SET totp_secret = (SELECT totp_secret FROM users WHERE id = $1) WHERE id = $2",
    )
    .bind(&kim)
    .bind(&lee.id)
    .execute(root.raw_pool())
    .await
    .unwrap();
    let err = s.get_user(&lee.id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Keyring(KeyringError::Unauthentic { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_master_key_fails_at_open_and_no_key_cannot_read_sealed_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    let id = add_kim(&root).await;
    root.close().await;
    let err = StoreRoot::open_with_master(&url(&dir), key(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Keyring(KeyringError::WrongMasterKey { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(key(1).id()), "names the key it needs: {msg}");
    assert!(msg.contains(key(2).id()), "names the key it has: {msg}");
    // Without a master key the store opens, but a sealed value is an error, not ciphertext.
    let plain = StoreRoot::open(&url(&dir)).await.unwrap();
    let err = plain
        .tenant(DEFAULT_TENANT)
        .get_user(&id)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoMasterKey(_)), "{err}");
}

#[tokio::test]
async fn rotation_rewraps_and_only_the_new_key_opens_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    let id = add_kim(&root).await;
    root.tenant("other")
        .put_key("o1", "assertion", "other-secret".into(), "p".into(), 1)
        .await
        .unwrap();
    let before = raw_values(&root).await;
    let rotation = root.rotate_master_key(key(3)).await.unwrap();
    assert_eq!(rotation.old_master_id, key(1).id());
    assert_eq!(rotation.new_master_id, key(3).id());
    assert_eq!(rotation.data_keys.len(), 2, "{rotation:?}");
    // The sealed values are untouched; this store keeps working and seals with the new key.
    assert_eq!(raw_values(&root).await, before);
    assert_kim_reads_back(&root, &id).await;
    root.tenant("third")
        .put_key("t1", "assertion", "third".into(), "p".into(), 1)
        .await
        .unwrap();
    root.close().await;

    let err = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Keyring(KeyringError::WrongMasterKey { .. })
        ),
        "{err}"
    );
    let root = StoreRoot::open_with_master(&url(&dir), key(3))
        .await
        .unwrap();
    assert_kim_reads_back(&root, &id).await;
    assert_eq!(
        root.tenant("third").keys("assertion").await.unwrap()[0].secret,
        "third"
    );
    let status = root.encryption_status().await.unwrap();
    assert!(
        status
            .tenants
            .iter()
            .flat_map(|t| &t.data_keys)
            .all(|k| k.master_id == key(3).id())
    );
}

#[tokio::test]
async fn plaintext_from_before_encryption_reads_and_can_be_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = StoreRoot::open(&url(&dir)).await.unwrap();
    let id = add_kim(&plain).await;
    assert_eq!(
        raw_values(&plain)
            .await
            .iter()
            .filter(|v| Keyring::is_sealed(v))
            .count(),
        0,
        "without a master key values are stored as given"
    );
    plain.close().await;

    let root = StoreRoot::open_with_master(&url(&dir), key(1))
        .await
        .unwrap();
    assert_kim_reads_back(&root, &id).await;
    let status = root.encryption_status().await.unwrap();
    assert_eq!(
        (status.tenants[0].sealed, status.tenants[0].plaintext),
        (0, 4)
    );
    assert_eq!(root.seal_plaintext().await.unwrap(), 4);
    assert!(
        raw_values(&root)
            .await
            .iter()
            .all(|v| Keyring::is_sealed(v))
    );
    assert_kim_reads_back(&root, &id).await;
    assert_eq!(root.seal_plaintext().await.unwrap(), 0);
    // A new TOTP secret is sealed too.
    let s = root.tenant(DEFAULT_TENANT);
    s.set_totp_secret(&id, Some("NEWTOTPSECRET".into()))
        .await
        .unwrap();
    assert!(
        raw_values(&root)
            .await
            .iter()
            .all(|v| Keyring::is_sealed(v))
    );
    assert_eq!(
        s.get_user(&id)
            .await
            .unwrap()
            .unwrap()
            .totp_secret
            .as_deref(),
        Some("NEWTOTPSECRET")
    );
}

async fn fresh_encrypted() -> (TempDir, StoreRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = StoreRoot::open_with_master(&url(&dir), key(9))
        .await
        .unwrap();
    (dir, root)
}

macro_rules! encrypted_suite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, root) = fresh_encrypted().await;
            suite::$name(&root).await;
        }
    )*};
}

mod encrypted_storage_suite {
    use super::*;

    encrypted_suite!(
        users_crud,
        user_conflicts,
        login_failures_and_lockout,
        totp_step_replay_guard,
        oidc_users,
        signing_keys,
        tenant_isolation,
    );
}
