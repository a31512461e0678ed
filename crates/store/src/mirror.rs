//! Mirroring a published configuration into a local store: the DR gateway keeps its own
//! (SQLite) store as a copy of the control plane's users, apps, policies and device trust
//! (enrolled devices and the device CA's certificate), so it can sign people in, recognise
//! their devices and decide with nothing else alive (issue 5, RS-7). Rows keep their ids, so
//! policies and sessions that name users, apps or devices mean the same thing here.

use std::collections::BTreeSet;

use crate::error::StoreError;
use crate::users::groups_json;
use crate::{App, Device, Store, User};

/// Key purpose of a mirrored device CA certificate: the public half only, since a DR gateway
/// verifies device certificates but never issues them.
pub const DEVICE_CA_CERT_PURPOSE: &str = "device-ca-cert";

impl Store {
    /// Makes this tenant's users exactly `users` (by id), with their credentials. Users not in
    /// the list are deleted (with their sessions). A user's TOTP replay guard and failed-login
    /// count stay local.
    pub async fn mirror_users(&self, users: &[User]) -> Result<(), StoreError> {
        let keep: BTreeSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
        for existing in self.list_users().await? {
            if !keep.contains(existing.id.as_str()) {
                self.delete_user_rows(&existing.id).await?;
            }
        }
        for u in users {
            let display_name = self
                .seal_value(super::users::DISPLAY_NAME, &u.id, Some(&u.display_name))
                .await?;
            let email = self
                .seal_value(super::users::EMAIL, &u.id, u.email.as_deref())
                .await?;
            let totp_secret = self
                .seal_value(super::users::TOTP_SECRET, &u.id, u.totp_secret.as_deref())
                .await?;
            sqlx::query(
                "INSERT INTO users (tenant_id, id, username, display_name, email, password_hash,
                    totp_secret, groups_json, disabled, failed_logins, oidc_subject, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET
                   username = excluded.username, display_name = excluded.display_name,
                   email = excluded.email, password_hash = excluded.password_hash,
                   totp_secret = excluded.totp_secret, groups_json = excluded.groups_json,
                   disabled = excluded.disabled, oidc_subject = excluded.oidc_subject",
            )
            .bind(&*self.tenant)
            .bind(&u.id)
            .bind(&u.username)
            .bind(display_name)
            .bind(email)
            .bind(u.password_hash.as_deref())
            .bind(totp_secret)
            .bind(groups_json(&u.groups)?)
            .bind(i64::from(u.disabled))
            .bind(u.oidc_subject.as_deref())
            .bind(u.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(&format!("mirroring user {:?}", u.username), e))?;
        }
        Ok(())
    }

    async fn delete_user_rows(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(&*self.tenant)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(&format!("removing mirrored user {id:?}"), e))?;
        Ok(())
    }

    /// Makes this tenant's apps exactly `apps` (by id).
    pub async fn mirror_apps(&self, apps: &[App]) -> Result<(), StoreError> {
        let what = "mirroring apps";
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        sqlx::query("DELETE FROM apps WHERE tenant_id = $1")
            .bind(&*self.tenant)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(what, e))?;
        for a in apps {
            sqlx::query(
                "INSERT INTO apps (tenant_id, id, name, host, upstream, data_class, critical,
                    isolated, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&*self.tenant)
            .bind(&a.id)
            .bind(&a.name)
            .bind(&a.host)
            .bind(&a.upstream)
            .bind(&a.data_class)
            .bind(i64::from(a.critical))
            .bind(i64::from(a.isolated))
            .bind(a.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(what, e))?;
        }
        tx.commit().await.map_err(|e| self.db(what, e))?;
        Ok(())
    }

    /// Makes this tenant's enrolled devices exactly `devices` (by id), revocations included.
    /// Devices not in the list are deleted with their posture; a kept device's last posture
    /// report stays (it is verified again against the device's key on every use).
    pub async fn mirror_devices(&self, devices: &[Device]) -> Result<(), StoreError> {
        let what = "mirroring devices";
        let keep: BTreeSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let existing = self.list_devices().await?;
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        for existing in existing {
            if keep.contains(existing.id.as_str()) {
                continue;
            }
            for table in [
                "DELETE FROM device_posture WHERE tenant_id = $1 AND device_id = $2",
                "DELETE FROM devices WHERE tenant_id = $1 AND id = $2",
            ] {
                sqlx::query(table)
                    .bind(&*self.tenant)
                    .bind(&existing.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(what, e))?;
            }
        }
        for d in devices {
            // A re-enrolment can give a fingerprint to another id: free it first.
            sqlx::query(
                "DELETE FROM devices WHERE tenant_id = $1 AND fingerprint = $2 AND id <> $3",
            )
            .bind(&*self.tenant)
            .bind(&d.fingerprint)
            .bind(&d.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(what, e))?;
            sqlx::query(
                "INSERT INTO devices (tenant_id, id, name, fingerprint, public_key, company_issued,
                    enrolled_at, not_after, revoked_at, user_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET
                   name = excluded.name, fingerprint = excluded.fingerprint,
                   public_key = excluded.public_key, company_issued = excluded.company_issued,
                   enrolled_at = excluded.enrolled_at, not_after = excluded.not_after,
                   revoked_at = excluded.revoked_at, user_id = excluded.user_id",
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
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(&format!("mirroring device {:?}", d.name), e))?;
        }
        tx.commit().await.map_err(|e| self.db(what, e))?;
        Ok(())
    }

    /// Makes `cert_pem` the newest mirrored device CA certificate
    /// ([`DEVICE_CA_CERT_PURPOSE`], no secret half), or removes every mirrored one when `None`.
    /// Nothing is written when it already is the newest. `key_id` names the certificate (its
    /// hash, so the same certificate always gets the same id).
    pub async fn mirror_device_ca(
        &self,
        key_id: &str,
        cert_pem: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let have = self.keys(DEVICE_CA_CERT_PURPOSE).await?;
        let Some(pem) = cert_pem else {
            for k in have {
                self.delete_key(&k.kid).await?;
            }
            return Ok(());
        };
        let newest = have
            .iter()
            .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        if newest.is_some_and(|k| k.kid == key_id && k.public == pem) {
            return Ok(());
        }
        // The same certificate again (a CA rolled back): make it the newest once more.
        if have.iter().any(|k| k.kid == key_id) {
            self.delete_key(key_id).await?;
        }
        self.put_key(
            key_id,
            DEVICE_CA_CERT_PURPOSE,
            String::new(),
            pem.to_owned(),
            now,
        )
        .await
    }
}
