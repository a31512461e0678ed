//! The audit log's storage: one hash chain per tenant in `audit_events`, its head in
//! `audit_head`. Appends link events with `tsuzuku-audit`'s chain functions inside one
//! transaction that first locks the tenant's head row, so concurrent writers (several
//! processes on one SQLite file, or several nodes on one PostgreSQL) queue up instead of
//! forking the chain.
//!
//! Locking without backend-specific SQL: the transaction's first statement is a write (an
//! upsert of the head row, `INSERT … ON CONFLICT DO UPDATE SET seq = seq … RETURNING`), which
//! on SQLite takes the database write lock at once (the same effect as `BEGIN IMMEDIATE`, and
//! no read-then-upgrade `SQLITE_BUSY`) and on PostgreSQL row-locks the head until commit, as
//! `SELECT … FOR UPDATE` would, returning the newest committed head.
//!
//! A single tenant's append on a SQLite file (the gateway's audit writer) runs on the calling
//! thread through a rusqlite connection of its own (`appender`), not through sqlx's driver
//! thread. Everything else (PostgreSQL, an in-memory SQLite store, several tenants at once)
//! appends inside a sqlx transaction (`append_in_tx`), which sqlx rolls back if the append
//! fails or is abandoned.
//!
//! The stored `detail` is the detail's canonical JSON text, which the event carries
//! ([`tsuzuku_audit::Detail`]) and the chain hash covers: it is stored as it is, never encoded
//! here. Reading a row re-encodes the stored JSON whatever its layout; verification
//! ([`Store::verify_audit`]) accepts only the canonical text or serde_json's own compact layout
//! of the same value (rows stored before details were kept as canonical text), and reports any
//! other text — a duplicate key, say — as altered (`Detail::from_stored`).

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{Acquire, AnyConnection, Row};
use tsuzuku_audit::{
    AuditBackend, AuditError, AuditEvent, ChainedEvent, Detail, GENESIS_HASH, Verifier,
    VerifyReport, chain_hash,
};

use crate::error::{StoreError, corrupt, is_unique_violation};
use crate::sites::Sites;
use crate::{Store, StoreRoot};

mod appender;
mod wal;
pub(crate) use appender::SqliteAppender;

/// Rows read per query when verifying a whole chain.
const VERIFY_PAGE: i64 = 10_000;

/// A stored audit row before its kind and detail are decoded.
struct AuditRow {
    seq: i64,
    prev_hash: String,
    hash: String,
    time_ms: i64,
    kind: String,
    actor: Option<String>,
    detail: String,
}

impl AuditRow {
    fn from_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
        let bad = |e: sqlx::Error| corrupt("an audit_events row", e);
        Ok(AuditRow {
            seq: row.try_get("seq").map_err(bad)?,
            prev_hash: row.try_get("prev_hash").map_err(bad)?,
            hash: row.try_get("hash").map_err(bad)?,
            time_ms: row.try_get("time_ms").map_err(bad)?,
            kind: row.try_get("kind").map_err(bad)?,
            actor: row.try_get("actor").map_err(bad)?,
            detail: row.try_get("detail").map_err(bad)?,
        })
    }

    fn into_event(self, tenant: &str) -> Result<ChainedEvent, StoreError> {
        let seq = self.seq;
        let kind = self
            .kind
            .parse()
            .map_err(|e| corrupt(format!("audit event #{seq} of tenant {tenant:?}"), e))?;
        let detail = Detail::from_json(&self.detail).map_err(|e| {
            corrupt(
                format!("audit event #{seq} of tenant {tenant:?}: detail is not JSON"),
                e,
            )
        })?;
        Ok(ChainedEvent {
            seq,
            prev_hash: self.prev_hash,
            hash: self.hash,
            event: AuditEvent {
                time_ms: self.time_ms,
                kind,
                actor: self.actor,
                tenant: tenant.to_owned(),
                detail,
            },
        })
    }
}

/// Checks one stored row with `verifier`, reading each column on its own so that a row
/// written behind the log's back is reported (naming its seq) instead of stopping the check.
/// Returns the row's seq, or `None` when it is no integer.
fn verify_row(row: &AnyRow, tenant: &str, verifier: &mut Verifier) -> Option<i64> {
    let Ok(seq) = row.try_get::<i64, _>("seq") else {
        verifier.push_bad_seq(&shown(row, "seq"));
        return None;
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut text = |col: &str| match stored_text(row, col) {
        Ok(Some(v)) => Some(Some(v)),
        Ok(None) => Some(None),
        Err(why) => {
            reasons.push(why);
            None
        }
    };
    let required = |v: Option<Option<String>>, col: &str, reasons: &mut Vec<String>| match v {
        Some(Some(v)) => Some(v),
        Some(None) => {
            reasons.push(format!("its {col} is not text but NULL"));
            None
        }
        None => None,
    };
    let prev_hash = text("prev_hash");
    let hash = text("hash");
    let kind_text = text("kind");
    let detail_text = text("detail");
    let actor = text("actor");
    let prev_hash = required(prev_hash, "prev_hash", &mut reasons);
    let hash = required(hash, "hash", &mut reasons);
    let kind_text = required(kind_text, "kind", &mut reasons);
    let detail_text = required(detail_text, "detail", &mut reasons);
    let time_ms = match row.try_get::<i64, _>("time_ms") {
        Ok(v) => Some(v),
        Err(_) => {
            reasons.push(format!(
                "its time_ms is not an integer but {}",
                shown(row, "time_ms")
            ));
            None
        }
    };
    let kind = kind_text.and_then(|k| match k.parse() {
        Ok(kind) => Some(kind),
        Err(e) => {
            reasons.push(format!("its kind: {e}"));
            None
        }
    });
    let detail = detail_text.and_then(|d| match Detail::from_stored(&d) {
        Ok(detail) => Some(detail),
        Err(e) => {
            reasons.push(format!("its detail is not JSON: {e}"));
            None
        }
    });
    match (prev_hash, hash, time_ms, kind, actor, detail) {
        (
            Some(prev_hash),
            Some(hash),
            Some(time_ms),
            Some(kind),
            Some(actor),
            Some((detail, exact)),
        ) => {
            let ev = ChainedEvent {
                seq,
                prev_hash,
                hash,
                event: AuditEvent {
                    time_ms,
                    kind,
                    actor,
                    tenant: tenant.to_owned(),
                    detail,
                },
            };
            if exact {
                verifier.push(&ev);
            } else {
                verifier.push_not_canonical(&ev);
            }
        }
        (prev_hash, hash, ..) => verifier.push_unreadable(
            seq,
            prev_hash.as_deref(),
            hash.as_deref(),
            &reasons.join("; "),
        ),
    }
    Some(seq)
}

/// A text column of an audit row: `None` for NULL. On SQLite the text comes as bytes with its
/// storage class in `<col>_type` (see `verify_audit_in_pages`), and bytes that are not UTF-8
/// are named as such.
fn stored_text(row: &AnyRow, col: &str) -> Result<Option<String>, String> {
    if let Ok(v) = row.try_get::<Option<String>, _>(col) {
        return Ok(v);
    }
    let stored_as = row
        .try_get::<String, _>(format!("{col}_type").as_str())
        .ok();
    match (stored_as.as_deref(), row.try_get::<Vec<u8>, _>(col)) {
        (Some("text"), Ok(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| format!("its {col} is text that is not UTF-8 ({e})")),
        _ => Err(format!("its {col} is not text but {}", shown(row, col))),
    }
}

/// A stored value as an operator can recognise it in a report: integers and reals as numbers,
/// text quoted (shortened past 40 characters), anything else by its kind.
fn shown(row: &AnyRow, col: &str) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(col) {
        return v.map_or_else(|| "NULL".to_owned(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<f64, _>(col) {
        return v.to_string();
    }
    if let Ok(v) = row.try_get::<String, _>(col) {
        let short: String = v.chars().take(40).collect();
        let more = if short.len() < v.len() { "…" } else { "" };
        return format!("{short:?}{more}");
    }
    if let Ok(v) = row.try_get::<Vec<u8>, _>(col) {
        return format!("a blob of {} bytes", v.len());
    }
    "a value of another type".to_owned()
}

/// Events per multi-row INSERT (8 parameters each; well under SQLite's and PostgreSQL's limits).
const INSERT_CHUNK: usize = 100;

/// Creates the head row if needed and locks it, returning `(seq, hash)`: the upsert is a
/// write, so on SQLite it takes the database write lock at once, and on PostgreSQL it
/// row-locks the head until commit (what `SELECT … FOR UPDATE` would do).
const HEAD_SQL: &str = "INSERT INTO audit_head (tenant_id, seq, hash) VALUES ($1, 0, $2)
     ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_head.seq
     RETURNING seq, hash";

fn what(tenant: &str, events: &[&AuditEvent]) -> String {
    format!(
        "appending {} audit events for tenant {tenant:?}",
        events.len()
    )
}

fn head_of(row: &AnyRow) -> Result<(i64, String), StoreError> {
    let bad = |e: sqlx::Error| corrupt("the audit_head row", e);
    Ok((
        row.try_get("seq").map_err(bad)?,
        row.try_get("hash").map_err(bad)?,
    ))
}

/// Links `events` after the head `(seq, hash)`. Each event's detail is encoded once,
/// canonically: that text is both what the chain hash covers and what is stored (any JSON
/// layout of the detail verifies the same way, so rows written before this encoding was
/// stored stay verifiable). Returns the linked events and the new head.
fn link_all<'a>(
    mut seq: i64,
    mut hash: String,
    events: &[&'a AuditEvent],
) -> (Vec<Linked<'a>>, i64, String) {
    let mut linked = Vec::with_capacity(events.len());
    for &ev in events {
        seq = seq.saturating_add(1);
        let next = chain_hash(seq, &hash, ev);
        let prev_hash = std::mem::replace(&mut hash, next);
        linked.push(Linked {
            seq,
            prev_hash,
            hash: hash.clone(),
            event: ev,
        });
    }
    (linked, seq, hash)
}

/// What the last multi-row INSERT of a batch also does, in the same round trip (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing: the head row is updated by a statement of its own (PostgreSQL).
    None,
    /// Update the head row.
    Head,
}

/// Inserts the linked events in multi-row INSERTs: one round trip per chunk instead of one per
/// event (group commit batches are up to hundreds of events under load). On SQLite the head
/// row's update rides in the last chunk's round
/// trip — sqlx runs the statements of one query in order on one connection — and the
/// placeholders are positional `?`: SQLite looks numbered `$N` parameters up by name, which
/// costs time quadratic in their number both when a statement is prepared and every time it
/// is bound.
async fn insert_linked(
    sites: &Sites,
    conn: &mut AnyConnection,
    tenant: &str,
    linked: &[Linked<'_>],
    head: (i64, &str),
    sqlite_tail: Tail,
    what: &str,
) -> Result<(), StoreError> {
    let sqlite = sqlite_tail != Tail::None;
    let chunks = linked.chunks(INSERT_CHUNK);
    let last = chunks.len().saturating_sub(1);
    for (n, chunk) in chunks.enumerate() {
        let tail = if n == last { sqlite_tail } else { Tail::None };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(insert_sql(chunk.len(), sqlite, tail)));
        for l in chunk {
            q = q
                .bind(tenant)
                .bind(l.seq)
                .bind(l.prev_hash.as_str())
                .bind(l.hash.as_str())
                .bind(l.event.time_ms)
                .bind(l.event.kind.as_str())
                .bind(l.event.actor.as_deref())
                .bind(l.event.detail.as_str());
        }
        if tail != Tail::None {
            q = q.bind(head.0).bind(head.1).bind(tenant);
        }
        q.execute(&mut *conn).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Corrupt(format!(
                    "an audit event of tenant {tenant:?} after #{} already exists although that is the chain head; \
                     the audit tables were changed outside tsuzuku: run an audit verification",
                    linked.first().map_or(0, |l| l.seq - 1)
                ))
            } else {
                sites.classify(what, e)
            }
        })?;
    }
    if !sqlite {
        sqlx::query("UPDATE audit_head SET seq = $2, hash = $3 WHERE tenant_id = $1")
            .bind(tenant)
            .bind(head.0)
            .bind(head.1)
            .execute(&mut *conn)
            .await
            .map_err(|e| sites.classify(what, e))?;
    }
    Ok(())
}

/// Links and inserts `events` after `tenant`'s chain head, inside the caller's transaction.
pub(crate) async fn append_in_tx(
    sites: &Sites,
    conn: &mut AnyConnection,
    tenant: &str,
    events: &[&AuditEvent],
) -> Result<Vec<i64>, StoreError> {
    let what = what(tenant, events);
    let head = sqlx::query(HEAD_SQL)
        .bind(tenant)
        .bind(GENESIS_HASH)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| sites.classify(&what, e))?;
    let (seq, hash) = head_of(&head)?;
    let (linked, seq, hash) = link_all(seq, hash, events);
    let tail = if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Tail::Head
    } else {
        Tail::None
    };
    insert_linked(sites, conn, tenant, &linked, (seq, &hash), tail, &what).await?;
    Ok(linked.iter().map(|l| l.seq).collect())
}

/// An event with its place in the chain, ready to insert.
struct Linked<'a> {
    seq: i64,
    prev_hash: String,
    hash: String,
    event: &'a AuditEvent,
}

/// `INSERT … VALUES ($1, …, $8), ($9, …)` for `rows` events; with `positional` (SQLite) every
/// placeholder is `?` instead, bound in order, and `tail` appends the head row's `UPDATE`
/// (`seq`, `hash`, `tenant_id`, bound after the rows) and `COMMIT` to the same query text. Only
/// placeholders are formatted into the text; every value is bound.
fn insert_sql(rows: usize, positional: bool, tail: Tail) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(200 + rows * 48);
    sql.push_str(
        "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        if positional {
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
            continue;
        }
        let b = i * 8;
        let _ = write!(
            sql,
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8
        );
    }
    match tail {
        Tail::None => {}
        Tail::Head => sql.push_str("; UPDATE audit_head SET seq = ?, hash = ? WHERE tenant_id = ?"),
    }
    sql
}

/// Runs `f`, which blocks on SQLite: on a multi-threaded Tokio runtime the worker's other
/// tasks move to another worker meanwhile (`block_in_place`); elsewhere — the audit writer's
/// own thread, a current-thread runtime — `f` simply runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn to_audit_error(e: StoreError) -> AuditError {
    match e {
        // Busy, unreachable, or a standby not yet promoted: may work on retry.
        StoreError::Unavailable(_) | StoreError::ReadOnly(_) => {
            AuditError::transient(e.to_string())
        }
        _ => AuditError::permanent(e.to_string()),
    }
}

impl Store {
    /// Appends events to this tenant's chain in one transaction and returns their sequence
    /// numbers. Every event's `tenant` must be this store's tenant ([`StoreError::Invalid`]
    /// otherwise, and nothing is written).
    pub async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<Vec<i64>, StoreError> {
        self.append_audit_slice(&events).await
    }

    async fn append_audit_slice(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError> {
        if let Some(ev) = events.iter().find(|e| *e.tenant != *self.tenant) {
            return Err(StoreError::Invalid(format!(
                "audit event for tenant {:?} was given to the store of tenant {:?}; append it through that tenant's store",
                ev.tenant, self.tenant
            )));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let what = "appending audit events";
        let events: Vec<&AuditEvent> = events.iter().collect();
        if let Some(appender) = &self.appender {
            return blocking(|| appender.append(&self.tenant, &events));
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        let seqs = append_in_tx(
            &self.sites,
            tx.acquire().await.map_err(|e| self.db(what, e))?,
            &self.tenant,
            &events,
        )
        .await?;
        tx.commit().await.map_err(|e| self.db(what, e))?;
        Ok(seqs)
    }

    /// Up to `limit` events with `seq >= from_seq`, oldest first.
    pub async fn audit_events(
        &self,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        self.audit_rows(from_seq, i64::MAX, limit)
            .await?
            .into_iter()
            .map(|r| r.into_event(&self.tenant))
            .collect()
    }

    /// The newest `n` events, oldest first.
    pub async fn audit_tail(&self, n: i64) -> Result<Vec<ChainedEvent>, StoreError> {
        let mut events = sqlx::query(
            "SELECT seq, prev_hash, hash, time_ms, kind, actor, detail FROM audit_events
             WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(&*self.tenant)
        .bind(n.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db("reading the newest audit events", e))?
        .iter()
        .map(|row| AuditRow::from_row(row).and_then(|r| r.into_event(&self.tenant)))
        .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    /// `(seq, hash)` of the chain's newest event as recorded in the head row; `None` if
    /// nothing was ever appended.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let Some(row) = sqlx::query("SELECT seq, hash FROM audit_head WHERE tenant_id = $1")
            .bind(&*self.tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db("reading the audit chain head", e))?
        else {
            return Ok(None);
        };
        let bad = |e: sqlx::Error| corrupt("the audit_head row", e);
        let seq: i64 = row.try_get("seq").map_err(bad)?;
        let hash: String = row.try_get("hash").map_err(bad)?;
        Ok((seq > 0).then_some((seq, hash)))
    }

    /// Verifies every stored row of this tenant's chain, in sequence order, and compares the
    /// chain's end with the head row (`audit_head`): rows past the head, a head the chain does
    /// not reach (the newest events removed), a head whose hash is not its event's, and events
    /// without a head row are all reported. So are rows numbered below 1 (or not numbered by
    /// an integer at all), rows that cannot be read back as events (each named, and
    /// verification goes on past them), and details not stored as the exact text the hash
    /// covers (a duplicate key, say). Everything is read in one read transaction, so events
    /// appended meanwhile are neither half-seen nor mistaken for tampering, and in pages of
    /// [`VERIFY_PAGE`] rows, so memory use does not grow with the chain. Fails only when the
    /// database cannot be read.
    pub async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        self.verify_audit_in_pages(VERIFY_PAGE).await
    }

    /// [`Store::verify_audit`], reading `page` rows per query.
    pub(crate) async fn verify_audit_in_pages(
        &self,
        page: i64,
    ) -> Result<VerifyReport, StoreError> {
        let page = page.max(1);
        let what = "verifying the audit chain";
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        let conn = tx.acquire().await.map_err(|e| self.db(what, e))?;
        let sqlite = conn.backend_name().eq_ignore_ascii_case("sqlite");
        if !sqlite {
            // PostgreSQL: one snapshot for every query of the transaction (SQLite's read
            // transactions are snapshots already).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await
                .map_err(|e| self.db(what, e))?;
        }
        let mut verifier = Verifier::new();
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE tenant_id = $1")
            .bind(&*self.tenant)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db("reading the audit chain head", e))?;
        match head.as_ref().map(|row| {
            let seq = row.try_get::<i64, _>("seq");
            let hash = row.try_get::<String, _>("hash");
            (seq, hash)
        }) {
            None => verifier.expect_head(None),
            Some((Ok(seq), Ok(hash))) => verifier.expect_head(Some((seq, &hash))),
            Some((seq, hash)) => {
                let mut reasons = Vec::new();
                if let Err(e) = seq {
                    reasons.push(format!("its seq is not an integer: {e}"));
                }
                if let Err(e) = hash {
                    reasons.push(format!("its hash is not text: {e}"));
                }
                verifier.expect_unreadable_head(&reasons.join("; "));
            }
        }
        // SQLite keeps whatever bytes a tamperer wrote into a text column, and text that is not
        // UTF-8 fails the driver's decoding of its whole page: there, text columns are read as
        // bytes (with their storage class), and `verify_row` names such a row instead.
        let columns = if sqlite {
            let raw = |c: &str| {
                format!(
                    "CASE WHEN typeof({c}) = 'text' THEN CAST({c} AS BLOB) ELSE {c} END AS {c}, \
                     typeof({c}) AS {c}_type"
                )
            };
            format!(
                "seq, {}, {}, time_ms, {}, {}, {}",
                raw("prev_hash"),
                raw("hash"),
                raw("kind"),
                raw("actor"),
                raw("detail")
            )
        } else {
            "seq, prev_hash, hash, time_ms, kind, actor, detail".to_owned()
        };
        // Keyset pages by seq. A row whose seq is no integer (possible in SQLite only) sorts
        // among or after the numbers; such rows after the last integer of a page are skipped
        // by an OFFSET on the next page, so every row is read once.
        let mut after: Option<i64> = None;
        let mut skip: i64 = 0;
        loop {
            let sql = format!(
                "SELECT {columns} FROM audit_events WHERE tenant_id = $1{} ORDER BY seq \
                 LIMIT $2 OFFSET $3",
                if after.is_some() { " AND seq > $4" } else { "" }
            );
            // Built from the constant column lists above only: nothing of the data.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&*self.tenant)
                .bind(page)
                .bind(skip);
            if let Some(after) = after {
                q = q.bind(after);
            }
            let from = after.map_or_else(|| "the start".to_owned(), |s| format!("#{s}"));
            let rows = q
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| self.db(&format!("reading audit events after {from}"), e))?;
            let full_page = i64::try_from(rows.len()).is_ok_and(|n| n >= page);
            for row in &rows {
                match verify_row(row, &self.tenant, &mut verifier) {
                    Some(seq) => {
                        after = Some(seq);
                        skip = 0;
                    }
                    None => skip = skip.saturating_add(1),
                }
            }
            if !full_page {
                break;
            }
        }
        tx.rollback().await.map_err(|e| self.db(what, e))?;
        Ok(verifier.finish())
    }

    async fn audit_rows(
        &self,
        from_seq: i64,
        to_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        sqlx::query(
            "SELECT seq, prev_hash, hash, time_ms, kind, actor, detail FROM audit_events
             WHERE tenant_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(&*self.tenant)
        .bind(from_seq)
        .bind(to_seq)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(&format!("reading audit events from #{from_seq}"), e))?
        .iter()
        .map(AuditRow::from_row)
        .collect()
    }
}

/// One tenant's chain: every event must belong to this store's tenant.
impl AuditBackend for Store {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        // When no server takes writes, say so at once instead of waiting for a connection:
        // the caller (a gateway's spool) must not hold requests for the pool's timeout.
        let role = self.sites.role();
        if !role.is_writable() {
            return Err(AuditError::transient(format!(
                "the store cannot take writes now ({role})"
            )));
        }
        self.append_audit_slice(batch)
            .await
            .map(drop)
            .map_err(to_audit_error)
    }
}

impl StoreRoot {
    /// Appends events of any tenants, each to its own tenant's chain, all in one transaction.
    pub async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.append_audit_slice(&events).await
    }

    async fn append_audit_slice(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut by_tenant: BTreeMap<&str, Vec<&AuditEvent>> = BTreeMap::new();
        for ev in events {
            by_tenant.entry(ev.tenant.as_str()).or_default().push(ev);
        }
        if by_tenant.is_empty() {
            return Ok(());
        }
        let what = "appending audit events";
        let mut tx = self.pool.begin().await.map_err(|e| self.db(what, e))?;
        // Tenants in sorted order, so two writers lock head rows in the same order.
        for (tenant, events) in by_tenant {
            append_in_tx(
                &self.sites,
                tx.acquire().await.map_err(|e| self.db(what, e))?,
                tenant,
                &events,
            )
            .await?;
        }
        tx.commit().await.map_err(|e| self.db(what, e))?;
        Ok(())
    }
}

/// All tenants: events go to the chain of their own `tenant`, atomically per batch.
impl AuditBackend for StoreRoot {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        self.append_audit_slice(batch).await.map_err(to_audit_error)
    }
}

#[cfg(test)]
mod tests;
