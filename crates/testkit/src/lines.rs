//! The lines a child process writes (its stdout or stderr), collected in the background so that
//! a test can look at them and wait for one (`site: tokyo`, `dr: active …`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, BufReader, Lines};

use crate::gateway::KitError;

/// How often the waits look at the lines again.
const POLL: Duration = Duration::from_millis(10);

/// Lines collected so far; clones share them.
#[derive(Clone, Debug, Default)]
pub struct LineLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log of the lines `reader` yields, collected by a task that ends with the reader
    /// (call it inside a Tokio runtime).
    pub fn spawn_from<R: AsyncRead + Unpin + Send + 'static>(reader: R) -> Self {
        let log = Self::new();
        log.collect(reader);
        log
    }

    /// Adds the lines `reader` yields to this log, in the background (one log may collect a
    /// process's stdout and stderr together).
    pub fn collect<R: AsyncRead + Unpin + Send + 'static>(&self, reader: R) {
        self.collect_lines(BufReader::new(reader).lines());
    }

    /// Adds the rest of `lines` (some may have been read already) to this log, in the
    /// background.
    pub fn collect_lines<R: AsyncBufRead + Unpin + Send + 'static>(&self, mut lines: Lines<R>) {
        let sink = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.push(l);
            }
        });
    }

    /// Appends one line.
    pub fn push(&self, line: String) {
        self.guard().push(line);
    }

    /// A copy of the lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.guard().clone()
    }

    /// Whether any line so far satisfies `f`.
    pub fn any(&self, mut f: impl FnMut(&str) -> bool) -> bool {
        self.guard().iter().any(|l| f(l))
    }

    /// How many lines so far satisfy `f`.
    pub fn count(&self, mut f: impl FnMut(&str) -> bool) -> usize {
        self.guard().iter().filter(|l| f(l)).count()
    }

    /// The first line so far that satisfies `f`.
    pub fn find(&self, mut f: impl FnMut(&str) -> bool) -> Option<String> {
        self.guard().iter().find(|l| f(l)).cloned()
    }

    /// Waits at most `within` for a line starting with `prefix`; returns the first such line.
    pub async fn wait_line(&self, prefix: &str, within: Duration) -> Result<String, KitError> {
        self.wait_lines(prefix, 1, within).await
    }

    /// Waits at most `within` for a line that is exactly `line`.
    pub async fn wait_exact(&self, line: &str, within: Duration) -> Result<(), KitError> {
        self.wait_for(&format!("{line:?}"), 1, within, |l| l == line)
            .await
            .map(drop)
    }

    /// Waits at most `within` until `n` lines start with `prefix`; returns the `n`-th.
    pub async fn wait_lines(
        &self,
        prefix: &str,
        n: usize,
        within: Duration,
    ) -> Result<String, KitError> {
        self.wait_for(&format!("starting with {prefix:?}"), n, within, |l| {
            l.starts_with(prefix)
        })
        .await
    }

    /// Waits at most `within` until `n` (at least one) lines satisfy `matches`; returns the
    /// `n`-th. `what` describes such a line for the error ("no line {what} within …"), which
    /// lists the lines seen so far.
    pub async fn wait_for(
        &self,
        what: &str,
        n: usize,
        within: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String, KitError> {
        let start = Instant::now();
        loop {
            let (seen, nth) = {
                let lines = self.guard();
                let found: Vec<&String> = lines.iter().filter(|l| matches(l)).collect();
                (
                    found.len(),
                    found.get(n.saturating_sub(1)).map(|l| (*l).clone()),
                )
            };
            if let Some(l) = nth {
                return Ok(l);
            }
            if start.elapsed() >= within {
                return Err(KitError::Msg(format!(
                    "no line {what} within {within:?} ({seen} of {n} seen); the lines: {:?}",
                    self.guard()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The lines, whatever a panicking holder left (they are only ever appended to).
    fn guard(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
