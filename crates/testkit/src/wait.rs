//! Waiting for a condition that a real process makes true some time later (a policy reaching a
//! gateway, a posture report being taken, ...): poll it until it holds or the time is up.

use std::time::{Duration, Instant};

use crate::gateway::KitError;

/// How long [`eventually`] waits between two looks at the condition.
const POLL: Duration = Duration::from_millis(200);

/// Polls `f` until it returns true, for at most `within` (every 200 ms); `what` says what is
/// waited for. Fails with "timed out after … waiting for: {what}".
pub async fn eventually(
    within: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> bool,
) -> Result<(), KitError> {
    let deadline = Instant::now() + within;
    while !f().await {
        if Instant::now() >= deadline {
            return Err(KitError::Msg(format!(
                "timed out after {within:?} waiting for: {what}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
