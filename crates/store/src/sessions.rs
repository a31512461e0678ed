//! Sessions, one-time handoff codes (portal → app host) and pending OIDC logins. Tokens and
//! codes are never stored: callers pass the SHA-256 hex of them. Single-use records are taken
//! with one `DELETE … RETURNING`, so two gateway nodes can never both redeem one.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt, is_foreign_key_violation, is_unique_violation};

/// A logged-in session, on the portal or on one app host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// SHA-256 hex of the session token.
    pub token_hash: String,
    /// Groups the sessions of one login (portal plus each app host it was handed to).
    pub login_id: String,
    pub user_id: String,
    /// `password`, `password+totp`, `oidc`, ...
    pub auth_method: String,
    pub mfa: bool,
    /// When the user authenticated (Unix seconds).
    pub auth_time: i64,
    pub created_at: i64,
    pub last_seen: i64,
    pub absolute_expiry: i64,
    pub source_ip: String,
    /// `"portal"` or the app host the session is valid for.
    pub scope: String,
    /// The enrolled device the session was created from (mutual TLS), if any: the session is
    /// then only valid on connections from that device.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// A redeemed handoff code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub login_id: String,
    pub app_host: String,
    pub expires_at: i64,
}

/// A started OIDC login waiting for the provider's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcPending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub expires_at: i64,
}

macro_rules! session_cols {
    () => {
        "token_hash, login_id, user_id, auth_method, mfa, auth_time, created_at, last_seen, \
         absolute_expiry, source_ip, scope, device_id"
    };
}

fn session_from_row(row: &AnyRow) -> Result<Session, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a sessions row", e);
    Ok(Session {
        token_hash: row.try_get("token_hash").map_err(bad)?,
        login_id: row.try_get("login_id").map_err(bad)?,
        user_id: row.try_get("user_id").map_err(bad)?,
        auth_method: row.try_get("auth_method").map_err(bad)?,
        mfa: row.try_get::<i64, _>("mfa").map_err(bad)? != 0,
        auth_time: row.try_get("auth_time").map_err(bad)?,
        created_at: row.try_get("created_at").map_err(bad)?,
        last_seen: row.try_get("last_seen").map_err(bad)?,
        absolute_expiry: row.try_get("absolute_expiry").map_err(bad)?,
        source_ip: row.try_get("source_ip").map_err(bad)?,
        scope: row.try_get("scope").map_err(bad)?,
        device_id: row.try_get("device_id").map_err(bad)?,
    })
}

impl Store {
    /// Stores a new session. The user must exist in this tenant ([`StoreError::NotFound`]
    /// otherwise); a token hash already stored is a [`StoreError::Conflict`].
    pub async fn create_session(&self, s: &Session) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO sessions (tenant_id, token_hash, login_id, user_id, auth_method, mfa,
                auth_time, created_at, last_seen, absolute_expiry, source_ip, scope, device_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&*self.tenant)
        .bind(&s.token_hash)
        .bind(&s.login_id)
        .bind(&s.user_id)
        .bind(&s.auth_method)
        .bind(i64::from(s.mfa))
        .bind(s.auth_time)
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.absolute_expiry)
        .bind(&s.source_ip)
        .bind(&s.scope)
        .bind(&s.device_id)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "a session with this token hash already exists; generate a new token".into(),
            )),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound(format!(
                "cannot create a session for user {:?}: no such user in tenant {:?}",
                s.user_id, self.tenant
            ))),
            Err(e) => Err(self.db(&format!("creating a session for user {:?}", s.user_id), e)),
        }
    }

    /// The session with this token hash, expired or not (the caller checks expiry).
    pub async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE tenant_id = $1 AND token_hash = $2"
        ))
        .bind(&*self.tenant)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db("reading a session", e))?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    /// Sessions of one user, newest first (for the console and for revocation).
    pub async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC, token_hash"
        ))
        .bind(&*self.tenant)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(&format!("listing sessions of user {user_id:?}"), e))?
        .iter()
        .map(session_from_row)
        .collect()
    }

    /// Every session (one per host) created by one sign-in.
    pub async fn login_sessions(&self, login_id: &str) -> Result<Vec<Session>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE tenant_id = $1 AND login_id = $2 ORDER BY created_at, token_hash"
        ))
        .bind(&*self.tenant)
        .bind(login_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing the sessions of one sign-in", e))?
        .iter()
        .map(session_from_row)
        .collect()
    }

    /// Moves `last_seen` forward to `now` (never backwards, whatever the caller's clock says).
    /// False if there is no such session.
    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE sessions SET last_seen = CASE WHEN last_seen < $3 THEN $3 ELSE last_seen END
             WHERE tenant_id = $1 AND token_hash = $2",
        )
        .bind(&*self.tenant)
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db("touching a session", e))?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Deletes one session; false if there was none.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND token_hash = $2")
            .bind(&*self.tenant)
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db("deleting a session", e))?
            .rows_affected();
        Ok(deleted > 0)
    }

    /// Deletes every session of one login (logout everywhere it was handed to).
    pub async fn delete_login(&self, login_id: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND login_id = $2")
                .bind(&*self.tenant)
                .bind(login_id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db(&format!("deleting the sessions of login {login_id:?}"), e))?
                .rows_affected(),
        )
    }

    /// Deletes every session of one user.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2")
                .bind(&*self.tenant)
                .bind(user_id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db(&format!("deleting the sessions of user {user_id:?}"), e))?
                .rows_affected(),
        )
    }

    /// Deletes sessions past their absolute expiry or idle for `idle_timeout_secs` or longer.
    pub async fn purge_expired_sessions(
        &self,
        now: i64,
        idle_timeout_secs: i64,
    ) -> Result<u64, StoreError> {
        let idle_cutoff = now.saturating_sub(idle_timeout_secs);
        Ok(sqlx::query(
            "DELETE FROM sessions WHERE tenant_id = $1 AND (absolute_expiry <= $2 OR last_seen <= $3)",
        )
        .bind(&*self.tenant)
        .bind(now)
        .bind(idle_cutoff)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db("purging expired sessions", e))?
        .rows_affected())
    }

    /// Stores a one-time handoff code (its hash) that lets `app_host` open a session for
    /// `login_id` until `expires_at`.
    pub async fn create_handoff(
        &self,
        code_hash: &str,
        login_id: &str,
        app_host: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO handoffs (tenant_id, code_hash, login_id, app_host, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&*self.tenant)
        .bind(code_hash)
        .bind(login_id)
        .bind(app_host)
        .bind(expires_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "a handoff code with this hash already exists; generate a new code".into(),
            )),
            Err(e) => Err(self.db(&format!("creating a handoff code for {app_host:?}"), e)),
        }
    }

    /// Redeems a handoff code: deletes it and returns it, atomically, so it works once.
    /// `None` if unknown, already used, or expired at `now` (an expired code is deleted too).
    pub async fn take_handoff(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<Handoff>, StoreError> {
        let Some(row) = sqlx::query(
            "DELETE FROM handoffs WHERE tenant_id = $1 AND code_hash = $2
             RETURNING login_id, app_host, expires_at",
        )
        .bind(&*self.tenant)
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db("redeeming a handoff code", e))?
        else {
            return Ok(None);
        };
        let bad = |e: sqlx::Error| corrupt("a handoffs row", e);
        let handoff = Handoff {
            login_id: row.try_get("login_id").map_err(bad)?,
            app_host: row.try_get("app_host").map_err(bad)?,
            expires_at: row.try_get("expires_at").map_err(bad)?,
        };
        Ok((handoff.expires_at > now).then_some(handoff))
    }

    /// Stores a pending OIDC login under its `state`.
    pub async fn put_oidc_pending(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        return_to: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO oidc_pending (tenant_id, state, nonce, pkce_verifier, return_to, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&*self.tenant)
        .bind(state)
        .bind(nonce)
        .bind(pkce_verifier)
        .bind(return_to)
        .bind(expires_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "a pending OIDC login with this state already exists; generate a new state".into(),
            )),
            Err(e) => Err(self.db("storing a pending OIDC login", e)),
        }
    }

    /// Takes the pending OIDC login for `state`: deleted and returned atomically, so a
    /// callback works once. `None` if unknown, used, or expired at `now`.
    pub async fn take_oidc_pending(
        &self,
        state: &str,
        now: i64,
    ) -> Result<Option<OidcPending>, StoreError> {
        let Some(row) = sqlx::query(
            "DELETE FROM oidc_pending WHERE tenant_id = $1 AND state = $2
             RETURNING state, nonce, pkce_verifier, return_to, expires_at",
        )
        .bind(&*self.tenant)
        .bind(state)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db("taking a pending OIDC login", e))?
        else {
            return Ok(None);
        };
        let bad = |e: sqlx::Error| corrupt("an oidc_pending row", e);
        let pending = OidcPending {
            state: row.try_get("state").map_err(bad)?,
            nonce: row.try_get("nonce").map_err(bad)?,
            pkce_verifier: row.try_get("pkce_verifier").map_err(bad)?,
            return_to: row.try_get("return_to").map_err(bad)?,
            expires_at: row.try_get("expires_at").map_err(bad)?,
        };
        Ok((pending.expires_at > now).then_some(pending))
    }

    /// Deletes handoff codes and pending OIDC logins that expired at or before `now`.
    pub async fn purge_expired_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let handoffs =
            sqlx::query("DELETE FROM handoffs WHERE tenant_id = $1 AND expires_at <= $2")
                .bind(&*self.tenant)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db("purging expired handoff codes", e))?
                .rows_affected();
        let pending =
            sqlx::query("DELETE FROM oidc_pending WHERE tenant_id = $1 AND expires_at <= $2")
                .bind(&*self.tenant)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db("purging expired pending OIDC logins", e))?
                .rows_affected();
        Ok(handoffs.saturating_add(pending))
    }
}
