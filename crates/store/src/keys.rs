//! Signing keys (for identity assertions and the like), stored as the caller encoded them.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::crypt::open_value;
use crate::error::{StoreError, corrupt, is_unique_violation};
use tsuzuku_keyring::Keyring;

/// A stored key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub purpose: String,
    pub secret: String,
    pub public: String,
    pub created_at: i64,
}

/// The sealed column (see `crypt`).
const SECRET: &str = "signing_keys.secret_key";

fn key_from_row(
    row: &AnyRow,
    keyring: Option<&Keyring>,
    tenant: &str,
) -> Result<StoredKey, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a signing_keys row", e);
    let kid: String = row.try_get("kid").map_err(bad)?;
    let secret = open_value(
        keyring,
        SECRET,
        tenant,
        &kid,
        Some(row.try_get("secret_key").map_err(bad)?),
    )?
    .unwrap_or_default();
    Ok(StoredKey {
        kid,
        purpose: row.try_get("purpose").map_err(bad)?,
        secret,
        public: row.try_get("public_key").map_err(bad)?,
        created_at: row.try_get("created_at").map_err(bad)?,
    })
}

impl Store {
    /// Stores a key. A `kid` already used in this tenant is a [`StoreError::Conflict`].
    pub async fn put_key(
        &self,
        kid: &str,
        purpose: &str,
        secret: String,
        public: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let secret = self
            .seal_value(SECRET, kid, Some(&secret))
            .await?
            .unwrap_or_default();
        let result = sqlx::query(
            "INSERT INTO signing_keys (tenant_id, kid, purpose, secret_key, public_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&*self.tenant)
        .bind(kid)
        .bind(purpose)
        .bind(secret)
        .bind(public)
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a key with id {kid:?} already exists in tenant {:?}; use a new key id",
                self.tenant
            ))),
            Err(e) => Err(self.db(&format!("storing key {kid:?}"), e)),
        }
    }

    /// Keys for `purpose`, newest first (the first is the one to sign with; the others
    /// still verify).
    pub async fn keys(&self, purpose: &str) -> Result<Vec<StoredKey>, StoreError> {
        let keyring = self.keyring_for_read().await?;
        sqlx::query(
            "SELECT kid, purpose, secret_key, public_key, created_at FROM signing_keys
             WHERE tenant_id = $1 AND purpose = $2 ORDER BY created_at DESC, kid DESC",
        )
        .bind(&*self.tenant)
        .bind(purpose)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading {purpose:?} keys"), e))?
        .iter()
        .map(|r| key_from_row(r, keyring.as_deref(), &self.tenant))
        .collect()
    }

    /// Deletes a key (after rotation, once nothing signed with it is still valid).
    pub async fn delete_key(&self, kid: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM signing_keys WHERE tenant_id = $1 AND kid = $2")
            .bind(&*self.tenant)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(&format!("deleting key {kid:?}"), e))?
            .rows_affected();
        Ok(deleted > 0)
    }

    /// Gives a stored key another purpose, dated `now` (a prepared key becoming the active
    /// one, in one statement). `false` if no such key.
    pub async fn set_key_purpose(
        &self,
        kid: &str,
        purpose: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE signing_keys SET purpose = $3, created_at = $4
             WHERE tenant_id = $1 AND kid = $2",
        )
        .bind(&*self.tenant)
        .bind(kid)
        .bind(purpose)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(&format!("changing the purpose of key {kid:?}"), e))?
        .rows_affected();
        Ok(changed > 0)
    }

    /// The newest key of a purpose (by creation time, then key id), if any.
    pub async fn newest_key(&self, purpose: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(self
            .keys(purpose)
            .await?
            .into_iter()
            .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid))))
    }
}
