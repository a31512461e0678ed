//! Users: local accounts (password, TOTP) and accounts created by OIDC logins, with lockout
//! counters and the TOTP replay guard shared by all gateway nodes.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::crypt::open_value;
use crate::error::{StoreError, corrupt, is_unique_violation};
use tsuzuku_keyring::Keyring;

/// A user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    /// PHC string (Argon2id), `None` for users who cannot log in with a password.
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    /// The last TOTP time step accepted; a code for this step or an earlier one is a replay.
    pub totp_last_step: Option<i64>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub failed_logins: i64,
    /// Unix seconds until which logins are refused.
    pub locked_until: Option<i64>,
    /// The `sub` claim, for users created by an OIDC login.
    pub oidc_subject: Option<String>,
    pub created_at: i64,
}

/// What it takes to create a local user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    pub groups: Vec<String>,
}

macro_rules! user_cols {
    () => {
        "id, username, display_name, email, password_hash, totp_secret, totp_last_step, \
         groups_json, disabled, failed_logins, locked_until, oidc_subject, created_at"
    };
}

/// Column names as sealed values are bound to them (see `crypt`).
pub(crate) const EMAIL: &str = "users.email";
pub(crate) const DISPLAY_NAME: &str = "users.display_name";
pub(crate) const TOTP_SECRET: &str = "users.totp_secret";

fn user_from_row(
    row: &AnyRow,
    keyring: Option<&Keyring>,
    tenant: &str,
) -> Result<User, StoreError> {
    let id: String = row.try_get("id").map_err(|e| corrupt("a users row", e))?;
    let bad = |e: sqlx::Error| corrupt(format!("user {id}"), e);
    let groups_json: String = row.try_get("groups_json").map_err(bad)?;
    let groups: Vec<String> = serde_json::from_str(&groups_json).map_err(|e| {
        corrupt(
            format!("user {id}: groups_json is not a JSON list of strings"),
            e,
        )
    })?;
    let open =
        |column: &str, stored: Option<String>| open_value(keyring, column, tenant, &id, stored);
    Ok(User {
        username: row.try_get("username").map_err(bad)?,
        display_name: open(
            DISPLAY_NAME,
            Some(row.try_get("display_name").map_err(bad)?),
        )?
        .unwrap_or_default(),
        email: open(EMAIL, row.try_get("email").map_err(bad)?)?,
        password_hash: row.try_get("password_hash").map_err(bad)?,
        totp_secret: open(TOTP_SECRET, row.try_get("totp_secret").map_err(bad)?)?,
        totp_last_step: row.try_get("totp_last_step").map_err(bad)?,
        groups,
        disabled: row.try_get::<i64, _>("disabled").map_err(bad)? != 0,
        failed_logins: row.try_get("failed_logins").map_err(bad)?,
        locked_until: row.try_get("locked_until").map_err(bad)?,
        oidc_subject: row.try_get("oidc_subject").map_err(bad)?,
        created_at: row.try_get("created_at").map_err(bad)?,
        id,
    })
}

pub(crate) fn groups_json(groups: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(groups)
        .map_err(|e| StoreError::Invalid(format!("groups {groups:?} cannot be stored: {e}")))
}

/// Longest username accepted, in bytes.
const MAX_USERNAME: usize = 128;

fn check_username(username: &str) -> Result<(), StoreError> {
    if username.trim().is_empty() {
        return Err(StoreError::Invalid(
            "username is empty; give the user a name".into(),
        ));
    }
    if username.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "username {username:?} contains a control character (a line break, a tab, ...)"
        )));
    }
    if username.trim() != username {
        return Err(StoreError::Invalid(format!(
            "username {username:?} starts or ends with a space; give it without"
        )));
    }
    if username.len() > MAX_USERNAME {
        return Err(StoreError::Invalid(format!(
            "username is {} bytes long; at most {MAX_USERNAME} are accepted",
            username.len()
        )));
    }
    Ok(())
}

impl Store {
    fn no_user(&self, id: &str) -> StoreError {
        StoreError::NotFound(format!(
            "no user with id {id:?} in tenant {:?}",
            self.tenant
        ))
    }

    /// Refuses a new username that differs from an existing one only in letter case (`Eve`
    /// beside `eve`): people, logs and policies' readers would take them for one account.
    async fn refuse_case_twin(&self, username: &str) -> Result<(), StoreError> {
        let twin: Option<String> = sqlx::query_scalar(
            "SELECT username FROM users WHERE tenant_id = $1 AND lower(username) = lower($2)
                 AND username <> $2",
        )
        .bind(&*self.tenant)
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("checking username {username:?}"), e))?;
        match twin {
            Some(other) => Err(StoreError::Conflict(format!(
                "username {username:?} differs from the existing user {other:?} only in letter case; choose another username"
            ))),
            None => Ok(()),
        }
    }

    fn username_taken(&self, username: &str) -> StoreError {
        StoreError::Conflict(format!(
            "username {username:?} is already taken in tenant {:?}; choose another username",
            self.tenant
        ))
    }

    /// Creates a local user. A taken username is a [`StoreError::Conflict`].
    pub async fn create_user(&self, new: NewUser, now: i64) -> Result<User, StoreError> {
        check_username(&new.username)?;
        self.refuse_case_twin(&new.username).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let display_name = self
            .seal_value(DISPLAY_NAME, &id, Some(&new.display_name))
            .await?;
        let email = self.seal_value(EMAIL, &id, new.email.as_deref()).await?;
        let totp_secret = self
            .seal_value(TOTP_SECRET, &id, new.totp_secret.as_deref())
            .await?;
        let result = sqlx::query(
            "INSERT INTO users (tenant_id, id, username, display_name, email, password_hash,
                totp_secret, groups_json, disabled, failed_logins, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9)",
        )
        .bind(&*self.tenant)
        .bind(&id)
        .bind(&new.username)
        .bind(display_name)
        .bind(email)
        .bind(new.password_hash.as_deref())
        .bind(totp_secret)
        .bind(groups_json(&new.groups)?)
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(User {
                id,
                username: new.username,
                display_name: new.display_name,
                email: new.email,
                password_hash: new.password_hash,
                totp_secret: new.totp_secret,
                totp_last_step: None,
                groups: new.groups,
                disabled: false,
                failed_logins: 0,
                locked_until: None,
                oidc_subject: None,
                created_at: now,
            }),
            Err(e) if is_unique_violation(&e) => Err(self.username_taken(&new.username)),
            Err(e) => Err(self.db(&format!("creating user {:?}", new.username), e)),
        }
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let keyring = self.keyring_for_read().await?;
        sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(&*self.tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading user {id:?}"), e))?
        .as_ref()
        .map(|r| user_from_row(r, keyring.as_deref(), &self.tenant))
        .transpose()
    }

    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let keyring = self.keyring_for_read().await?;
        sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE tenant_id = $1 AND username = $2"
        ))
        .bind(&*self.tenant)
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading user {username:?}"), e))?
        .as_ref()
        .map(|r| user_from_row(r, keyring.as_deref(), &self.tenant))
        .transpose()
    }

    /// All users of the tenant, by username.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let keyring = self.keyring_for_read().await?;
        sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE tenant_id = $1 ORDER BY username"
        ))
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing users", e))?
        .iter()
        .map(|r| user_from_row(r, keyring.as_deref(), &self.tenant))
        .collect()
    }

    /// Runs an UPDATE of one user row; zero rows changed means no such user here.
    async fn update_user(
        &self,
        id: &str,
        what: &str,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<(), StoreError> {
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(&format!("{what} of user {id:?}"), e))?
            .rows_affected();
        if changed == 0 {
            return Err(self.no_user(id));
        }
        Ok(())
    }

    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE users SET disabled = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(&*self.tenant)
            .bind(id)
            .bind(i64::from(disabled));
        self.update_user(id, "setting the disabled flag", q).await
    }

    pub async fn set_password_hash(
        &self,
        id: &str,
        password_hash: Option<String>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE users SET password_hash = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(&*self.tenant)
            .bind(id)
            .bind(password_hash);
        self.update_user(id, "setting the password", q).await
    }

    /// Sets (or clears) the TOTP secret and forgets the last accepted step.
    pub async fn set_totp_secret(
        &self,
        id: &str,
        secret: Option<String>,
    ) -> Result<(), StoreError> {
        let secret = self.seal_value(TOTP_SECRET, id, secret.as_deref()).await?;
        let q = sqlx::query(
            "UPDATE users SET totp_secret = $3, totp_last_step = NULL
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&*self.tenant)
        .bind(id)
        .bind(secret);
        self.update_user(id, "setting the TOTP secret", q).await
    }

    pub async fn set_groups(&self, id: &str, groups: Vec<String>) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE users SET groups_json = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(&*self.tenant)
            .bind(id)
            .bind(groups_json(&groups)?);
        self.update_user(id, "setting the groups", q).await
    }

    /// The TOTP replay guard: atomically records `step` as used if it is later than the last
    /// used step. True if it was (the code may be accepted); false if the step was already used
    /// (or an earlier one), or if there is no such user. One UPDATE, so it holds across every
    /// gateway node sharing the database.
    pub async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE users SET totp_last_step = $3
             WHERE tenant_id = $1 AND id = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(&*self.tenant)
        .bind(id)
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(&format!("consuming TOTP step {step} of user {id:?}"), e))?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Counts a failed login and returns the new count. `locked_until`, when given, locks the
    /// account until then; `None` leaves an existing lock as it is.
    pub async fn record_login_failure(
        &self,
        id: &str,
        now: i64,
        locked_until: Option<i64>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login = $3,
                locked_until = COALESCE($4, locked_until)
             WHERE tenant_id = $1 AND id = $2
             RETURNING failed_logins",
        )
        .bind(&*self.tenant)
        .bind(id)
        .bind(now)
        .bind(locked_until)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("recording a failed login of user {id:?}"), e))?
        .ok_or_else(|| self.no_user(id))?;
        row.try_get("failed_logins")
            .map_err(|e| corrupt(format!("user {id}"), e))
    }

    /// Clears the failed-login count and any lock.
    pub async fn reset_login_failures(&self, id: &str) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&*self.tenant)
        .bind(id);
        self.update_user(id, "resetting failed logins", q).await
    }

    /// The user an OIDC login of `(issuer, subject)` created, if any; only reads, so it works
    /// on a read-only standby (the gateway signs in a known OIDC user with it while
    /// [`Store::upsert_oidc_user`] is refused).
    pub async fn get_user_by_oidc(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let keyring = self.keyring_for_read().await?;
        sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE tenant_id = $1 AND oidc_issuer = $2 AND oidc_subject = $3"
        ))
        .bind(&*self.tenant)
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            self.db(
                &format!("reading the user of {issuer} subject {subject:?}"),
                e,
            )
        })?
        .as_ref()
        .map(|r| user_from_row(r, keyring.as_deref(), &self.tenant))
        .transpose()
    }

    /// The user for an OIDC login, keyed by `(issuer, subject)`: created on first login,
    /// display name, e-mail and groups refreshed on every later one (the username stays).
    /// A username already used by another account is a [`StoreError::Conflict`].
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_oidc_user(
        &self,
        issuer: &str,
        subject: &str,
        username: &str,
        display_name: &str,
        email: Option<String>,
        groups: Vec<String>,
        now: i64,
    ) -> Result<User, StoreError> {
        check_username(username)?;
        let groups_text = groups_json(&groups)?;
        // Two attempts: a concurrent first login of the same subject may win the insert.
        for _ in 0..2 {
            if let Some(existing) = self.get_user_by_oidc(issuer, subject).await? {
                let sealed_name = self
                    .seal_value(DISPLAY_NAME, &existing.id, Some(display_name))
                    .await?;
                let sealed_email = self
                    .seal_value(EMAIL, &existing.id, email.as_deref())
                    .await?;
                sqlx::query(
                    "UPDATE users SET display_name = $3, email = $4, groups_json = $5
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(&*self.tenant)
                .bind(&existing.id)
                .bind(sealed_name)
                .bind(sealed_email)
                .bind(&groups_text)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db(&format!("updating OIDC user {username:?}"), e))?;
                return Ok(User {
                    display_name: display_name.to_owned(),
                    email,
                    groups,
                    ..existing
                });
            }
            let id = uuid::Uuid::new_v4().to_string();
            let sealed_name = self
                .seal_value(DISPLAY_NAME, &id, Some(display_name))
                .await?;
            let sealed_email = self.seal_value(EMAIL, &id, email.as_deref()).await?;
            self.refuse_case_twin(username).await?;
            let inserted = sqlx::query(
                "INSERT INTO users (tenant_id, id, username, display_name, email, groups_json,
                    disabled, failed_logins, oidc_issuer, oidc_subject, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $9)",
            )
            .bind(&*self.tenant)
            .bind(&id)
            .bind(username)
            .bind(sealed_name)
            .bind(sealed_email)
            .bind(&groups_text)
            .bind(issuer)
            .bind(subject)
            .bind(now)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(User {
                        id,
                        username: username.to_owned(),
                        display_name: display_name.to_owned(),
                        email,
                        password_hash: None,
                        totp_secret: None,
                        totp_last_step: None,
                        groups,
                        disabled: false,
                        failed_logins: 0,
                        locked_until: None,
                        oidc_subject: Some(subject.to_owned()),
                        created_at: now,
                    });
                }
                Err(e) if is_unique_violation(&e) => {
                    if self.get_user_by_oidc(issuer, subject).await?.is_none() {
                        return Err(StoreError::Conflict(format!(
                            "username {username:?} from {issuer} (subject {subject:?}) is already taken in tenant {:?} by another account; rename one of them or map another claim to the username",
                            self.tenant
                        )));
                    }
                    // Lost a race with a concurrent first login: update the winner's row.
                }
                Err(e) => return Err(self.db(&format!("creating OIDC user {username:?}"), e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "OIDC user {username:?} (subject {subject:?}) changed concurrently; try logging in again"
        )))
    }
}
