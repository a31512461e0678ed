//! Versioned policy sets (OPS-9): every save creates a new immutable version with its author,
//! comment and documents; a save names the version it was based on and fails if someone else
//! saved in between (optimistic concurrency). Rolling back is saving an old version's
//! documents as a new version.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{StoreError, corrupt, is_unique_violation};

/// One policy document of a version (e.g. one Cedar file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDoc {
    pub id: String,
    pub text: String,
}

/// One saved version of the tenant's policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// 1, 2, 3, ... per tenant.
    pub version: i64,
    pub author: String,
    pub comment: String,
    pub created_at: i64,
    /// Ordered by id.
    pub docs: Vec<PolicyDoc>,
}

fn version_from_row(row: &AnyRow) -> Result<PolicyVersion, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a policy_versions row", e);
    Ok(PolicyVersion {
        version: row.try_get("version").map_err(bad)?,
        author: row.try_get("author").map_err(bad)?,
        comment: row.try_get("change_comment").map_err(bad)?,
        created_at: row.try_get("created_at").map_err(bad)?,
        docs: Vec::new(),
    })
}

fn doc_from_row(row: &AnyRow) -> Result<(i64, PolicyDoc), StoreError> {
    let bad = |e: sqlx::Error| corrupt("a policy_docs row", e);
    Ok((
        row.try_get("version").map_err(bad)?,
        PolicyDoc {
            id: row.try_get("doc_id").map_err(bad)?,
            text: row.try_get("body").map_err(bad)?,
        },
    ))
}

impl Store {
    /// The number of the newest version, 0 if none was ever saved. One primary-key lookup:
    /// cheap enough to poll every second.
    pub async fn current_policy_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT version FROM policy_head WHERE tenant_id = $1")
            .bind(&*self.tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db("reading the current policy version", e))?;
        match row {
            Some(row) => row
                .try_get("version")
                .map_err(|e| corrupt("the policy_head row", e)),
            None => Ok(0),
        }
    }

    /// The newest version with its documents, `None` if none was ever saved.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        match self.current_policy_version().await? {
            0 => Ok(None),
            v => self.policy_version(v).await,
        }
    }

    /// Version `version` with its documents.
    pub async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        let what = format!("reading policy version {version}");
        let Some(row) = sqlx::query(
            "SELECT version, author, change_comment, created_at FROM policy_versions
             WHERE tenant_id = $1 AND version = $2",
        )
        .bind(&*self.tenant)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&what, e))?
        else {
            return Ok(None);
        };
        let mut v = version_from_row(&row)?;
        v.docs = sqlx::query(
            "SELECT version, doc_id, body FROM policy_docs
             WHERE tenant_id = $1 AND version = $2 ORDER BY doc_id",
        )
        .bind(&*self.tenant)
        .bind(version)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(&what, e))?
        .iter()
        .map(|r| doc_from_row(r).map(|(_, d)| d))
        .collect::<Result<_, _>>()?;
        Ok(Some(v))
    }

    /// Every version, newest first, each with its documents.
    pub async fn policy_history(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let mut versions: Vec<PolicyVersion> = sqlx::query(
            "SELECT version, author, change_comment, created_at FROM policy_versions
             WHERE tenant_id = $1 ORDER BY version DESC",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("reading the policy history", e))?
        .iter()
        .map(version_from_row)
        .collect::<Result<_, _>>()?;
        let mut docs: BTreeMap<i64, Vec<PolicyDoc>> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT version, doc_id, body FROM policy_docs
             WHERE tenant_id = $1 ORDER BY version, doc_id",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("reading the policy history", e))?
        .iter()
        {
            let (version, doc) = doc_from_row(row)?;
            docs.entry(version).or_default().push(doc);
        }
        for v in &mut versions {
            v.docs = docs.remove(&v.version).unwrap_or_default();
        }
        Ok(versions)
    }

    /// Saves `docs` as version `base_version + 1`. If the current version is not
    /// `base_version` (someone else saved meanwhile) nothing is written and the result is a
    /// [`StoreError::Conflict`] naming both versions. Document ids must be unique and
    /// non-empty.
    pub async fn save_policy(
        &self,
        base_version: i64,
        author: &str,
        comment: &str,
        docs: Vec<PolicyDoc>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        if ids.iter().any(|id| id.trim().is_empty()) {
            return Err(StoreError::Invalid(
                "a policy document has an empty id; give every document an id".into(),
            ));
        }
        if let Some(w) = ids.windows(2).find(|w| w.first() == w.get(1)) {
            return Err(StoreError::Invalid(format!(
                "policy document id {:?} appears more than once; document ids must be unique",
                w.first().copied().unwrap_or_default()
            )));
        }
        let new_version = base_version.checked_add(1).ok_or_else(|| {
            StoreError::Invalid(format!("base version {base_version} is out of range"))
        })?;
        let what = format!("saving policy version {new_version}");
        let mut tx = self.pool.begin().await.map_err(|e| self.db(&what, e))?;
        // First statement writes: takes SQLite's write lock at once (no read-then-upgrade
        // deadlock); on PostgreSQL the compare-and-set UPDATE below locks the head row.
        sqlx::query(
            "INSERT INTO policy_head (tenant_id, version) VALUES ($1, 0)
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&*self.tenant)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(&what, e))?;
        let moved = sqlx::query(
            "UPDATE policy_head SET version = $3 WHERE tenant_id = $1 AND version = $2",
        )
        .bind(&*self.tenant)
        .bind(base_version)
        .bind(new_version)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(&what, e))?
        .rows_affected();
        if moved == 0 {
            let current: i64 = sqlx::query("SELECT version FROM policy_head WHERE tenant_id = $1")
                .bind(&*self.tenant)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("version"))
                .map_err(|e| self.db(&what, e))?;
            tx.rollback().await.map_err(|e| self.db(&what, e))?;
            return Err(StoreError::Conflict(format!(
                "policy changed since version {base_version}: the current version is {current}; \
                 load version {current}, reapply your change and save again"
            )));
        }
        sqlx::query(
            "INSERT INTO policy_versions (tenant_id, version, author, change_comment, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&*self.tenant)
        .bind(new_version)
        .bind(author)
        .bind(comment)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Corrupt(format!(
                    "policy version {new_version} already exists although the head said {base_version}; the policy tables were changed outside tsuzuku"
                ))
            } else {
                self.db(&what, e)
            }
        })?;
        for doc in &docs {
            sqlx::query(
                "INSERT INTO policy_docs (tenant_id, version, doc_id, body) VALUES ($1, $2, $3, $4)",
            )
            .bind(&*self.tenant)
            .bind(new_version)
            .bind(&doc.id)
            .bind(&doc.text)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(&format!("{what}: document {:?}", doc.id), e))?;
        }
        tx.commit().await.map_err(|e| self.db(&what, e))?;
        Ok(new_version)
    }
}
