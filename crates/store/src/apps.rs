//! Applications: private web apps reachable through the gateway, each under its own host name.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt, is_unique_violation};

/// A private application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub name: String,
    /// Lowercase host name users reach it under, possibly with `:port`.
    pub host: String,
    /// Where the gateway forwards to, e.g. `http://10.0.0.5:8080`.
    pub upstream: String,
    /// Data classification used by policies (e.g. `public`, `internal`, `confidential`).
    pub data_class: String,
    /// Stays reachable through the DR gateway in DR mode (RS-7).
    pub critical: bool,
    /// Runs isolated from the device (virtual desktop, remote browser): policies may let
    /// unmanaged devices use only such apps (ZT-7).
    pub isolated: bool,
    pub created_at: i64,
}

/// What it takes to create an app. `host` is lowercased and trimmed on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewApp {
    pub name: String,
    pub host: String,
    pub upstream: String,
    pub data_class: String,
    pub critical: bool,
    pub isolated: bool,
}

macro_rules! app_cols {
    () => {
        "id, name, host, upstream, data_class, critical, isolated, created_at"
    };
}

fn app_from_row(row: &AnyRow) -> Result<App, StoreError> {
    let id: String = row.try_get("id").map_err(|e| corrupt("an apps row", e))?;
    let bad = |e: sqlx::Error| corrupt(format!("app {id}"), e);
    Ok(App {
        name: row.try_get("name").map_err(bad)?,
        host: row.try_get("host").map_err(bad)?,
        upstream: row.try_get("upstream").map_err(bad)?,
        data_class: row.try_get("data_class").map_err(bad)?,
        critical: row.try_get::<i64, _>("critical").map_err(bad)? != 0,
        isolated: row.try_get::<i64, _>("isolated").map_err(bad)? != 0,
        created_at: row.try_get("created_at").map_err(bad)?,
        id,
    })
}

impl Store {
    /// Creates an app. A name or host already used in this tenant is a
    /// [`StoreError::Conflict`] naming which.
    pub async fn create_app(&self, new: NewApp, now: i64) -> Result<App, StoreError> {
        let host = new.host.trim().to_ascii_lowercase();
        if new.name.trim().is_empty() {
            return Err(StoreError::Invalid(
                "app name is empty; name the app".into(),
            ));
        }
        if host.is_empty() {
            return Err(StoreError::Invalid(format!(
                "app {:?} has an empty host; give the host name users reach it under",
                new.name
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let result = sqlx::query(
            "INSERT INTO apps (tenant_id, id, name, host, upstream, data_class, critical, isolated, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&*self.tenant)
        .bind(&id)
        .bind(&new.name)
        .bind(&host)
        .bind(&new.upstream)
        .bind(&new.data_class)
        .bind(i64::from(new.critical))
        .bind(i64::from(new.isolated))
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(App {
                id,
                name: new.name,
                host,
                upstream: new.upstream,
                data_class: new.data_class,
                critical: new.critical,
                isolated: new.isolated,
                created_at: now,
            }),
            Err(e) if is_unique_violation(&e) => {
                if self.get_app_by_name(&new.name).await?.is_some() {
                    Err(StoreError::Conflict(format!(
                        "an app named {:?} already exists in tenant {:?}; choose another name",
                        new.name, self.tenant
                    )))
                } else {
                    let owner = self
                        .get_app_by_host(&host)
                        .await?
                        .map_or_else(|| "another app".to_owned(), |a| format!("app {:?}", a.name));
                    Err(StoreError::Conflict(format!(
                        "host {host:?} is already used by {owner} in tenant {:?}; each app needs its own host",
                        self.tenant
                    )))
                }
            }
            Err(e) => Err(self.db(&format!("creating app {:?}", new.name), e)),
        }
    }

    /// All apps of the tenant, by name.
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            app_cols!(),
            " FROM apps WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing apps", e))?
        .iter()
        .map(app_from_row)
        .collect()
    }

    pub async fn get_app_by_name(&self, name: &str) -> Result<Option<App>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            app_cols!(),
            " FROM apps WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(&*self.tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading app {name:?}"), e))?
        .as_ref()
        .map(app_from_row)
        .transpose()
    }

    /// The app served under `host` (compared lowercase).
    pub async fn get_app_by_host(&self, host: &str) -> Result<Option<App>, StoreError> {
        let host = host.trim().to_ascii_lowercase();
        sqlx::query(concat!(
            "SELECT ",
            app_cols!(),
            " FROM apps WHERE tenant_id = $1 AND host = $2"
        ))
        .bind(&*self.tenant)
        .bind(&host)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading the app of host {host:?}"), e))?
        .as_ref()
        .map(app_from_row)
        .transpose()
    }

    /// Deletes the app named `name`; false if there was none.
    pub async fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM apps WHERE tenant_id = $1 AND name = $2")
            .bind(&*self.tenant)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(&format!("deleting app {name:?}"), e))?
            .rows_affected();
        Ok(deleted > 0)
    }
}
