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

fn line(n: i64) -> String {
    format!("{}\n", serde_json::to_string(&ev(n)).unwrap())
}

/// Events in the store, after draining until nothing is left.
async fn drain_all(s: &Spooled<Arc<Switchable>>) {
    for _ in 0..5 {
        s.drain().await.unwrap();
    }
}

#[tokio::test]
async fn a_shipping_file_with_only_a_torn_line_does_not_block_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    // A crash left a shipping file holding only half a line, and a spool file behind it.
    std::fs::write(
        path.with_extension("shipping"),
        b"{\"time_ms\":1,\"kind\":\"dec",
    )
    .unwrap();
    std::fs::write(&path, line(2)).unwrap();
    let backend = Arc::new(Switchable::default());
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    assert_eq!(s.drain().await.unwrap(), 1);
    assert_eq!(seen(&backend), [2]);
    assert!(!s.has_pending());
    assert!(!path.with_extension("shipping").exists());
    // The unreadable bytes are kept, and new events go straight to the store again.
    assert_eq!(
        std::fs::read(s.rejected_path()).unwrap(),
        b"{\"time_ms\":1,\"kind\":\"dec\n"
    );
    s.append(&[ev(3)]).await.unwrap();
    assert_eq!(seen(&backend), [2, 3]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_before_the_next_batch_is_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let backend = Arc::new(Switchable::default());
    backend.mode.store(1, Ordering::SeqCst);
    {
        let s = Spooled::open(backend.clone(), path.clone()).unwrap();
        s.append(&[ev(1)]).await.unwrap();
    }
    // A crash while the next (never acknowledged) batch was being written.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"time_ms\":2,\"kind\":\"dec").unwrap();
    drop(f);
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    // Acknowledged after the restart: must not be glued to the torn line and lost.
    s.append(&[ev(3), ev(4)]).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}{}{}", line(1), line(3), line(4))
    );
    backend.mode.store(0, Ordering::SeqCst);
    assert_eq!(s.drain().await.unwrap(), 3);
    assert_eq!(seen(&backend), [1, 3, 4]);
    assert_eq!(
        std::fs::read(s.rejected_path()).unwrap(),
        b"{\"time_ms\":2,\"kind\":\"dec\n"
    );
}

#[test]
fn the_torn_tail_is_found_across_scan_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let rejected = dir.path().join("gw.jsonl.rejected");
    // A torn tail longer than one scan chunk, after one whole line.
    let torn = vec![b'x'; usize::try_from(TAIL_SCAN_CHUNK).unwrap() * 2 + 17];
    let mut content = line(1).into_bytes();
    content.extend_from_slice(&torn);
    std::fs::write(&path, &content).unwrap();
    append_spool(&path, &rejected, &[ev(2)]).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}{}", line(1), line(2))
    );
    let mut kept = torn;
    kept.push(b'\n');
    assert_eq!(std::fs::read(&rejected).unwrap(), kept);
}

#[test]
fn a_failed_write_is_cut_back_so_the_next_batch_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let rejected = dir.path().join("gw.jsonl.rejected");
    append_spool(&path, &rejected, &[ev(1)]).unwrap();
    // The disk fills up halfway through the next batch: it is refused, not acknowledged.
    let batch = line(2);
    let failed = append_lines(&path, &rejected, batch.as_bytes(), |mut f, buf| {
        f.write_all(&buf[..buf.len() / 2])?;
        Err(std::io::Error::other("no space left on device"))
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), line(1));
    // The same when the write goes through but the sync fails.
    let failed = append_lines(&path, &rejected, batch.as_bytes(), |mut f, buf| {
        f.write_all(buf)?;
        Err(std::io::Error::other("I/O error"))
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), line(1));
    append_spool(&path, &rejected, &[ev(3)]).unwrap();
    let read = read_spool(&path, &rejected).unwrap();
    let times: Vec<i64> = read.events.iter().map(|e| e.time_ms).collect();
    assert_eq!(times, [1, 3]);
    assert_eq!(read.rejected, 0);
    assert!(!rejected.exists());
}

#[tokio::test]
async fn corrupt_lines_are_kept_aside_once_and_the_good_events_are_shipped() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let mut content = line(1).into_bytes();
    content.extend_from_slice(b"{\"time_ms\":2,\"tampered\n");
    content.extend_from_slice(line(3).as_bytes());
    content.extend_from_slice(b"\xff\xfe not even UTF-8\n");
    content.extend_from_slice(line(4).as_bytes());
    std::fs::write(&path, &content).unwrap();
    let backend = Arc::new(Switchable::default());
    backend.mode.store(1, Ordering::SeqCst);
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    let kept = b"{\"time_ms\":2,\"tampered\n\xff\xfe not even UTF-8\n".as_slice();
    // Drains while the store is down keep the bad lines once, not once per attempt.
    assert!(s.drain().await.is_err());
    assert!(s.drain().await.is_err());
    assert_eq!(std::fs::read(s.rejected_path()).unwrap(), kept);
    backend.mode.store(0, Ordering::SeqCst);
    assert_eq!(s.drain().await.unwrap(), 3);
    assert_eq!(seen(&backend), [1, 3, 4]);
    assert!(!s.has_pending());
    assert_eq!(std::fs::read(s.rejected_path()).unwrap(), kept);
    let mode = std::fs::metadata(s.rejected_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[tokio::test]
async fn events_wait_behind_a_shipping_file_left_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    // A crash during shipping left only the shipping file.
    std::fs::write(path.with_extension("shipping"), line(1)).unwrap();
    let backend = Arc::new(Switchable::default());
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    assert!(s.has_pending());
    s.append(&[ev(2)]).await.unwrap();
    drain_all(&s).await;
    assert_eq!(seen(&backend), [1, 2]);
    assert!(!s.has_pending());
    assert!(verify(backend.mem.events("t")).is_intact());
}

#[tokio::test]
async fn a_shipping_file_is_still_pending_after_a_drain_that_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.jsonl");
    let backend = Arc::new(Switchable::default());
    let s = Spooled::open(backend.clone(), path.clone()).unwrap();
    backend.mode.store(1, Ordering::SeqCst);
    s.append(&[ev(1)]).await.unwrap();
    assert!(s.drain().await.is_err());
    assert!(path.with_extension("shipping").exists());
    assert!(s.has_pending());
    backend.mode.store(0, Ordering::SeqCst);
    s.append(&[ev(2)]).await.unwrap();
    assert_eq!(seen(&backend), Vec::<i64>::new());
    drain_all(&s).await;
    assert_eq!(seen(&backend), [1, 2]);
}

#[tokio::test]
async fn one_process_at_a_time_uses_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool/gw.jsonl");
    let backend = Arc::new(Switchable::default());
    let first = Spooled::open(backend.clone(), path.clone()).unwrap();
    let Err(e) = Spooled::open(backend.clone(), path.clone()) else {
        panic!("a second user of the spool was let in");
    };
    assert!(matches!(e, SpoolOpenError::InUse { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "another gateway process is using the audit spool {}",
            path.display()
        )),
        "{e}"
    );
    drop(first);
    Spooled::open(backend, path).unwrap();
}

/// A spool left under an earlier version's name (by port alone) is taken over, so its
/// acknowledged events are shipped; one a live process holds is left to it.
#[tokio::test]
async fn a_spool_of_an_earlier_name_is_taken_over_and_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("gateway-8443.jsonl");
    std::fs::write(&legacy, line(1)).unwrap();
    std::fs::write(legacy.with_extension("shipping"), line(0)).unwrap();
    let backend = Arc::new(Switchable::default());
    let s = Spooled::open(
        backend.clone(),
        dir.path().join("gateway-127.0.0.1-8443.jsonl"),
    )
    .unwrap();
    assert!(!s.has_pending());
    assert!(s.adopt(&legacy).unwrap());
    assert!(s.has_pending());
    assert!(!legacy.exists());
    drain_all(&s).await;
    assert_eq!(seen(&backend), [0, 1]);
    // Nothing left to take over the second time.
    assert!(!s.adopt(&legacy).unwrap());

    // Held by a live process: left alone.
    std::fs::write(&legacy, line(2)).unwrap();
    let holder = Spooled::open(backend.clone(), legacy.clone()).unwrap();
    let other = Spooled::open(
        backend.clone(),
        dir.path().join("gateway-10.0.0.1-8443.jsonl"),
    )
    .unwrap();
    assert!(!other.adopt(&legacy).unwrap());
    assert!(legacy.exists());
    drop(holder);
}
