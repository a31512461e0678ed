//! Encryption at rest (DP-3) as the store applies it: the `data_keys` table, one keyring per
//! tenant, sealing the sensitive columns on write and opening them on read. The cryptography
//! itself is `tsuzuku-keyring`'s; this module only decides where wrapped keys and sealed values
//! are stored.
//!
//! Sealed columns, each bound (AES-GCM associated data, [`tsuzuku_keyring::field`]) to its
//! column, tenant and row: `users.email`, `users.display_name`, `users.totp_secret` (row: user
//! id) and `signing_keys.secret_key` (row: key id). A value that is not in sealed form is read
//! as plaintext, so stores written before encryption keep working;
//! [`StoreRoot::seal_plaintext`] seals them.
//!
//! Without a master key ([`StoreRoot::open`] alone) values are stored as given and a sealed
//! value read back is an error ([`StoreError::NoMasterKey`]), never ciphertext shown as data.
//!
//! In memory: the master key is held by a *root* keyring that has unwrapped every data key of
//! every tenant. A tenant's keyring (whose newest data key seals that tenant's values) is built
//! from the root one on first use: its data keys are re-wrapped under a fresh random in-memory
//! key, because a keyring owns its master key and the real one cannot be copied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::Row;
use sqlx::any::AnyRow;
use tsuzuku_keyring::{Keyring, KeyringError, MasterKey, WrappedKey};

use crate::error::{StoreError, corrupt};
use crate::migrate::unix_now;
use crate::{Store, StoreRoot};

#[cfg(test)]
mod tests;

/// Shared by a [`StoreRoot`] and every [`Store`] made from it.
#[derive(Default)]
pub(crate) struct Crypt {
    state: Mutex<Option<CryptState>>,
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypt")
            .field("master_id", &self.master_id())
            .finish_non_exhaustive()
    }
}

struct CryptState {
    root: Keyring,
    tenants: HashMap<String, Arc<Keyring>>,
}

impl Crypt {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CryptState>> {
        // A panic while holding the lock cannot leave the state half-changed (every change is
        // a single assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn master_id(&self) -> Option<String> {
        self.lock().as_ref().map(|s| s.root.master_id().to_owned())
    }
}

/// One stored data key, as `tsuzuku keys status` shows it (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyInfo {
    pub id: String,
    /// Id of the master key that wrapped it.
    pub master_id: String,
    pub created_at: i64,
}

/// Encryption state of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantEncryption {
    pub tenant: String,
    /// Oldest first; the newest seals new values.
    pub data_keys: Vec<DataKeyInfo>,
    /// Stored values of the sealed columns that are in sealed form.
    pub sealed: u64,
    /// Stored values of the sealed columns that are still plaintext (written before
    /// encryption, or by a store opened without a master key).
    pub plaintext: u64,
}

/// Encryption state of the whole store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionStatus {
    /// Id of the master key the store was given, if any.
    pub master_id: Option<String>,
    /// Every tenant that has data keys or values in sealed columns, by tenant id.
    pub tenants: Vec<TenantEncryption>,
}

/// What [`StoreRoot::rotate_master_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_master_id: String,
    pub new_master_id: String,
    /// `(tenant, data key id)` of every re-wrapped data key.
    pub data_keys: Vec<(String, String)>,
}

/// `(table, column, row id column)` of every sealed column.
const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    ("users", "email", "id"),
    ("users", "display_name", "id"),
    ("users", "totp_secret", "id"),
    ("signing_keys", "secret_key", "kid"),
];

fn wrapped_from_row(row: &AnyRow) -> Result<(String, WrappedKey), StoreError> {
    let bad = |e: sqlx::Error| corrupt("a data_keys row", e);
    Ok((
        row.try_get("tenant_id").map_err(bad)?,
        WrappedKey {
            id: row.try_get("id").map_err(bad)?,
            master_id: row.try_get("master_id").map_err(bad)?,
            wrapped: row.try_get("wrapped").map_err(bad)?,
            created_at: row.try_get("created_at").map_err(bad)?,
        },
    ))
}

impl StoreRoot {
    /// [`StoreRoot::open`], then [`StoreRoot::set_master_key`].
    pub async fn open_with_master(url: &str, master: MasterKey) -> Result<StoreRoot, StoreError> {
        let root = StoreRoot::open(url).await?;
        root.set_master_key(master).await?;
        Ok(root)
    }

    /// Gives the store its master key: every data key in `data_keys` is unwrapped now, so a
    /// wrong master key fails here with [`KeyringError::WrongMasterKey`] (as
    /// [`StoreError::Keyring`]) and nothing is read or written with it. From then on this
    /// store and every [`Store`] made from it seal the sensitive columns on write; a tenant
    /// without a data key gets one on its first write.
    pub async fn set_master_key(&self, master: MasterKey) -> Result<(), StoreError> {
        let rows = self.all_data_keys().await?;
        let root = Keyring::new(master, rows.into_iter().map(|(_, w)| w).collect())?;
        *self.crypt.lock() = Some(CryptState {
            root,
            tenants: HashMap::new(),
        });
        Ok(())
    }

    /// Id of the master key given with [`StoreRoot::set_master_key`], if any.
    pub fn master_key_id(&self) -> Option<String> {
        self.crypt.master_id()
    }

    /// True when the store holds at least one data key (so its master key must not change
    /// except by [`StoreRoot::rotate_master_key`]).
    pub async fn has_data_keys(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM data_keys")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| self.db("counting data keys", e))?;
        Ok(n > 0)
    }

    async fn all_data_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, id, master_id, wrapped, created_at FROM data_keys
             ORDER BY tenant_id, created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("reading the data keys", e))?
        .iter()
        .map(wrapped_from_row)
        .collect()
    }

    /// Master-key rotation: re-wraps every data key under `new_master` and replaces the
    /// `data_keys` rows in one transaction. Sealed values are not touched. This store uses
    /// `new_master` afterwards; other running processes keep their unwrapped data keys and go
    /// on working until they are restarted with the new key.
    pub async fn rotate_master_key(&self, new_master: MasterKey) -> Result<Rotation, StoreError> {
        let what = "rotating the master key";
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        let rows: Vec<(String, WrappedKey)> = sqlx::query(
            "SELECT tenant_id, id, master_id, wrapped, created_at FROM data_keys
             ORDER BY tenant_id, created_at, id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(what, e))?
        .iter()
        .map(wrapped_from_row)
        .collect::<Result<_, _>>()?;
        let (old_master_id, rewrapped) = {
            let guard = self.crypt.lock();
            let state = guard.as_ref().ok_or_else(no_master_for_rotation)?;
            let known: HashSet<&str> = state.root.data_key_ids().collect();
            if let Some((tenant, w)) = rows.iter().find(|(_, w)| !known.contains(w.id.as_str())) {
                return Err(StoreError::Conflict(format!(
                    "data key {} of tenant {tenant:?} was created after this process loaded the data keys; \
                     run the rotation again",
                    w.id
                )));
            }
            let rewrapped: BTreeMap<String, WrappedKey> = state
                .root
                .rewrap(&new_master)?
                .into_iter()
                .map(|w| (w.id.clone(), w))
                .collect();
            (state.root.master_id().to_owned(), rewrapped)
        };
        let mut done = Vec::with_capacity(rows.len());
        for (tenant, old) in &rows {
            let new = rewrapped.get(&old.id).ok_or_else(|| {
                StoreError::Corrupt(format!("data key {} was not re-wrapped", old.id))
            })?;
            sqlx::query(
                "UPDATE data_keys SET master_id = $3, wrapped = $4 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(&old.id)
            .bind(&new.master_id)
            .bind(&new.wrapped)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(what, e))?;
            done.push((tenant.clone(), old.id.clone()));
        }
        tx.commit().await.map_err(|e| self.db(what, e))?;
        let new_master_id = new_master.id().to_owned();
        let mut guard = self.crypt.lock();
        if let Some(state) = guard.as_mut() {
            state.root.rotate_master(new_master)?;
        }
        Ok(Rotation {
            old_master_id,
            new_master_id,
            data_keys: done,
        })
    }

    /// Data keys and sealed/plaintext counts per tenant (for `tsuzuku keys status`).
    pub async fn encryption_status(&self) -> Result<EncryptionStatus, StoreError> {
        let mut tenants: BTreeMap<String, TenantEncryption> = BTreeMap::new();
        for (tenant, w) in self.all_data_keys().await? {
            tenants
                .entry(tenant.clone())
                .or_insert_with(|| TenantEncryption {
                    tenant,
                    ..TenantEncryption::default()
                })
                .data_keys
                .push(DataKeyInfo {
                    id: w.id,
                    master_id: w.master_id,
                    created_at: w.created_at,
                });
        }
        for (table, column, id_col) in SEALED_COLUMNS {
            for (tenant, _, value) in self.column_values(table, column, id_col).await? {
                let t = tenants
                    .entry(tenant.clone())
                    .or_insert_with(|| TenantEncryption {
                        tenant,
                        ..TenantEncryption::default()
                    });
                if Keyring::is_sealed(&value) {
                    t.sealed += 1;
                } else {
                    t.plaintext += 1;
                }
            }
        }
        Ok(EncryptionStatus {
            master_id: self.master_key_id(),
            tenants: tenants.into_values().collect(),
        })
    }

    /// Seals every value of the sealed columns that is still plaintext, in every tenant, and
    /// returns how many were sealed. Needs the master key. A value changed concurrently is left
    /// to the writer that changed it.
    pub async fn seal_plaintext(&self) -> Result<u64, StoreError> {
        if self.master_key_id().is_none() {
            return Err(StoreError::NoMasterKey(
                "sealing stored values needs the master key; open the store with it".into(),
            ));
        }
        let mut sealed = 0;
        for (table, column, id_col) in SEALED_COLUMNS {
            for (tenant, id, value) in self.column_values(table, column, id_col).await? {
                if Keyring::is_sealed(&value) {
                    continue;
                }
                let store = self.tenant(&tenant);
                let Some(keyring) = store.keyring_for_write().await? else {
                    continue;
                };
                let text = seal(&keyring, &format!("{table}.{column}"), &tenant, &id, &value)?;
                // Table and column names come from SEALED_COLUMNS, never from input.
                let sql = format!(
                    "UPDATE {table} SET {column} = $4 WHERE tenant_id = $1 AND {id_col} = $2 AND {column} = $3"
                );
                let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&tenant)
                    .bind(&id)
                    .bind(&value)
                    .bind(&text)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.db(&format!("sealing {table}.{column} of {id:?}"), e))?
                    .rows_affected();
                sealed += changed;
            }
        }
        Ok(sealed)
    }

    /// `(tenant, row id, value)` of every non-NULL value of a sealed column.
    async fn column_values(
        &self,
        table: &str,
        column: &str,
        id_col: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let sql = format!(
            "SELECT tenant_id, {id_col} AS row_id, {column} AS value FROM {table} WHERE {column} IS NOT NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(&format!("reading {table}.{column}"), e))?;
        rows.iter()
            .map(|r| {
                let bad = |e: sqlx::Error| corrupt(format!("a {table} row"), e);
                Ok((
                    r.try_get("tenant_id").map_err(bad)?,
                    r.try_get("row_id").map_err(bad)?,
                    r.try_get("value").map_err(bad)?,
                ))
            })
            .collect()
    }
}

fn no_master_for_rotation() -> StoreError {
    StoreError::NoMasterKey(
        "rotating the master key needs the current master key; open the store with it first".into(),
    )
}

impl Store {
    /// With a master key: makes sure the tenant has a data key (generating and storing one if
    /// not) and returns the id of the one that seals new values. Without one: `None`.
    pub async fn ensure_data_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .keyring_for_write()
            .await?
            .and_then(|k| k.active_key_id().map(str::to_owned)))
    }

    /// The tenant's keyring for sealing: `None` without a master key. A tenant without a data
    /// key gets one now (stored wrapped before anything is sealed with it).
    pub(crate) async fn keyring_for_write(&self) -> Result<Option<Arc<Keyring>>, StoreError> {
        if let Some(k) = self.cached_keyring()? {
            return Ok(k);
        }
        let mut rows = self.tenant_data_keys().await?;
        if rows.is_empty() {
            let wrapped = {
                let mut guard = self.crypt.lock();
                match guard.as_mut() {
                    Some(state) => state.root.generate_data_key(unix_now())?,
                    None => return Ok(None),
                }
            };
            sqlx::query(
                "INSERT INTO data_keys (tenant_id, id, master_id, wrapped, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&*self.tenant)
            .bind(&wrapped.id)
            .bind(&wrapped.master_id)
            .bind(&wrapped.wrapped)
            .bind(wrapped.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db("storing a new data key", e))?;
            tracing::info!(tenant = %self.tenant, data_key = %wrapped.id, "generated a data key");
            // Read back: a concurrent first write of this tenant may have added its own.
            rows = self.tenant_data_keys().await?;
        }
        self.build_keyring(rows)
    }

    /// The tenant's keyring for opening: `None` without a master key or when the tenant has no
    /// data key yet (then nothing of it is sealed). Never writes, so reads work on a standby.
    pub(crate) async fn keyring_for_read(&self) -> Result<Option<Arc<Keyring>>, StoreError> {
        if let Some(k) = self.cached_keyring()? {
            return Ok(k);
        }
        let rows = self.tenant_data_keys().await?;
        if rows.is_empty() {
            return Ok(None);
        }
        self.build_keyring(rows)
    }

    /// `Some(None)`: no master key; `Some(Some(k))`: cached; `None`: build it.
    #[allow(clippy::type_complexity)]
    fn cached_keyring(&self) -> Result<Option<Option<Arc<Keyring>>>, StoreError> {
        let guard = self.crypt.lock();
        Ok(match guard.as_ref() {
            None => Some(None),
            Some(state) => state
                .tenants
                .get(&*self.tenant)
                .map(|k| Some(Arc::clone(k))),
        })
    }

    async fn tenant_data_keys(&self) -> Result<Vec<WrappedKey>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, id, master_id, wrapped, created_at FROM data_keys
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("reading the tenant's data keys", e))?
        .iter()
        .map(|r| wrapped_from_row(r).map(|(_, w)| w))
        .collect()
    }

    fn build_keyring(&self, rows: Vec<WrappedKey>) -> Result<Option<Arc<Keyring>>, StoreError> {
        let mut guard = self.crypt.lock();
        let Some(state) = guard.as_mut() else {
            return Ok(None);
        };
        let known: HashSet<&str> = state.root.data_key_ids().collect();
        if let Some(w) = rows.iter().find(|w| !known.contains(w.id.as_str())) {
            if w.master_id != state.root.master_id() {
                // Say which master key it needs, as at open.
                return Err(KeyringError::WrongMasterKey {
                    origin: state.root_origin(),
                    master_id: state.root.master_id().to_owned(),
                    data_keys: vec![w.id.clone()],
                    wrapped_by: vec![w.master_id.clone()],
                }
                .into());
            }
            return Err(StoreError::Unavailable(format!(
                "data key {} of tenant {:?} was created by another process after this one loaded the data keys; \
                 restart this process to load it",
                w.id, self.tenant
            )));
        }
        let ids: HashSet<&str> = rows.iter().map(|w| w.id.as_str()).collect();
        // The tenant's keyring owns a fresh in-memory key wrapping only its data keys.
        let session = MasterKey::generate()?;
        let mine: Vec<WrappedKey> = state
            .root
            .rewrap(&session)?
            .into_iter()
            .filter(|w| ids.contains(w.id.as_str()))
            .collect();
        let keyring = Arc::new(Keyring::new(session, mine)?);
        state
            .tenants
            .insert(self.tenant.to_string(), Arc::clone(&keyring));
        Ok(Some(keyring))
    }

    /// Seals `value` for `column` (`table.column`) of row `row`, if the store has a master key.
    pub(crate) async fn seal_value(
        &self,
        column: &str,
        row: &str,
        value: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let Some(value) = value else {
            return Ok(None);
        };
        match self.keyring_for_write().await? {
            Some(k) => seal(&k, column, &self.tenant, row, value).map(Some),
            None => Ok(Some(value.to_owned())),
        }
    }
}

impl CryptState {
    fn root_origin(&self) -> String {
        format!(
            "the master key given to the store (id {})",
            self.root.master_id()
        )
    }
}

fn seal(
    keyring: &Keyring,
    column: &str,
    tenant: &str,
    row: &str,
    value: &str,
) -> Result<String, StoreError> {
    Ok(keyring.seal(
        &tsuzuku_keyring::field(column, tenant, row),
        value.as_bytes(),
    )?)
}

/// Opens a stored value of `column` (`table.column`) of row `row`: sealed values are
/// decrypted (any failure is an error, never the ciphertext), others returned as they are.
pub(crate) fn open_value(
    keyring: Option<&Keyring>,
    column: &str,
    tenant: &str,
    row: &str,
    stored: Option<String>,
) -> Result<Option<String>, StoreError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    if !Keyring::is_sealed(&stored) {
        return Ok(Some(stored));
    }
    let Some(keyring) = keyring else {
        return Err(StoreError::NoMasterKey(format!(
            "{column} of {row:?} in tenant {tenant:?} is encrypted, but the store was opened without \
             the master key (or the tenant has no data keys); configure [keys] in tsuzuku.toml"
        )));
    };
    let plain = keyring.open(&tsuzuku_keyring::field(column, tenant, row), &stored)?;
    std::str::from_utf8(&plain)
        .map(str::to_owned)
        .map_err(|_| {
            StoreError::Corrupt(format!(
                "{column} of {row:?} in tenant {tenant:?} decrypts to bytes that are not UTF-8"
            ))
        })
        .map(Some)
}
