//! Single use across gateway nodes while the store is a read-only standby.
//!
//! A standby refuses every write, so the store cannot record that a one-time code was used.
//! PostgreSQL still takes *advisory locks* on a hot standby (they are not WAL-logged and never
//! conflict with recovery), and every node in read-only failover reads from the same standby —
//! the one that has replayed the most. [`Store::claim_while_read_only`] takes a session-level
//! advisory lock named by the claim on one connection kept for this purpose: the first node
//! to claim gets it, every other node is refused for as long as it is held.
//!
//! The lock lives on that connection: if it breaks, or the store moves to another standby, the
//! claims made on it are gone (a later claim then succeeds again). Session-level advisory locks
//! are re-entrant on one connection, so a node asking twice is told yes twice: callers check
//! their own memory first.

use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection as _};

use crate::Store;
use crate::error::StoreError;
use crate::sites::StoreRole;

/// The connection that holds this process's claims, and when each claim is let go.
#[derive(Default)]
pub(crate) struct Claims {
    held: tokio::sync::Mutex<Option<ClaimConn>>,
}

struct ClaimConn {
    conn: AnyConnection,
    /// The standby it is connected to (redacted URL).
    server: String,
    /// Advisory lock keys and when to release them.
    release: Vec<(i64, Instant)>,
}

/// The advisory lock key of a claim in a tenant: a 64-bit FNV-1a hash of both (stable across
/// builds and processes, which is all a lock name needs; the store knows no cryptography).
pub(crate) fn claim_key(tenant: &str, what: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"tsuzuku-claim\0"
        .iter()
        .chain(tenant.as_bytes())
        .chain(&[0u8])
        .chain(what.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_be_bytes(h.to_be_bytes())
}

impl Store {
    /// Claims `what` (for example `totp:USER:STEP`) for this process for `hold`, while the
    /// store is a read-only standby: `Ok(true)` if no other node holds it, `Ok(false)` if one
    /// does. With a writable store (or the embedded SQLite file) there is nothing to claim —
    /// the store records single use itself — and the answer is `Ok(true)`.
    pub async fn claim_while_read_only(
        &self,
        what: &str,
        hold: Duration,
    ) -> Result<bool, StoreError> {
        let server = match self.sites.role() {
            StoreRole::ReadOnlyStandby { server, .. } => server,
            StoreRole::Primary { .. } => return Ok(true),
            StoreRole::Unavailable { reason } => {
                return Err(StoreError::Unavailable(format!(
                    "claiming {what:?}: no database server answers ({reason})"
                )));
            }
        };
        let key = claim_key(&self.tenant, what);
        let mut held = self.sites.claims().held.lock().await;
        if held.as_ref().is_some_and(|h| h.server != server) {
            // The store moved to another standby; claims on the old one no longer count.
            if let Some(old) = held.take() {
                let _ = old.conn.close().await;
            }
        }
        if held.is_none() {
            let conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| self.db("opening the connection for claims", e))?
                .detach();
            *held = Some(ClaimConn {
                conn,
                server,
                release: Vec::new(),
            });
        }
        let Some(h) = held.as_mut() else {
            return Err(StoreError::Unavailable(
                "claiming: no connection for claims".into(),
            ));
        };
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = h.release.drain(..).partition(|(_, at)| *at <= now);
        h.release = keep;
        let mut result = Ok(());
        for (k, _) in due {
            if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(k)
                .execute(&mut h.conn)
                .await
            {
                result = Err(e);
                break;
            }
        }
        let got = match result {
            Ok(()) => {
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut h.conn)
                    .await
            }
            Err(e) => Err(e),
        };
        match got {
            Ok(true) => {
                h.release.push((key, now + hold));
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                // A broken connection loses its locks: start afresh next time.
                *held = None;
                Err(self.db(&format!("claiming {what:?}"), e))
            }
        }
    }
}
