//! Device trust: enrolled devices (their certificate fingerprint and public key), one-time
//! enrolment tokens (stored as SHA-256 hex, taken with one `DELETE … RETURNING` so each works
//! once), and each device's latest signed posture report.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt, is_unique_violation};

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    pub id: String,
    /// Name given at enrolment (host name by default).
    pub name: String,
    /// SHA-256 hex of its certificate (what the gateway sees in mutual TLS).
    pub fingerprint: String,
    /// Base64 of its public key (uncompressed P-256 point): verifies its posture reports.
    pub public_key: String,
    /// Enrolled with a token marked company-issued.
    pub company_issued: bool,
    pub enrolled_at: i64,
    /// When its certificate expires (Unix seconds).
    pub not_after: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The user it belongs to (enrolled with a token issued for that user), if any: such a
    /// device can sign its user in where device sign-in is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// What a spent enrolment token grants the device enrolled with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolGrant {
    pub company_issued: bool,
    /// The user the device will belong to.
    pub user_id: Option<String>,
}

/// A device's latest posture report as received (the signed JSON, verified again on use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPosture {
    pub device_id: String,
    pub report: String,
    pub collected_at: i64,
    pub received_ms: i64,
}

fn device_from_row(row: &AnyRow) -> Result<Device, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a devices row", e);
    Ok(Device {
        id: row.try_get("id").map_err(bad)?,
        name: row.try_get("name").map_err(bad)?,
        fingerprint: row.try_get("fingerprint").map_err(bad)?,
        public_key: row.try_get("public_key").map_err(bad)?,
        company_issued: row.try_get::<i64, _>("company_issued").map_err(bad)? != 0,
        enrolled_at: row.try_get("enrolled_at").map_err(bad)?,
        not_after: row.try_get("not_after").map_err(bad)?,
        revoked_at: row.try_get("revoked_at").map_err(bad)?,
        user_id: row.try_get("user_id").map_err(bad)?,
    })
}

impl Store {
    /// Stores a one-time enrolment token (its SHA-256 hex), valid until `expires_at`; with
    /// `user_id`, the device enrolled with it belongs to that user.
    pub async fn create_enrol_token(
        &self,
        token_hash: &str,
        company_issued: bool,
        user_id: Option<&str>,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrol_tokens
               (tenant_id, token_hash, company_issued, user_id, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&*self.tenant)
        .bind(token_hash)
        .bind(i64::from(company_issued))
        .bind(user_id)
        .bind(created_by)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db("creating an enrolment token", e))?;
        Ok(())
    }

    /// Spends an enrolment token: deletes it and says what it grants. `None` if unknown,
    /// already used, or expired at `now`.
    pub async fn take_enrol_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<EnrolGrant>, StoreError> {
        let Some(row) = sqlx::query(
            "DELETE FROM enrol_tokens WHERE tenant_id = $1 AND token_hash = $2
             RETURNING company_issued, user_id, expires_at",
        )
        .bind(&*self.tenant)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db("spending an enrolment token", e))?
        else {
            return Ok(None);
        };
        let bad = |e: sqlx::Error| corrupt("an enrol_tokens row", e);
        let company: i64 = row.try_get("company_issued").map_err(bad)?;
        let user_id: Option<String> = row.try_get("user_id").map_err(bad)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(bad)?;
        Ok((expires_at > now).then_some(EnrolGrant {
            company_issued: company != 0,
            user_id,
        }))
    }

    /// Records an enrolled device. A fingerprint or id already stored is a conflict.
    pub async fn add_device(&self, d: &Device) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO devices (tenant_id, id, name, fingerprint, public_key, company_issued,
                enrolled_at, not_after, revoked_at, user_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&*self.tenant)
        .bind(&d.id)
        .bind(&d.name)
        .bind(&d.fingerprint)
        .bind(&d.public_key)
        .bind(i64::from(d.company_issued))
        .bind(d.enrolled_at)
        .bind(d.not_after)
        .bind(d.revoked_at)
        .bind(d.user_id.as_deref())
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "device {:?} or its certificate is already enrolled",
                d.id
            ))),
            Err(e) => Err(self.db(&format!("enrolling device {:?}", d.id), e)),
        }
    }

    /// Every enrolled device of this tenant (revoked ones too), by enrolment time.
    pub async fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        sqlx::query(
            "SELECT id, name, fingerprint, public_key, company_issued, enrolled_at, not_after,
                    revoked_at, user_id
             FROM devices WHERE tenant_id = $1 ORDER BY enrolled_at, id",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing devices", e))?
        .iter()
        .map(device_from_row)
        .collect()
    }

    /// Revokes a device (by id or name) at `now`; `false` if no such device or already revoked.
    pub async fn revoke_device(&self, id_or_name: &str, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET revoked_at = $3
             WHERE tenant_id = $1 AND (id = $2 OR name = $2) AND revoked_at IS NULL",
        )
        .bind(&*self.tenant)
        .bind(id_or_name)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(&format!("revoking device {id_or_name:?}"), e))?;
        Ok(r.rows_affected() > 0)
    }

    /// Keeps a device's posture report if it is newer than the one stored.
    pub async fn put_posture(&self, p: &StoredPosture) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_posture (tenant_id, device_id, report, collected_at, received_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, device_id) DO UPDATE SET
               report = excluded.report,
               collected_at = excluded.collected_at,
               received_ms = excluded.received_ms
             WHERE device_posture.collected_at <= excluded.collected_at",
        )
        .bind(&*self.tenant)
        .bind(&p.device_id)
        .bind(&p.report)
        .bind(p.collected_at)
        .bind(p.received_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            self.db(
                &format!("storing the posture of device {:?}", p.device_id),
                e,
            )
        })?;
        Ok(())
    }

    /// A device's latest posture report.
    pub async fn get_posture(&self, device_id: &str) -> Result<Option<StoredPosture>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT device_id, report, collected_at, received_ms FROM device_posture
             WHERE tenant_id = $1 AND device_id = $2",
        )
        .bind(&*self.tenant)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db("reading a device's posture", e))?
        else {
            return Ok(None);
        };
        let bad = |e: sqlx::Error| corrupt("a device_posture row", e);
        Ok(Some(StoredPosture {
            device_id: row.try_get("device_id").map_err(bad)?,
            report: row.try_get("report").map_err(bad)?,
            collected_at: row.try_get("collected_at").map_err(bad)?,
            received_ms: row.try_get("received_ms").map_err(bad)?,
        }))
    }
}
