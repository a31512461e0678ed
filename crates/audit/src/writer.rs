//! Group-commit audit writer: many tasks call [`AuditWriter::record`]; one writer task drains
//! whatever is queued into a single batch and commits it through an [`AuditBackend`], then
//! wakes every caller of that batch.
//!
//! Guarantees:
//! - [`AuditWriter::record`] returns `Ok` only after the backend committed the batch containing
//!   the event; it returns `Err` if that batch could not be committed.
//! - Nothing is dropped. The queue is bounded: when the backend is slower than producers, the
//!   queue fills and `record` waits for room. This is **backpressure** on the callers (e.g. the
//!   gateway's request path slows down), never loss of audit events.
//! - A transient backend error is retried with exponential backoff a few times; if the batch
//!   still fails, every waiter of that batch gets the error. Later batches are tried afresh.
//! - If a caller's `record` future is dropped after the event was queued, the event is still
//!   written.
//!
//! The writer runs on a thread of its own (with a single-threaded Tokio runtime), not as a task
//! among the callers': its round trips to the backend (a transaction is several statements,
//! each a hand-off to the database driver and back) then never queue behind the callers' tasks
//! on a busy runtime, which is what bounded the group commit's throughput and latency.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::event::AuditEvent;

/// Why an audit event could not be recorded. `Clone` because one failed batch answers many
/// waiters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The backend failed to commit the batch. `retryable` says whether trying again may help
    /// (database unavailable or busy) or not (the batch itself was refused).
    #[error("audit backend failed to commit a batch: {message}")]
    Backend { message: String, retryable: bool },
    /// The writer task is gone (its runtime shut down or it panicked); nothing more can be
    /// recorded through this handle. Restart the process or spawn a new writer.
    #[error("the audit writer task has stopped; the event was not recorded")]
    WriterStopped,
}

impl AuditError {
    /// A failure that may go away on retry (database busy, unreachable, failing over).
    pub fn transient(message: impl Into<String>) -> Self {
        AuditError::Backend {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that a retry will not fix (the batch itself is unacceptable).
    pub fn permanent(message: impl Into<String>) -> Self {
        AuditError::Backend {
            message: message.into(),
            retryable: false,
        }
    }

    /// Whether the writer should retry after this error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AuditError::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// Durable storage for audit events. `append` must commit the whole batch atomically (all or
/// nothing) and in order, linking each event into its tenant's hash chain. The batch is
/// borrowed, so the writer can retry it without keeping a copy.
pub trait AuditBackend: Send + Sync + 'static {
    fn append(&self, batch: &[AuditEvent]) -> impl Future<Output = Result<(), AuditError>> + Send;
}

impl<B: AuditBackend> AuditBackend for Arc<B> {
    fn append(&self, batch: &[AuditEvent]) -> impl Future<Output = Result<(), AuditError>> + Send {
        B::append(self, batch)
    }
}

/// Tuning for [`AuditWriter::spawn_with`].
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Events that may wait in the queue before `record` blocks (backpressure). At least 1.
    pub capacity: usize,
    /// Most events committed in one batch. At least 1.
    pub max_batch: usize,
    /// Tries per batch, the first included. At least 1.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Upper bound for the wait between retries.
    pub max_backoff: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            capacity: 4096,
            max_batch: 512,
            attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

type Waiter = oneshot::Sender<Result<(), AuditError>>;

/// Handle for recording audit events; cheap to clone. The writer task ends once every handle
/// is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<(AuditEvent, Waiter)>,
    /// Set once the writer's task was aborted (or its runtime shut down): from then on nothing
    /// is accepted, even if the writer thread has not noticed yet.
    stopped: Arc<AtomicBool>,
}

impl AuditWriter {
    /// Starts the writer task on the current Tokio runtime (must be called from within one)
    /// with a queue of `capacity` events and default batching and retry settings.
    pub fn spawn<B: AuditBackend>(backend: B, capacity: usize) -> (AuditWriter, JoinHandle<()>) {
        Self::spawn_with(
            backend,
            WriterOptions {
                capacity,
                ..WriterOptions::default()
            },
        )
    }

    /// Starts the writer with explicit options. Must be called from within a Tokio runtime.
    ///
    /// The writer runs on its own thread (`tsuzuku-audit`); the returned handle is a task on
    /// the caller's runtime that ends when the writer has ended. Aborting that task (or shutting
    /// down the caller's runtime) stops the writer as aborting the writer task itself would.
    /// If no thread can be started, the writer runs as a task on the caller's runtime instead.
    pub fn spawn_with<B: AuditBackend>(
        backend: B,
        options: WriterOptions,
    ) -> (AuditWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let stopped = Arc::new(AtomicBool::new(false));
        let handle = spawn_thread(backend, rx, options, Arc::clone(&stopped));
        (AuditWriter { tx, stopped }, handle)
    }

    /// Queues `ev` and waits until the batch containing it is committed. Waits for room first
    /// if the queue is full (backpressure).
    pub async fn record(&self, ev: AuditEvent) -> Result<(), AuditError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(AuditError::WriterStopped);
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send((ev, done_tx))
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        done_rx.await.unwrap_or(Err(AuditError::WriterStopped))
    }

    /// Events queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity().saturating_sub(self.tx.capacity())
    }
}

type Queue = mpsc::Receiver<(AuditEvent, Waiter)>;

/// Runs [`run`] on a thread of its own; see [`AuditWriter::spawn_with`].
fn spawn_thread<B: AuditBackend>(
    backend: B,
    rx: Queue,
    options: WriterOptions,
    stopped: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for the audit writer thread; running it as a task");
            return tokio::spawn(run(backend, rx, options));
        }
    };
    // `stop` ends the writer when the returned task is aborted or dropped with its runtime;
    // `done` ends the returned task when the writer ends.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    // The backend and queue wait in `slot`: the thread takes them when it starts; if it cannot
    // start, they are still there and run as a task on the caller's runtime instead.
    let slot = Arc::new(std::sync::Mutex::new(Some((backend, rx, options))));
    let for_thread = Arc::clone(&slot);
    let started = std::thread::Builder::new()
        .name("tsuzuku-audit".into())
        .spawn(move || {
            let taken = for_thread.lock().ok().and_then(|mut s| s.take());
            if let Some((backend, rx, options)) = taken {
                runtime.block_on(async move {
                    tokio::select! {
                        () = run(backend, rx, options) => {}
                        _ = stop_rx => tracing::debug!("audit writer stopped: its task was aborted"),
                    }
                });
            }
            let _ = done_tx.send(());
        });
    match started {
        Ok(_) => {
            // Built before the task, so it marks the writer stopped even if the task is
            // aborted before it first runs.
            let guard = (stop_tx, StopOnDrop(stopped));
            tokio::spawn(async move {
                let _guard = guard;
                let _ = done_rx.await;
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the audit writer thread; running it as a task");
            let taken = slot.lock().ok().and_then(|mut s| s.take());
            tokio::spawn(async move {
                if let Some((backend, rx, options)) = taken {
                    run(backend, rx, options).await;
                }
            })
        }
    }
}

/// Marks the writer stopped when the task holding it ends or is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn run<B: AuditBackend>(
    backend: B,
    mut rx: mpsc::Receiver<(AuditEvent, Waiter)>,
    options: WriterOptions,
) {
    let max_batch = options.max_batch.max(1);
    let mut queued: Vec<(AuditEvent, Waiter)> = Vec::with_capacity(max_batch);
    // `recv_many` waits for at least one event, then takes everything already queued (up to
    // `max_batch`): that is the group commit. It returns 0 once all handles are dropped and
    // the queue is empty.
    while rx.recv_many(&mut queued, max_batch).await > 0 {
        let (events, waiters): (Vec<AuditEvent>, Vec<Waiter>) = queued.drain(..).unzip();
        let result = commit(&backend, &events, &options).await;
        for w in waiters {
            // A waiter that went away does not care about the answer.
            let _ = w.send(result.clone());
        }
    }
    tracing::debug!("audit writer stopped: all handles dropped and queue drained");
}

async fn commit<B: AuditBackend>(
    backend: &B,
    batch: &[AuditEvent],
    options: &WriterOptions,
) -> Result<(), AuditError> {
    let attempts = options.attempts.max(1);
    let mut backoff = options.initial_backoff;
    let mut attempt = 1;
    let len = batch.len();
    loop {
        match backend.append(batch).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= attempts => {
                tracing::error!(attempts, error = %e, "audit batch failed; giving up");
                return Err(e);
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(
                    attempt,
                    attempts,
                    events = len,
                    error = %e,
                    "audit batch failed; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(options.max_backoff);
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(events = len, error = %e, "audit batch refused; not retrying");
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests;
