//! A steady client load: one request every `interval`, each in its own task so that a stalled
//! request never slows the sending down (as with many browser tabs), and the outcome of every
//! request. [`failover`] turns the outcomes around a fault into figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::task::JoinHandle;

#[cfg(test)]
mod tests;

/// One request of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it was sent.
    pub start: Instant,
    /// When its answer was complete, or when it failed.
    pub end: Instant,
    /// A 200 answer with its whole body.
    pub ok: bool,
    /// The HTTP status, if any answer came.
    pub status: Option<u16>,
}

/// A running load. Stop it with [`Load::stop`]; dropping it stops the sending too.
pub struct Load {
    records: Arc<Mutex<Vec<Record>>>,
    /// Start times of the requests still waiting, by sequence number.
    in_flight: Arc<Mutex<BTreeMap<u64, Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Load {
    /// Sends `GET {url}?seq=N` with `headers` every `interval` through `client`.
    pub fn start(
        client: reqwest::Client,
        url: String,
        headers: HeaderMap,
        interval: Duration,
    ) -> Self {
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let in_flight: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
        let seq = Arc::new(AtomicU64::new(0));
        let task = {
            let (records, in_flight) = (records.clone(), in_flight.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                // Catching up after a stall would send a burst no user sends.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let req = client
                        .get(format!("{url}?seq={n}"))
                        .headers(headers.clone());
                    let (records, in_flight) = (records.clone(), in_flight.clone());
                    let start = Instant::now();
                    lock(&in_flight).insert(n, start);
                    tokio::spawn(async move {
                        let (ok, status) = match req.send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let body = r.bytes().await;
                                (status == 200 && body.is_ok(), Some(status))
                            }
                            Err(_) => (false, None),
                        };
                        let rec = Record {
                            start,
                            end: Instant::now(),
                            ok,
                            status,
                        };
                        // Recorded before it leaves the in-flight set, so that a reader never
                        // misses a request.
                        lock(&records).push(rec);
                        lock(&in_flight).remove(&n);
                    });
                }
            })
        };
        Self {
            records,
            in_flight,
            task,
        }
    }

    /// The outcomes so far (requests still in flight are not included).
    pub fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    /// When the oldest request still waiting for its answer was sent.
    pub fn oldest_in_flight(&self) -> Option<Instant> {
        lock(&self.in_flight).values().min().copied()
    }

    /// Stops sending, waits up to `grace` for requests in flight, and returns every outcome.
    /// Requests still unanswered after `grace` count as failed.
    pub async fn stop(self, grace: Duration) -> Vec<Record> {
        self.task.abort();
        let deadline = Instant::now() + grace;
        while !lock(&self.in_flight).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut out = self.records();
        let now = Instant::now();
        for &start in lock(&self.in_flight).values() {
            out.push(Record {
                start,
                end: now,
                ok: false,
                status: None,
            });
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the load saw around one fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failover {
    /// From the fault to the answer of the first request sent after it that succeeded.
    pub first_ok: Duration,
    /// From the fault until every request in flight at the fault or sent before that first
    /// success had its outcome (at least `first_ok`): the pause a user notices.
    pub settled: Duration,
    /// Requests that failed and ended after the fault (up to `until`).
    pub failed: usize,
    /// Requests that ended after the fault (up to `until`).
    pub requests: usize,
}

/// Figures of a load that ran across a fault at `fault`, looking at outcomes up to `until`.
/// `None` when no request sent after the fault succeeded by `until`.
pub fn failover(records: &[Record], fault: Instant, until: Instant) -> Option<Failover> {
    let seen = || records.iter().filter(|r| r.end > fault && r.end <= until);
    let first_ok_end = seen()
        .filter(|r| r.ok && r.start >= fault)
        .map(|r| r.end)
        .min()?;
    let settled = seen()
        .filter(|r| r.start <= first_ok_end)
        .map(|r| r.end.duration_since(fault))
        .max()
        .unwrap_or_default();
    let first_ok = first_ok_end.duration_since(fault);
    Some(Failover {
        first_ok,
        settled: settled.max(first_ok),
        failed: seen().filter(|r| !r.ok).count(),
        requests: seen().count(),
    })
}

/// Requests that failed, of those that ended in `[from, to]`.
pub fn failed_between(records: &[Record], from: Instant, to: Instant) -> usize {
    records
        .iter()
        .filter(|r| !r.ok && r.end >= from && r.end <= to)
        .count()
}
