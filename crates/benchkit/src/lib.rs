//! Drivers for the benchmarks in `bench/`: they start the real `tsuzuku` binary as separate
//! processes (gateways, connectors), put a steady client load through them, inject faults
//! (SIGKILL, latency through `tsuzuku_testkit::delay`) and turn what clients and the connector's
//! status saw into figures.
//!
//! Invariant: this crate measures from the outside, like a user. It does not link the gateway
//! or the connector crates; it talks to them only through processes, sockets and the
//! connector's `/status` text, so a benchmark cannot take a shortcut a real deployment would
//! not have (checked by a test on this crate's manifest).
//!
//! Modules:
//! - [`stats`]: medians and percentiles (pure).
//! - [`status`]: fetching and reading the connector's `/status` text.
//! - [`load`]: a fixed-rate client load and what it says about a failover.
//! - [`procs`]: gateway and connector processes that can be killed and restarted.

pub mod load;
pub mod procs;
pub mod stats;
pub mod status;

#[cfg(test)]
mod tests;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("{0}")]
    Msg(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

/// A whole-number setting from the environment variable `name`: `default` when unset, an
/// error naming the variable when it is not a number or is below `min`.
pub fn env_u64(name: &str, default: u64, min: u64) -> Result<u64, BenchError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| BenchError::Msg(format!("{name}={v:?}: expected a whole number")))?;
            if n < min {
                return Err(BenchError::Msg(format!(
                    "{name}={n}: must be at least {min}"
                )));
            }
            Ok(n)
        }
    }
}
