//! Gateway nodes and connectors as the control plane last heard from them: which snapshot each
//! gateway uses and when it last asked for a newer one, and which site each connector uses
//! with what latency (experience monitoring, for `tsuzuku status`).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt};

/// One node's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node_id: String,
    /// `gateway`, `dr-gateway`, ...
    pub role: String,
    /// The snapshot version in use, if it has one.
    pub snapshot_version: Option<i64>,
    /// When that snapshot was issued (Unix ms).
    pub snapshot_issued_ms: Option<i64>,
    /// When the report arrived (Unix ms).
    pub last_seen_ms: i64,
}

fn node_from_row(row: &AnyRow) -> Result<NodeReport, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a gateway_nodes row", e);
    Ok(NodeReport {
        node_id: row.try_get("node_id").map_err(bad)?,
        role: row.try_get("role").map_err(bad)?,
        snapshot_version: row.try_get("snapshot_version").map_err(bad)?,
        snapshot_issued_ms: row.try_get("snapshot_issued_ms").map_err(bad)?,
        last_seen_ms: row.try_get("last_seen_ms").map_err(bad)?,
    })
}

impl Store {
    /// Records (or replaces) a node's report.
    pub async fn report_node(&self, r: &NodeReport) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateway_nodes
               (tenant_id, node_id, role, snapshot_version, snapshot_issued_ms, last_seen_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, node_id) DO UPDATE SET
               role = excluded.role,
               snapshot_version = excluded.snapshot_version,
               snapshot_issued_ms = excluded.snapshot_issued_ms,
               last_seen_ms = excluded.last_seen_ms",
        )
        .bind(&*self.tenant)
        .bind(&r.node_id)
        .bind(&r.role)
        .bind(r.snapshot_version)
        .bind(r.snapshot_issued_ms)
        .bind(r.last_seen_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(&format!("recording node {:?}", r.node_id), e))?;
        Ok(())
    }

    /// Every node of this tenant, by id.
    pub async fn list_nodes(&self) -> Result<Vec<NodeReport>, StoreError> {
        sqlx::query(
            "SELECT node_id, role, snapshot_version, snapshot_issued_ms, last_seen_ms
             FROM gateway_nodes WHERE tenant_id = $1 ORDER BY node_id",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing gateway nodes", e))?
        .iter()
        .map(node_from_row)
        .collect()
    }
}

/// A connector's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorReport {
    pub device: String,
    /// The site in use, if any.
    pub site: Option<String>,
    /// Smoothed latency to that site.
    pub latency_ms: Option<i64>,
    /// Probe loss to that site, percent.
    pub loss_pct: Option<i64>,
    /// Site switches since the connector started.
    pub switches: i64,
    pub reported_ms: i64,
}

fn report_from_row(row: &AnyRow) -> Result<ConnectorReport, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a connector_reports row", e);
    Ok(ConnectorReport {
        device: row.try_get("device").map_err(bad)?,
        site: row.try_get("site").map_err(bad)?,
        latency_ms: row.try_get("latency_ms").map_err(bad)?,
        loss_pct: row.try_get("loss_pct").map_err(bad)?,
        switches: row.try_get("switches").map_err(bad)?,
        reported_ms: row.try_get("reported_ms").map_err(bad)?,
    })
}

impl Store {
    /// Records (or replaces) a connector's report.
    pub async fn report_connector(&self, r: &ConnectorReport) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connector_reports
               (tenant_id, device, site, latency_ms, loss_pct, switches, reported_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, device) DO UPDATE SET
               site = excluded.site, latency_ms = excluded.latency_ms,
               loss_pct = excluded.loss_pct, switches = excluded.switches,
               reported_ms = excluded.reported_ms",
        )
        .bind(&*self.tenant)
        .bind(&r.device)
        .bind(r.site.as_deref())
        .bind(r.latency_ms)
        .bind(r.loss_pct)
        .bind(r.switches)
        .bind(r.reported_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(&format!("recording connector {:?}", r.device), e))?;
        Ok(())
    }

    /// Connectors that reported at or after `since_ms`, by device.
    pub async fn connector_reports(
        &self,
        since_ms: i64,
    ) -> Result<Vec<ConnectorReport>, StoreError> {
        sqlx::query(
            "SELECT device, site, latency_ms, loss_pct, switches, reported_ms
             FROM connector_reports WHERE tenant_id = $1 AND reported_ms >= $2 ORDER BY device",
        )
        .bind(&*self.tenant)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing connector reports", e))?
        .iter()
        .map(report_from_row)
        .collect()
    }
}
