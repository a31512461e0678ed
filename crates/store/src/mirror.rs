//! Mirroring a published configuration into a local store: the DR gateway keeps its own
//! (SQLite) store as a copy of the control plane's users, apps and policies, so it can sign
//! people in and decide with nothing else alive (issue 5, RS-7). Rows keep their ids, so
//! policies and sessions that name users or apps mean the same thing here.

use std::collections::BTreeSet;

use crate::error::StoreError;
use crate::users::groups_json;
use crate::{App, Store, User};

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
}
