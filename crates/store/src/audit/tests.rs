#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The append path's SQL shapes, and batches larger than one multi-row INSERT on SQLite (the
//! head row's update rides in the last chunk's query there).

use serde_json::json;
use tsuzuku_audit::{AuditEvent, ChainProblem, EventKind};

use super::*;

#[test]
fn insert_sql_numbers_or_positions_every_placeholder() {
    assert_eq!(
        insert_sql(2, false, Tail::None),
        "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16)"
    );
    let sqlite = insert_sql(3, true, Tail::Head);
    assert!(!sqlite.contains('$'), "{sqlite}");
    // 3 rows of 8 values, then seq, hash and tenant of the head row.
    assert_eq!(sqlite.matches('?').count(), 3 * 8 + 3, "{sqlite}");
    assert!(
        sqlite.ends_with("; UPDATE audit_head SET seq = ?, hash = ? WHERE tenant_id = ?"),
        "{sqlite}"
    );
    assert!(!insert_sql(3, true, Tail::None).contains("UPDATE"));
}

fn event(tenant: &str, i: usize) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + i as i64,
        kind: EventKind::Decision,
        actor: i.is_multiple_of(2).then(|| format!("user-{i}")),
        tenant: tenant.to_owned(),
        detail: json!({"i": i, "path": format!("/p/{i}?\"q\""), "ok": i.is_multiple_of(3)}).into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_several_chunks_link_and_move_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_file(&dir).await;
    let s = root.tenant("chunks");
    let n = INSERT_CHUNK * 2 + 37;
    let seqs = s
        .append_audit((1..=n).map(|i| event("chunks", i)).collect())
        .await
        .unwrap();
    assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>());
    let (head_seq, head_hash) = s.audit_head().await.unwrap().unwrap();
    assert_eq!(head_seq, n as i64);
    let tail = s.audit_tail(1).await.unwrap();
    assert_eq!(tail[0].seq, n as i64);
    assert_eq!(tail[0].hash, head_hash);
    assert_eq!(tail[0].event, event("chunks", n));
    // The next batch links to that head, and the whole chain verifies against it.
    assert_eq!(
        s.append_audit(vec![event("chunks", n + 1)]).await.unwrap(),
        [n as i64 + 1]
    );
    let next = s.audit_events(n as i64 + 1, 1).await.unwrap();
    assert_eq!(next[0].prev_hash, head_hash);
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(s.audit_head().await.unwrap().unwrap().0, n as i64 + 1);
}

/// A failed append is rolled back on its connection, and that connection goes on working: an
/// in-memory store has exactly one connection, so the next append runs on the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_rolls_back_and_leaves_the_connection_usable() {
    let root = StoreRoot::open("sqlite::memory:").await.unwrap();
    refused_then_resumed(&root).await;
}

/// Three events, then a row written past the head from outside: the next batch of two inserts
/// #4 and then hits that row at #5. It is refused as corrupt and rolled back whole (no #4, the
/// head still at #3), no transaction is left open (the pool can write at once), and once the
/// stray row is gone the same store appends.
async fn refused_then_resumed(root: &StoreRoot) {
    let s = root.tenant("rollback");
    let first: Vec<AuditEvent> = (1..=3).map(|i| event("rollback", i)).collect();
    s.append_audit(first).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail)
         VALUES ('rollback', 5, 'x', 'y', 0, 'decision', NULL, '{}')",
    )
    .execute(root.raw_pool())
    .await
    .unwrap();
    let refused = s
        .append_audit(vec![event("rollback", 4), event("rollback", 5)])
        .await;
    match refused {
        Err(StoreError::Corrupt(m)) => assert!(
            m.contains("already exists") && m.contains("audit verification"),
            "{m}"
        ),
        other => panic!("expected a corrupt-chain refusal, got {other:?}"),
    }
    let after: Vec<i64> = s
        .audit_events(1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(after, [1, 2, 3, 5], "the refused batch left rows behind");
    assert_eq!(s.audit_head().await.unwrap().unwrap().0, 3);
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = 'rollback' AND seq = 5")
        .execute(root.raw_pool())
        .await
        .unwrap();
    assert_eq!(
        s.append_audit(vec![event("rollback", 4)]).await.unwrap(),
        [4]
    );
    assert!(s.verify_audit().await.unwrap().is_intact());
}

/// An append abandoned half-way (its future dropped, e.g. the writer task aborted) does not
/// leave a transaction holding the write lock on a pooled connection: the next append goes
/// through at once and the chain stays whole. (An abandoned append whose last statements had
/// already reached SQLite may still commit, as with any dropped transaction whose `COMMIT` was
/// sent; then it commits whole, before the next append.) This is the sqlx transaction path
/// (here an in-memory store); an append on a SQLite file runs to its end on the calling thread
/// once started, so it cannot be abandoned half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_append_leaves_no_open_transaction_behind() {
    let root = StoreRoot::open("sqlite::memory:").await.unwrap();
    let s = root.tenant("abandoned");
    for (next, micros) in (1..).zip((0..40).map(|i| i * 50)) {
        let batch: Vec<AuditEvent> = (0..150).map(|i| event("abandoned", i)).collect();
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(micros),
            s.append_audit(batch),
        )
        .await;
        let head = s.audit_head().await.unwrap().map_or(0, |(seq, _)| seq);
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            s.append_audit(vec![event("abandoned", next)]),
        )
        .await
        .expect("an append after an abandoned one did not finish within 2 s")
        .unwrap();
        assert!(
            got == [head + 1] || got == [head + 151],
            "head {head} before, appended as {got:?}"
        );
    }
    assert!(s.verify_audit().await.unwrap().is_intact());
}

/// On a SQLite file, audit appends have a connection of their own: with every connection of
/// the shared pool taken (a burst of slow reads, say), the gateway's audit writer still
/// commits, instead of waiting up to the pool's acquire timeout while requests queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_do_not_wait_for_the_shared_pool() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_file(&dir).await;
    let s = root.tenant("busy");
    s.append_audit(vec![event("busy", 1)]).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..crate::MAX_CONNECTIONS {
        held.push(root.raw_pool().acquire().await.unwrap());
    }
    // The shared pool is exhausted: a read waits.
    let read = tokio::time::timeout(std::time::Duration::from_millis(300), s.audit_head()).await;
    assert!(read.is_err(), "a read got a connection: {read:?}");
    let appended = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        s.append_audit(vec![event("busy", 2), event("busy", 3)]),
    )
    .await
    .expect("the append waited for the shared pool")
    .unwrap();
    assert_eq!(appended, [2, 3]);
    drop(held);
    assert_eq!(s.audit_head().await.unwrap().unwrap().0, 3);
    assert!(s.verify_audit().await.unwrap().is_intact());
}

/// A store in a new file under `dir`.
async fn open_file(dir: &tempfile::TempDir) -> StoreRoot {
    StoreRoot::open(&format!("sqlite://{}/store.db", dir.path().display()))
        .await
        .unwrap()
}

/// A store in a new file under `dir`, with `tenant`'s chain started by one event.
async fn started(dir: &tempfile::TempDir, tenant: &str) -> (StoreRoot, Store) {
    let root = open_file(dir).await;
    let s = root.tenant(tenant);
    assert_eq!(s.append_audit(vec![event(tenant, 1)]).await.unwrap(), [1]);
    (root, s)
}

/// The same on a SQLite file, where the append runs on the appender's own connection
/// (rusqlite) and the pool's connections are others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_on_a_file_rolls_back_and_the_appender_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_file(&dir).await;
    refused_then_resumed(&root).await;
}

/// The gateway's audit writer runs on a current-thread runtime of its own; appends work there
/// as on a multi-threaded runtime, and what one wrote the other continues.
#[test]
fn appends_work_on_current_thread_and_multi_thread_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        let root = StoreRoot::open(&url).await.unwrap();
        let s = root.tenant("flavours");
        assert_eq!(
            s.append_audit(vec![event("flavours", 1)]).await.unwrap(),
            [1]
        );
        root.close().await;
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(async {
        let root = StoreRoot::open(&url).await.unwrap();
        let s = root.tenant("flavours");
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        s.append_audit(vec![event("flavours", t * 100 + i)])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.audit_head().await.unwrap().unwrap().0, 41);
        assert!(s.verify_audit().await.unwrap().is_intact());
    });
}

/// Another connection holding the write lock beyond the busy timeout makes an append fail as
/// unavailable (the audit writer retries those), not as corrupt; once the lock is released
/// the append goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_is_a_transient_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (root, s) = started(&dir, "locked").await;
    let mut other = root.raw_pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let refused = s.append_audit(vec![event("locked", 2)]).await;
    match &refused {
        Err(e @ StoreError::Unavailable(m)) => {
            assert!(e.is_transient());
            assert!(m.contains("locked by another writer"), "{m}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
    drop(other);
    assert_eq!(s.append_audit(vec![event("locked", 2)]).await.unwrap(), [2]);
    assert!(s.verify_audit().await.unwrap().is_intact());
}

/// After the store is closed, appends fail as unavailable instead of reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, s) = started(&dir, "closed").await;
    root.close().await;
    let refused = s.append_audit(vec![event("closed", 2)]).await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("closed")),
        "{refused:?}"
    );
}

/// Appends ten events, `from` to `from + 9`, in one transaction of `appender`.
fn append_ten(appender: &SqliteAppender, tenant: &str, from: usize) {
    let batch: Vec<AuditEvent> = (0..10).map(|i| event(tenant, from + i)).collect();
    let refs: Vec<&AuditEvent> = batch.iter().collect();
    appender.append(tenant, &refs).unwrap();
}

/// While the log grows towards the restart threshold, the helper syncs it every FLUSH_PAGES
/// pages of appends, so that a restart's own syncs find little of it still to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_syncs_the_log_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = started(&dir, "synced").await;
    root.close().await;
    let path = std::fs::canonicalize(dir.path().join("store.db")).unwrap();
    // A threshold never reached: only the syncs ahead of it.
    let appender = SqliteAppender::new(&path, None).with_restart_pages(i32::MAX);
    let flushes = appender.flushes();
    let appended = |from: usize, batches: usize| {
        for b in 0..batches {
            append_ten(&appender, "synced", from + b * 10);
        }
    };
    // Each commit writes at least the events' page, the key's and the head's: 100 commits
    // leave some 300 pages, several times FLUSH_PAGES.
    tokio::task::block_in_place(|| appended(2, 100));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let count = || flushes.load(std::sync::atomic::Ordering::Relaxed);
    // Asked again each time the log has grown by FLUSH_PAGES since the last ask.
    while count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper synced the log {} times, expected 2 or more",
            count()
        );
        tokio::task::block_in_place(|| appended(2 + 1_000_000, 30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // At most once per FLUSH_PAGES pages of log (4 KiB pages and a 24-byte frame header).
    let wal = path.with_file_name("store.db-wal");
    let frames = std::fs::metadata(&wal).unwrap().len() / (4096 + 24);
    assert!(
        count() <= frames / super::wal::FLUSH_PAGES as u64 + 1,
        "{} syncs for a log of {frames} pages",
        count()
    );
    appender.close();
}

/// Under a steady stream of appends the write-ahead log stays bounded: once a commit leaves
/// the threshold's pages in it, the helper copies it and the appender's own checkpoint lets the
/// next transaction start it over. Without that the file only grows (the pool's background
/// checkpoints never find it wholly copied between two appends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_continuous_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = started(&dir, "steady").await;
    // The pool (and its background checkpoints, which would make some of the appender's own
    // busy now and then) is closed while the appenders run alone.
    root.close().await;
    let path = std::fs::canonicalize(dir.path().join("store.db")).unwrap();
    let wal = path.with_file_name("store.db-wal");
    const BATCHES: usize = 2_000;
    let grown = |appender: &SqliteAppender, from: usize| {
        let mut max = 0;
        for b in 0..BATCHES {
            append_ten(appender, "steady", from + b * 10);
            max = max.max(std::fs::metadata(&wal).unwrap().len());
        }
        max
    };
    // 20,000 events of about 200 bytes: some 1,300 pages of log.
    let bounded = SqliteAppender::new(&path, None).with_restart_pages(64);
    let rewinds = bounded.rewinds();
    let bounded_max = tokio::task::block_in_place(|| grown(&bounded, 2));
    bounded.close();
    // The same without restarts (a threshold never reached), from a log started over.
    let truncate = rusqlite::Connection::open(&path).unwrap();
    truncate
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(truncate);
    let unbounded = SqliteAppender::new(&path, None).with_restart_pages(i32::MAX);
    let unbounded_max = tokio::task::block_in_place(|| grown(&unbounded, 2 + BATCHES * 10));
    unbounded.close();
    let restarts = rewinds.load(std::sync::atomic::Ordering::Relaxed);
    // How far past the threshold the log gets depends on how long the helper's checkpoint
    // takes (its fsyncs) while appends go on; the restarts keep it a fraction of the whole.
    assert!(
        restarts >= 2,
        "the log should have started over repeatedly, did {restarts} times"
    );
    assert!(
        unbounded_max > 1_000 * 4096,
        "without restarts the log should hold every append: {unbounded_max} bytes"
    );
    assert!(
        bounded_max * 2 < unbounded_max,
        "with restarts at 64 pages the log grew to {bounded_max} bytes, without to {unbounded_max}"
    );
    let root = open_file(&dir).await;
    let s = root.tenant("steady");
    assert_eq!(
        s.audit_head().await.unwrap().unwrap().0,
        1 + 2 * BATCHES as i64 * 10
    );
    assert!(s.verify_audit().await.unwrap().is_intact());
}

/// A reader holding old pages (a long `audit verify`, say) keeps the log from starting over,
/// never the appends from going on; once it is done, the log starts over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_holding_old_pages_delays_the_restart_only() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = started(&dir, "read").await;
    root.close().await;
    let path = std::fs::canonicalize(dir.path().join("store.db")).unwrap();
    let wal = path.with_file_name("store.db-wal");
    let appender = SqliteAppender::new(&path, None).with_restart_pages(32);
    let rewinds = appender.rewinds();
    let rewound = || rewinds.load(std::sync::atomic::Ordering::Relaxed);
    let mut next = 2;
    let mut append = |batches: usize| {
        for _ in 0..batches {
            let batch: Vec<AuditEvent> = (0..10).map(|i| event("read", next + i)).collect();
            next += 10;
            let refs: Vec<&AuditEvent> = batch.iter().collect();
            tokio::task::block_in_place(|| appender.append("read", &refs)).unwrap();
        }
    };
    append(20);
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    let before = rewound();
    append(300);
    let held = std::fs::metadata(&wal).unwrap().len();
    assert!(
        held > 150 * 4096,
        "the log should have grown past the reader's pages: {held}"
    );
    assert_eq!(
        rewound(),
        before,
        "the log cannot start over under a reader"
    );
    // The reader still sees its snapshot.
    let still: i64 = reader
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, seen);
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // Once the reader is gone the log starts over: the helper copies it while appends go on,
    // then the appender's next try finds it wholly copied.
    let mut tries = 0;
    while rewound() == before {
        assert!(
            tries < 5_000,
            "the log never started over after the reader left"
        );
        append(1);
        tries += 1;
    }
    // The file keeps its size and new frames go to its start: as many batches as it took the
    // reader's log to grow do not make it any longer.
    let restarted = std::fs::metadata(&wal).unwrap().len();
    append(20);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        restarted,
        "the log kept growing after it started over"
    );
    appender.close();
    let root = open_file(&dir).await;
    assert!(
        root.tenant("read")
            .verify_audit()
            .await
            .unwrap()
            .is_intact()
    );
}

/// Verification reads the chain in pages by seq; rows numbered by no integer (SQLite keeps
/// text and reals in an integer column) sort among or after the numbers and are each read once
/// whatever the page size, and every intact row across page boundaries is checked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reads_every_row_once_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_file(&dir).await;
    let s = root.tenant("pages");
    s.append_audit((1..=10).map(|i| event("pages", i)).collect())
        .await
        .unwrap();
    for page in [1, 2, 3, 7, 10, 11, 10_000] {
        let report = s.verify_audit_in_pages(page).await.unwrap();
        assert!(report.is_intact(), "page {page}: {report}");
        assert_eq!(report.checked, 10, "page {page}");
    }
    // Two rows with text seqs, one with a real between 4 and 5.
    for (seq, text) in [(9_i64, "x-9"), (10, "y-10")] {
        sqlx::query("UPDATE audit_events SET seq = $1 WHERE tenant_id = $2 AND seq = $3")
            .bind(text)
            .bind("pages")
            .bind(seq)
            .execute(root.raw_pool())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE audit_events SET seq = 4.5 WHERE tenant_id = $1 AND seq = $2")
        .bind("pages")
        .bind(5_i64)
        .execute(root.raw_pool())
        .await
        .unwrap();
    for page in [1, 2, 3, 4, 9, 10, 11] {
        let report = s.verify_audit_in_pages(page).await.unwrap();
        assert_eq!(report.checked, 10, "page {page}: {report}");
        assert_eq!(
            report.problems,
            vec![
                ChainProblem::BadSeq {
                    stored: "4.5".into()
                },
                ChainProblem::BadSeq {
                    stored: "\"x-9\"".into()
                },
                ChainProblem::BadSeq {
                    stored: "\"y-10\"".into()
                },
                ChainProblem::Removed {
                    after_seq: 4,
                    missing_from: 5,
                    missing_to: 5
                },
                ChainProblem::HeadMismatch {
                    last_seq: 8,
                    head_seq: 10
                },
            ],
            "page {page}"
        );
    }
}

/// SQLite keeps any bytes written into a text column. A row whose text is not UTF-8 is named
/// (and verification goes on past it), not a failure to read its whole page.
#[tokio::test]
async fn text_that_is_not_utf8_is_named_not_a_read_failure() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_file(&dir).await;
    let s = root.tenant("bytes");
    s.append_audit((1..=4).map(|i| event("bytes", i)).collect())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_events SET actor = CAST(X'626fff62' AS TEXT) WHERE tenant_id = $1 AND seq = 2",
    )
    .bind("bytes")
    .execute(root.raw_pool())
    .await
    .unwrap();
    for page in [1, 3, 10_000] {
        let report = s.verify_audit_in_pages(page).await.unwrap();
        assert_eq!(report.checked, 4, "page {page}: {report}");
        match report.problems.as_slice() {
            [ChainProblem::Unreadable { seq: 2, reason }] => {
                assert!(
                    reason.contains("actor is text that is not UTF-8"),
                    "{reason}"
                );
            }
            other => panic!("page {page}: {other:?}"),
        }
    }
}
