//! Gateway sites (where connectors send traffic: a name, a host name, node addresses and a
//! preference) and operators' time-limited exclusions of them. Not to be confused with the
//! store's own database sites (`sites.rs`).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt, is_foreign_key_violation, is_unique_violation};

/// A gateway site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySite {
    pub name: String,
    /// The gateways' TLS host name.
    pub host: String,
    /// Node addresses, `IP:PORT`.
    pub endpoints: Vec<String>,
    /// Lower is preferred.
    pub preference: i64,
    /// Requests per second the site's gateways can take (for load shedding); `None`: unknown,
    /// never shed.
    pub capacity_rps: Option<i64>,
    /// The customer's disaster-recovery gateway: never chosen in normal operation; connectors
    /// send critical apps there in DR mode.
    pub dr: bool,
    pub created_at: i64,
}

/// An operator's exclusion of a site until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteExclusion {
    pub site: String,
    /// Unix milliseconds; from then on the site is usable again.
    pub until_ms: i64,
    pub reason: String,
    pub created_by: String,
    pub created_at_ms: i64,
}

fn site_from_row(row: &AnyRow) -> Result<GatewaySite, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a gateway_sites row", e);
    let endpoints: String = row.try_get("endpoints_json").map_err(bad)?;
    Ok(GatewaySite {
        name: row.try_get("name").map_err(bad)?,
        host: row.try_get("host").map_err(bad)?,
        endpoints: serde_json::from_str(&endpoints)
            .map_err(|e| corrupt("a gateway_sites row's endpoints", e))?,
        preference: row.try_get("preference").map_err(bad)?,
        capacity_rps: row.try_get("capacity_rps").map_err(bad)?,
        dr: row.try_get::<i64, _>("dr").map_err(bad)? != 0,
        created_at: row.try_get("created_at").map_err(bad)?,
    })
}

fn exclusion_from_row(row: &AnyRow) -> Result<SiteExclusion, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a site_exclusions row", e);
    Ok(SiteExclusion {
        site: row.try_get("site").map_err(bad)?,
        until_ms: row.try_get("until_ms").map_err(bad)?,
        reason: row.try_get("reason").map_err(bad)?,
        created_by: row.try_get("created_by").map_err(bad)?,
        created_at_ms: row.try_get("created_at_ms").map_err(bad)?,
    })
}

impl Store {
    /// Adds a gateway site; a name already used is a [`StoreError::Conflict`].
    pub async fn add_gateway_site(&self, site: &GatewaySite) -> Result<(), StoreError> {
        let endpoints = serde_json::to_string(&site.endpoints)
            .map_err(|e| StoreError::Invalid(format!("endpoints: {e}")))?;
        match sqlx::query(
            "INSERT INTO gateway_sites
               (tenant_id, name, host, endpoints_json, preference, capacity_rps, dr, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&*self.tenant)
        .bind(&site.name)
        .bind(&site.host)
        .bind(endpoints)
        .bind(site.preference)
        .bind(site.capacity_rps)
        .bind(i64::from(site.dr))
        .bind(site.created_at)
        .execute(&self.pool)
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a gateway site named {:?} already exists; remove it first or choose another name",
                site.name
            ))),
            Err(e) => Err(self.db(&format!("adding gateway site {:?}", site.name), e)),
        }
    }

    /// Removes a site (and its exclusion). False when there was none.
    pub async fn remove_gateway_site(&self, name: &str) -> Result<bool, StoreError> {
        let what = format!("removing gateway site {name:?}");
        let mut tx = self.pool.begin().await.map_err(|e| self.db(&what, e))?;
        sqlx::query("DELETE FROM site_exclusions WHERE tenant_id = $1 AND site = $2")
            .bind(&*self.tenant)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(&what, e))?;
        let n = sqlx::query("DELETE FROM gateway_sites WHERE tenant_id = $1 AND name = $2")
            .bind(&*self.tenant)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(&what, e))?
            .rows_affected();
        tx.commit().await.map_err(|e| self.db(&what, e))?;
        Ok(n > 0)
    }

    /// Every gateway site, by preference then name.
    pub async fn list_gateway_sites(&self) -> Result<Vec<GatewaySite>, StoreError> {
        sqlx::query(
            "SELECT name, host, endpoints_json, preference, capacity_rps, dr, created_at FROM gateway_sites
             WHERE tenant_id = $1 ORDER BY preference, name",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing gateway sites", e))?
        .iter()
        .map(site_from_row)
        .collect()
    }

    /// Excludes a site until `until_ms` (replacing an earlier exclusion of it). An unknown
    /// site is [`StoreError::NotFound`].
    pub async fn exclude_gateway_site(&self, ex: &SiteExclusion) -> Result<(), StoreError> {
        match sqlx::query(
            "INSERT INTO site_exclusions (tenant_id, site, until_ms, reason, created_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, site) DO UPDATE SET
               until_ms = excluded.until_ms, reason = excluded.reason,
               created_by = excluded.created_by, created_at_ms = excluded.created_at_ms",
        )
        .bind(&*self.tenant)
        .bind(&ex.site)
        .bind(ex.until_ms)
        .bind(&ex.reason)
        .bind(&ex.created_by)
        .bind(ex.created_at_ms)
        .execute(&self.pool)
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound(format!(
                "no gateway site named {:?}; see `tsuzuku site list`",
                ex.site
            ))),
            Err(e) => Err(self.db(&format!("excluding gateway site {:?}", ex.site), e)),
        }
    }

    /// Ends a site's exclusion now. False when it had none.
    pub async fn include_gateway_site(&self, site: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM site_exclusions WHERE tenant_id = $1 AND site = $2")
                .bind(&*self.tenant)
                .bind(site)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db(&format!("ending the exclusion of {site:?}"), e))?
                .rows_affected()
                > 0,
        )
    }

    /// Exclusions that have not expired at `now_ms`, by site.
    pub async fn active_site_exclusions(
        &self,
        now_ms: i64,
    ) -> Result<Vec<SiteExclusion>, StoreError> {
        sqlx::query(
            "SELECT site, until_ms, reason, created_by, created_at_ms FROM site_exclusions
             WHERE tenant_id = $1 AND until_ms > $2 ORDER BY site",
        )
        .bind(&*self.tenant)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing site exclusions", e))?
        .iter()
        .map(exclusion_from_row)
        .collect()
    }
}
