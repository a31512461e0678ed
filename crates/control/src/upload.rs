//! DR audit upload (issue 5 item 3): a DR gateway audits into its own hash chain, in its own
//! local store; when the control plane is reachable it uploads those events, and the control
//! plane appends them to the tenant's main chain, each with its origin in its detail
//! (`dr_gateway`: the node, `dr_seq` and `dr_hash`: its place in the DR gateway's chain).
//!
//! The wire format of both ends is here: [`upload_body`] and [`Answer`] for the DR gateway's
//! uploader (in the binary: this crate makes no outbound requests), [`parse_upload`] (pure)
//! checks a batch — every event's hash recomputed over its content, the batch linked, the first
//! event of the chain naming the chain. A chain is identified by the hash of its first
//! event; the control plane records per chain the last uploaded sequence number in the same
//! transaction that appends the events ([`tsuzuku_store::Store::append_dr_audit`]), so a retry
//! after a crash on either side skips what arrived and loses nothing. The DR gateway remembers
//! the acknowledged position in a small file written atomically; when it and the control plane
//! disagree (a lost answer, a restored database), the control plane's answer (409 with its
//! position) wins and the uploader continues from there.
//!
//! Wire: `POST /v1/audit` with the node token, JSON `{"node": ID, "chain": HASH, "events":
//! [{"seq", "prev_hash", "hash", "event": {"time_ms", "kind", "actor", "tenant", "detail"}}]}`,
//! at most [`MAX_UPLOAD_BYTES`] and [`MAX_UPLOAD_EVENTS`] events. Answer: 200 `{"uploaded_to":
//! N, "appended": K}`, 409 `{"uploaded_to": N, "error": …}` when the batch does not continue
//! the chain where the upload stands, 400 for a malformed batch.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tsuzuku_audit::{ChainedEvent, GENESIS_HASH, chain_hash};
use tsuzuku_store::{Store, UploadedEvent};

/// Largest accepted upload body.
pub const MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Most events in one upload.
pub const MAX_UPLOAD_EVENTS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    node: String,
    chain: String,
    events: Vec<ChainedEvent>,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    node: &'a str,
    chain: &'a str,
    events: &'a [ChainedEvent],
}

/// The body of an upload of `events` (consecutive events of the chain whose first event's hash
/// is `chain`) from DR gateway `node`.
pub fn upload_body(
    node: &str,
    chain: &str,
    events: &[ChainedEvent],
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&BatchRef {
        node,
        chain,
        events,
    })
}

/// The control plane's answer to an upload (200 and 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The last sequence number of the chain the control plane holds.
    pub uploaded_to: i64,
    /// Events appended by this upload.
    #[serde(default)]
    pub appended: usize,
    /// Why the batch was refused (409).
    #[serde(default)]
    pub error: Option<String>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn valid_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A checked upload: who sent it, which chain, and the events as they are to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub node: String,
    pub chain: String,
    pub events: Vec<UploadedEvent>,
}

/// Parses and checks an upload for `tenant` (pure): ids well formed, 1 to
/// [`MAX_UPLOAD_EVENTS`] events of `tenant`, each matching its hash, linked in order, and the
/// chain's first event (if present) being the one that names the chain. The events' details
/// get `dr_gateway`, `dr_seq` and `dr_hash` (a detail that is not an object is kept under
/// `value`).
pub fn parse_upload(body: &[u8], tenant: &str) -> Result<Upload, String> {
    let b: Batch = serde_json::from_slice(body).map_err(|e| format!("not an audit upload: {e}"))?;
    if !valid_id(&b.node) {
        return Err("node must be 1-128 characters of letters, digits, - _ . :".into());
    }
    if !valid_hash(&b.chain) {
        return Err(
            "chain must be the hash of the chain's first event (64 lowercase hex digits)".into(),
        );
    }
    if b.events.is_empty() || b.events.len() > MAX_UPLOAD_EVENTS {
        return Err(format!(
            "an upload holds 1 to {MAX_UPLOAD_EVENTS} events, not {}",
            b.events.len()
        ));
    }
    let mut prev: Option<&ChainedEvent> = None;
    for e in &b.events {
        let seq = e.seq;
        if seq < 1 {
            return Err(format!("event sequence number {seq} is not positive"));
        }
        if e.event.tenant != tenant {
            return Err(format!(
                "event #{seq} is of tenant {:?}; this control plane serves tenant {tenant:?}",
                e.event.tenant
            ));
        }
        if chain_hash(seq, &e.prev_hash, &e.event) != e.hash {
            return Err(format!(
                "event #{seq} does not match its hash: it was changed after it was chained"
            ));
        }
        if seq == 1 && (e.prev_hash != GENESIS_HASH || e.hash != b.chain) {
            return Err("event #1 is not the first event of the named chain".into());
        }
        if let Some(p) = prev
            && (seq != p.seq.saturating_add(1) || e.prev_hash != p.hash)
        {
            return Err(format!(
                "event #{seq} does not follow #{} in the batch",
                p.seq
            ));
        }
        prev = Some(e);
    }
    let node = b.node;
    let events = b
        .events
        .into_iter()
        .map(|e| {
            let mut event = e.event;
            let mut detail = match event.detail.to_value() {
                serde_json::Value::Object(m) => m,
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("value".into(), other);
                    m
                }
            };
            detail.insert("dr_gateway".into(), serde_json::json!(node));
            detail.insert("dr_seq".into(), serde_json::json!(e.seq));
            detail.insert("dr_hash".into(), serde_json::json!(e.hash));
            event.detail = serde_json::Value::Object(detail).into();
            UploadedEvent {
                dr_seq: e.seq,
                dr_prev_hash: e.prev_hash,
                dr_hash: e.hash,
                event,
            }
        })
        .collect();
    Ok(Upload {
        node,
        chain: b.chain,
        events,
    })
}

/// What the endpoint answers: status and JSON body.
pub(crate) async fn accept(store: &Store, body: &[u8], now_ms: i64) -> (u16, String) {
    let up = match parse_upload(body, store.tenant_id()) {
        Ok(u) => u,
        Err(e) => return (400, e),
    };
    let node = up.node.clone();
    match store
        .append_dr_audit(&up.chain, &up.node, up.events, now_ms)
        .await
    {
        Ok(tsuzuku_store::DrAuditUpload::Accepted { appended, last_seq }) => {
            if appended > 0 {
                tracing::info!(node = %node, appended, uploaded_to = last_seq, "DR gateway audit events appended");
            }
            let a = Answer {
                uploaded_to: last_seq,
                appended,
                error: None,
            };
            (200, serde_json::to_string(&a).unwrap_or_default())
        }
        Ok(tsuzuku_store::DrAuditUpload::OutOfStep { last_seq, reason }) => {
            tracing::warn!(node = %node, uploaded_to = last_seq, %reason, "DR gateway audit upload out of step");
            let a = Answer {
                uploaded_to: last_seq,
                appended: 0,
                error: Some(reason),
            };
            (409, serde_json::to_string(&a).unwrap_or_default())
        }
        Err(tsuzuku_store::StoreError::Invalid(e)) => (400, e),
        Err(e) => {
            tracing::warn!(error = %e, node = %node, "cannot append DR gateway audit events");
            (503, "the audit events cannot be recorded now".into())
        }
    }
}

/// The acknowledged position, as kept on the DR gateway's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The chain it belongs to (hash of its first event).
    pub chain: String,
    /// The last sequence number the control plane acknowledged.
    pub uploaded_to: i64,
}

/// Reads the position file; a missing or unreadable file means nothing is known to be uploaded
/// (the control plane skips what it already has).
pub fn read_position(path: &Path) -> Option<Position> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the position file atomically: a temporary file beside it, fsync, rename.
pub fn write_position(path: &Path, p: &Position) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(p).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
