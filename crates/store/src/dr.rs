//! Disaster recovery as the control plane records it: every change of a connector's DR state
//! (`dr_transitions`, one numbered row per change and device, for `tsuzuku dr drill`), and how
//! far each DR gateway's own audit chain has been uploaded into this tenant's chain
//! (`dr_audit_uploads`, one row per uploaded chain, keyed by the hash of the chain's first event
//! so that a renamed node continues and a new chain starts afresh).
//!
//! Uploads are idempotent: the uploaded events, and the position that says they are uploaded,
//! are written in one transaction that first locks the chain's row, so a retry after a crash
//! (on either side) skips what is already there and never appends an event twice.

use sqlx::any::AnyRow;
use sqlx::{Acquire, Row};
use tsuzuku_audit::{AuditEvent, GENESIS_HASH};

use crate::Store;
use crate::audit::append_in_tx;
use crate::error::{StoreError, corrupt, is_unique_violation};

/// One change of a connector's DR state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrTransition {
    pub device: String,
    /// 1, 2, … per device.
    pub seq: i64,
    /// When the new state began, as the connector reported it (Unix ms).
    pub at_ms: i64,
    /// `normal`, `active` or `returning`.
    pub state: String,
    /// For `active`: a drill (a `test` record) rather than a real disaster.
    pub drill: bool,
    /// When the control plane received the report that showed the change (Unix ms).
    pub reported_ms: i64,
}

fn transition_from_row(row: &AnyRow) -> Result<DrTransition, StoreError> {
    let bad = |e: sqlx::Error| corrupt("a dr_transitions row", e);
    Ok(DrTransition {
        device: row.try_get("device").map_err(bad)?,
        seq: row.try_get("seq").map_err(bad)?,
        at_ms: row.try_get("at_ms").map_err(bad)?,
        state: row.try_get("state").map_err(bad)?,
        drill: row.try_get::<i64, _>("drill").map_err(bad)? != 0,
        reported_ms: row.try_get("reported_ms").map_err(bad)?,
    })
}

const TRANSITION_COLUMNS: &str = "device, seq, at_ms, state, drill, reported_ms";

impl Store {
    /// The device's newest recorded transition.
    pub async fn last_dr_transition(
        &self,
        device: &str,
    ) -> Result<Option<DrTransition>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TRANSITION_COLUMNS} FROM dr_transitions
             WHERE tenant_id = $1 AND device = $2 ORDER BY seq DESC LIMIT 1"
        )))
        .bind(&*self.tenant)
        .bind(device)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading the DR state of device {device:?}"), e))?
        .as_ref()
        .map(transition_from_row)
        .transpose()
    }

    /// Records a transition. Its `seq` must be the device's next one: a concurrent writer that
    /// recorded the same `seq` first makes this a [`StoreError::Conflict`].
    pub async fn add_dr_transition(&self, t: &DrTransition) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dr_transitions (tenant_id, device, seq, at_ms, state, drill, reported_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&*self.tenant)
        .bind(&t.device)
        .bind(t.seq)
        .bind(t.at_ms)
        .bind(&t.state)
        .bind(i64::from(t.drill))
        .bind(t.reported_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "DR transition #{} of device {:?} is already recorded",
                    t.seq, t.device
                ))
            } else {
                self.db(
                    &format!("recording a DR transition of device {:?}", t.device),
                    e,
                )
            }
        })?;
        Ok(())
    }

    /// The transitions that tell what happened from `since_ms` on: per device, the last one
    /// before `since_ms` (the state the device was in then) and every later one; by device,
    /// then in order.
    pub async fn dr_transitions(&self, since_ms: i64) -> Result<Vec<DrTransition>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TRANSITION_COLUMNS} FROM dr_transitions t
             WHERE t.tenant_id = $1 AND t.seq >= COALESCE(
               (SELECT MAX(u.seq) FROM dr_transitions u
                WHERE u.tenant_id = t.tenant_id AND u.device = t.device AND u.at_ms < $2), 0)
             ORDER BY t.device, t.seq"
        )))
        .bind(&*self.tenant)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("listing DR transitions", e))?
        .iter()
        .map(transition_from_row)
        .collect()
    }
}

/// One event of a DR gateway's own chain, as uploaded: its place in that chain and the event
/// to append to this tenant's chain (whose detail names its origin).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedEvent {
    /// Its sequence number in the DR gateway's chain.
    pub dr_seq: i64,
    /// Its `prev_hash` and `hash` there.
    pub dr_prev_hash: String,
    pub dr_hash: String,
    /// What is appended here.
    pub event: AuditEvent,
}

/// The outcome of [`Store::append_dr_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrAuditUpload {
    /// Every event after the recorded position was appended (none when all were there
    /// already); `last_seq` is the DR chain's sequence number uploaded up to now.
    Accepted { appended: usize, last_seq: i64 },
    /// The batch does not continue where the upload stands (a gap, or a different chain
    /// under the same id): nothing was written. Send again from `last_seq + 1`.
    OutOfStep { last_seq: i64, reason: String },
}

impl Store {
    /// Appends the events of DR chain `chain_id` that are not uploaded yet to this tenant's
    /// audit chain, and records how far that chain is uploaded, in one transaction. The events
    /// must be in order and linked (`dr_prev_hash` is the previous event's `dr_hash`); events
    /// at or before the recorded position are skipped, provided the one at the position is the
    /// one recorded there.
    pub async fn append_dr_audit(
        &self,
        chain_id: &str,
        node_id: &str,
        events: Vec<UploadedEvent>,
        now_ms: i64,
    ) -> Result<DrAuditUpload, StoreError> {
        if let Some(ev) = events.iter().find(|e| *e.event.tenant != *self.tenant) {
            return Err(StoreError::Invalid(format!(
                "an uploaded audit event is of tenant {:?}, not {:?}",
                ev.event.tenant, self.tenant
            )));
        }
        let what = format!("uploading audit events of DR chain {chain_id}");
        let mut tx = self.pool.begin().await.map_err(|e| self.db(&what, e))?;
        let conn = tx.acquire().await.map_err(|e| self.db(&what, e))?;
        // The first statement writes: it takes SQLite's write lock at once; the UPDATE below
        // row-locks the chain's position on PostgreSQL until commit.
        sqlx::query(
            "INSERT INTO dr_audit_uploads (tenant_id, chain_id, node_id, last_seq, last_hash, updated_ms)
             VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (tenant_id, chain_id) DO NOTHING",
        )
        .bind(&*self.tenant)
        .bind(chain_id)
        .bind(node_id)
        .bind(GENESIS_HASH)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(&what, e))?;
        let row = sqlx::query(
            "UPDATE dr_audit_uploads SET last_seq = last_seq
             WHERE tenant_id = $1 AND chain_id = $2 RETURNING last_seq, last_hash",
        )
        .bind(&*self.tenant)
        .bind(chain_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(&what, e))?;
        let bad = |e: sqlx::Error| corrupt("a dr_audit_uploads row", e);
        let last_seq: i64 = row.try_get("last_seq").map_err(bad)?;
        let last_hash: String = row.try_get("last_hash").map_err(bad)?;
        let (seq, hash) = match next_events(&events, last_seq, &last_hash) {
            Ok(x) => x,
            Err(reason) => return Ok(DrAuditUpload::OutOfStep { last_seq, reason }),
        };
        let new: Vec<AuditEvent> = events
            .into_iter()
            .filter(|e| e.dr_seq > last_seq)
            .map(|e| e.event)
            .collect();
        let appended = new.len();
        if appended == 0 {
            // Nothing new: leave everything as it was (a first, empty upload creates no row).
            drop(tx);
            return Ok(DrAuditUpload::Accepted { appended, last_seq });
        }
        let new: Vec<&AuditEvent> = new.iter().collect();
        append_in_tx(&self.sites, &mut *conn, &self.tenant, &new).await?;
        sqlx::query(
            "UPDATE dr_audit_uploads SET node_id = $3, last_seq = $4, last_hash = $5, updated_ms = $6
             WHERE tenant_id = $1 AND chain_id = $2",
        )
        .bind(&*self.tenant)
        .bind(chain_id)
        .bind(node_id)
        .bind(seq)
        .bind(&hash)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(&what, e))?;
        tx.commit().await.map_err(|e| self.db(&what, e))?;
        Ok(DrAuditUpload::Accepted {
            appended,
            last_seq: seq,
        })
    }
}

/// Checks that `events` continue the chain uploaded up to `(last_seq, last_hash)` and returns
/// the new position; events at or before it must agree with it where they can be compared.
fn next_events(
    events: &[UploadedEvent],
    last_seq: i64,
    last_hash: &str,
) -> Result<(i64, String), String> {
    let (mut seq, mut hash) = (last_seq, last_hash.to_owned());
    let mut prev: Option<&UploadedEvent> = None;
    for e in events {
        if let Some(p) = prev
            && (e.dr_seq != p.dr_seq.saturating_add(1) || e.dr_prev_hash != p.dr_hash)
        {
            return Err(format!(
                "event #{} does not follow #{} in the batch (sequence or hash link)",
                e.dr_seq, p.dr_seq
            ));
        }
        prev = Some(e);
        if e.dr_seq < last_seq {
            continue;
        }
        if e.dr_seq == last_seq {
            if e.dr_hash != last_hash {
                return Err(format!(
                    "event #{} is not the one uploaded as #{last_seq} (different hash)",
                    e.dr_seq
                ));
            }
            continue;
        }
        if e.dr_seq != seq.saturating_add(1) || e.dr_prev_hash != hash {
            return Err(format!(
                "uploaded up to #{last_seq}; the batch continues with #{} that does not link to it",
                e.dr_seq
            ));
        }
        seq = e.dr_seq;
        hash = e.dr_hash.clone();
    }
    Ok((seq, hash))
}
