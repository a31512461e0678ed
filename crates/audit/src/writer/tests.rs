#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use super::*;
use crate::chain::verify;
use crate::event::EventKind;
use crate::memory::MemoryBackend;

fn ev(i: usize) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + i as i64,
        kind: EventKind::Decision,
        actor: Some(format!("user-{}", i % 7)),
        tenant: "default".into(),
        detail: json!({ "i": i }).into(),
    }
}

fn fast_retries(attempts: u32) -> WriterOptions {
    WriterOptions {
        capacity: 1024,
        max_batch: 512,
        attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

/// Test backend: a real in-memory chain behind a switchable failure, a gate and a delay.
#[derive(Default)]
struct TestBackend {
    log: MemoryBackend,
    calls: AtomicU32,
    /// Fail this many calls before succeeding.
    fail_first: AtomicU32,
    /// Fail every call while set.
    failing: AtomicBool,
    /// Failures are permanent (not retryable) instead of transient.
    permanent: bool,
    delay: Duration,
    /// When set, each append waits for a permit.
    gate: Option<Semaphore>,
}

impl AuditBackend for TestBackend {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let fail_now = self.failing.load(Ordering::SeqCst)
            || self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail_now {
            return Err(if self.permanent {
                AuditError::permanent("batch refused")
            } else {
                AuditError::transient("database is locked")
            });
        }
        self.log.append(batch).await
    }
}

/// Waits (up to 10 s) until `cond` holds, so tests do not depend on scheduling speed.
async fn eventually(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

#[tokio::test]
async fn record_returns_only_after_the_event_is_committed() {
    let backend = Arc::new(TestBackend::default());
    let (writer, _task) = AuditWriter::spawn(backend.clone(), 16);
    writer.record(ev(1)).await.unwrap();
    let events = backend.log.events("default");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, ev(1));
    writer.record(ev(2)).await.unwrap();
    assert_eq!(backend.log.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_group_committed_into_few_batches() {
    let backend = Arc::new(TestBackend {
        delay: Duration::from_millis(20),
        ..TestBackend::default()
    });
    let (writer, _task) = AuditWriter::spawn_with(
        backend.clone(),
        WriterOptions {
            capacity: 2000,
            max_batch: 100,
            ..WriterOptions::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.record(ev(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let sizes = backend.log.batch_sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(sizes.iter().all(|&s| s <= 100), "{sizes:?}");
    assert!(
        sizes.len() <= 100,
        "expected group commit, got {} batches",
        sizes.len()
    );
    let events = backend.log.events("default");
    let mut seen: Vec<i64> = events
        .iter()
        .map(|e| e.event.detail.to_value()["i"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    assert!(verify(events).is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_callers_wait_and_loses_nothing() {
    let backend = Arc::new(TestBackend {
        gate: Some(Semaphore::new(0)),
        ..TestBackend::default()
    });
    let (writer, _task) = AuditWriter::spawn_with(
        backend.clone(),
        WriterOptions {
            capacity: 8,
            max_batch: 4,
            ..WriterOptions::default()
        },
    );
    let done = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let w = writer.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let r = w.record(ev(i)).await;
            done.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    // The writer holds one batch in the stuck backend; the queue fills; everyone else waits.
    eventually(|| writer.queued() == 8).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(writer.queued(), 8);
    assert_eq!(done.load(Ordering::SeqCst), 0);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);

    backend.gate.as_ref().unwrap().add_permits(1000);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 50);
    assert_eq!(backend.log.len(), 50);
    assert!(backend.log.batch_sizes().iter().all(|&s| s <= 4));
    assert!(verify(backend.log.events("default")).is_intact());
}

#[tokio::test]
async fn transient_errors_are_retried_until_the_batch_commits() {
    let backend = Arc::new(TestBackend {
        fail_first: AtomicU32::new(2),
        ..TestBackend::default()
    });
    let (writer, _task) = AuditWriter::spawn_with(backend.clone(), fast_retries(4));
    writer.record(ev(1)).await.unwrap();
    assert_eq!(backend.calls.load(Ordering::SeqCst), 3);
    assert_eq!(backend.log.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_keeps_failing_fails_every_waiter_then_the_writer_recovers() {
    let backend = Arc::new(TestBackend {
        gate: Some(Semaphore::new(0)),
        ..TestBackend::default()
    });
    backend.failing.store(true, Ordering::SeqCst);
    let (writer, _task) = AuditWriter::spawn_with(backend.clone(), fast_retries(3));
    // First event enters the stuck backend; the next 10 queue up behind it as one batch.
    let mut tasks = Vec::new();
    for i in 0..11 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.record(ev(i)).await }));
        if i == 0 {
            eventually(|| backend.calls.load(Ordering::SeqCst) == 1).await;
        }
    }
    eventually(|| writer.queued() == 10).await;
    backend.gate.as_ref().unwrap().add_permits(1000);
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err, AuditError::transient("database is locked"));
        assert!(err.to_string().contains("database is locked"));
    }
    // Two batches, three attempts each.
    assert_eq!(backend.calls.load(Ordering::SeqCst), 6);
    assert!(backend.log.is_empty());

    backend.failing.store(false, Ordering::SeqCst);
    writer.record(ev(99)).await.unwrap();
    assert_eq!(backend.log.len(), 1);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let backend = Arc::new(TestBackend {
        permanent: true,
        ..TestBackend::default()
    });
    backend.failing.store(true, Ordering::SeqCst);
    let (writer, _task) = AuditWriter::spawn_with(backend.clone(), fast_retries(5));
    let err = writer.record(ev(1)).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_task_ends_when_every_handle_is_dropped() {
    let backend = Arc::new(TestBackend::default());
    let (writer, task) = AuditWriter::spawn(backend.clone(), 4);
    let second = writer.clone();
    writer.record(ev(1)).await.unwrap();
    drop(writer);
    second.record(ev(2)).await.unwrap();
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer task should end")
        .unwrap();
    assert_eq!(backend.log.len(), 2);
}

#[tokio::test]
async fn recording_after_the_task_died_says_so() {
    let (writer, task) = AuditWriter::spawn(MemoryBackend::new(), 0);
    task.abort();
    let _ = task.await;
    assert_eq!(
        writer.record(ev(1)).await.unwrap_err(),
        AuditError::WriterStopped
    );
}

/// Notes the name of the thread each batch is committed on.
#[derive(Default)]
struct ThreadNoting {
    threads: std::sync::Mutex<Vec<Option<String>>>,
}

impl AuditBackend for Arc<ThreadNoting> {
    async fn append(&self, _batch: &[AuditEvent]) -> Result<(), AuditError> {
        let name = std::thread::current().name().map(str::to_owned);
        self.threads.lock().unwrap().push(name);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_committed_on_the_writer_thread_not_the_callers_runtime() {
    let backend = Arc::new(ThreadNoting::default());
    let (writer, task) = AuditWriter::spawn(backend.clone(), 16);
    for i in 0..3 {
        writer.record(ev(i)).await.unwrap();
    }
    drop(writer);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer should end once its handles are dropped")
        .unwrap();
    let threads = backend.threads.lock().unwrap().clone();
    assert!(!threads.is_empty());
    assert!(
        threads
            .iter()
            .all(|t| t.as_deref() == Some("tsuzuku-audit")),
        "{threads:?}"
    );
}
