#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::AtomicU8;

use super::*;
use crate::chain::verify;
use crate::event::EventKind;
use crate::memory::MemoryBackend;

/// A backend that is up, down (retryable failures) or refusing (permanent failures).
#[derive(Default)]
struct Switchable {
    mem: MemoryBackend,
    /// 0 up, 1 down, 2 refusing.
    mode: AtomicU8,
}

impl AuditBackend for Arc<Switchable> {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        match self.mode.load(Ordering::SeqCst) {
            0 => self.mem.append(batch).await,
            1 => Err(AuditError::transient("store is a read-only standby")),
            _ => Err(AuditError::permanent("batch refused")),
        }
    }
}

fn ev(n: i64) -> AuditEvent {
    AuditEvent {
        time_ms: n,
        kind: EventKind::Decision,
        actor: Some("alice".into()),
        tenant: "t".into(),
        detail: serde_json::json!({ "n": n }).into(),
    }
}

fn seen(b: &Switchable) -> Vec<i64> {
    b.mem.events("t").iter().map(|e| e.event.time_ms).collect()
}

#[tokio::test]
async fn events_spool_while_the_store_is_down_and_ship_in_order_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Switchable::default());
    let s = Spooled::open(backend.clone(), dir.path().join("spool/gw.jsonl")).unwrap();
    s.append(&[ev(1)]).await.unwrap();
    assert_eq!(seen(&backend), [1]);
    assert!(!s.path().exists());

    backend.mode.store(1, Ordering::SeqCst);
    s.append(&[ev(2), ev(3)]).await.unwrap();
    assert!(s.has_pending());
    assert!(s.path().exists());
    // The store is back, but events keep going to the spool until it is drained: order holds.
    backend.mode.store(0, Ordering::SeqCst);
    s.append(&[ev(4)]).await.unwrap();
    assert_eq!(seen(&backend), [1]);
    // A drain while the store is down again keeps everything.
    backend.mode.store(1, Ordering::SeqCst);
    assert!(s.drain().await.is_err());
    backend.mode.store(0, Ordering::SeqCst);
    assert_eq!(s.drain().await.unwrap(), 3);
    assert_eq!(seen(&backend), [1, 2, 3, 4]);
    assert!(!s.has_pending());
    assert!(!s.path().exists());
    assert!(!s.path().with_extension("shipping").exists());
    s.append(&[ev(5)]).await.unwrap();
    assert_eq!(seen(&backend), [1, 2, 3, 4, 5]);
    assert!(verify(backend.mem.events("t")).is_intact());
}

#[tokio::test]
async fn permanent_errors_are_not_hidden_in_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Switchable::default());
    backend.mode.store(2, Ordering::SeqCst);
    let s = Spooled::open(backend.clone(), dir.path().join("gw.jsonl")).unwrap();
    assert!(s.append(&[ev(1)]).await.is_err());
    assert!(!s.has_pending());
}

#[tokio::test]
async fn a_spool_left_by_a_crash_is_shipped_after_restart_and_a_torn_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let backend = Arc::new(Switchable::default());
    backend.mode.store(1, Ordering::SeqCst);
    {
        let s = Spooled::open(backend.clone(), path.clone()).unwrap();
        s.append(&[ev(1), ev(2)]).await.unwrap();
    }
    // A crash while writing the next batch leaves half a line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"time_ms\":3,\"kind\":\"dec").unwrap();
    drop(f);
    backend.mode.store(0, Ordering::SeqCst);
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    assert!(s.has_pending());
    assert_eq!(s.drain().await.unwrap(), 2);
    assert_eq!(seen(&backend), [1, 2]);
}

#[tokio::test]
async fn the_spool_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Switchable::default());
    backend.mode.store(1, Ordering::SeqCst);
    let s = Spooled::open(backend, dir.path().join("gw.jsonl")).unwrap();
    s.append(&[ev(1)]).await.unwrap();
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
