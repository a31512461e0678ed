//! What a connector remembers between lookups, and how each lookup's outcome changes it — pure,
//! like the rest of the core. The state file ([`crate::statefile`]) keeps a [`Memory`] across
//! restarts.
//!
//! - Verified records: the newest one valid now is followed and remembered.
//! - An authentic record that is newer than the remembered one but expired is remembered too
//!   (it supersedes the older one, and being expired it means normal mode).
//! - Records that are refused for any other reason change nothing.
//! - Withdrawn (NXDOMAIN, or no TXT record at the name): normal mode. The last record stays
//!   remembered for replay protection, marked withdrawn.
//! - DNS unreachable (timeout, SERVFAIL, ...): the remembered state stands (and ends when its
//!   record expires).

use crate::check::{self, Conclusion, Member, Rejection, Verified};
use crate::keys::TrustedKeys;

/// The last verified state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The newest verified record (kept after a withdrawal, for replay protection).
    pub record: Option<Verified>,
    /// When the record was seen withdrawn (unix seconds); `None` while it is published.
    pub withdrawn_at: Option<i64>,
}

/// The outcome of one lookup.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// The TXT records at the name, each a list of strings.
    Records(&'a [Vec<Vec<u8>>]),
    /// No record: NXDOMAIN, or the name has no TXT record.
    Withdrawn,
    /// DNS did not answer usefully (timeout, SERVFAIL, refused, network down).
    Unreachable,
}

/// What one observation led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to do now.
    pub conclusion: Conclusion,
    /// Records that were refused (to log): each with its reason.
    pub rejections: Vec<Rejection>,
    /// Whether the memory changed (save it).
    pub changed: bool,
}

impl Memory {
    /// What the remembered state means at `now`.
    pub fn conclude(&self, now: i64, member: &Member) -> Conclusion {
        if self.withdrawn_at.is_some() {
            return check::withdrawn();
        }
        match &self.record {
            Some(r) => check::conclude(r, now, member),
            None => check::no_record(),
        }
    }

    /// Takes in one lookup's outcome and returns what to do.
    pub fn observe(
        &mut self,
        observation: Observation<'_>,
        trusted: &TrustedKeys,
        now: i64,
        member: &Member,
    ) -> Step {
        let before = self.clone();
        let mut rejections = Vec::new();
        let conclusion = match observation {
            Observation::Unreachable => self.conclude(now, member),
            Observation::Withdrawn => {
                if self.withdrawn_at.is_none() {
                    self.withdrawn_at = Some(now);
                }
                check::withdrawn()
            }
            Observation::Records([]) => {
                if self.withdrawn_at.is_none() {
                    self.withdrawn_at = Some(now);
                }
                check::withdrawn()
            }
            Observation::Records(records) => {
                self.take_records(records, trusted, now, member, &mut rejections)
            }
        };
        Step {
            changed: *self != before,
            conclusion,
            rejections,
        }
    }

    fn take_records(
        &mut self,
        records: &[Vec<Vec<u8>>],
        trusted: &TrustedKeys,
        now: i64,
        member: &Member,
        rejections: &mut Vec<Rejection>,
    ) -> Conclusion {
        let mut best: Option<Conclusion> = None;
        let mut newer_expired: Option<Verified> = None;
        for strings in records {
            let verified = match check::authenticate(strings, trusted) {
                Ok(v) => v,
                Err(e) => {
                    rejections.push(e);
                    continue;
                }
            };
            match check::evaluate(verified.clone(), now, self.record.as_ref(), member) {
                Ok(c) => {
                    if best.as_ref().is_none_or(|b| c.issued_at() > b.issued_at()) {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    // Evaluation checks for replay first: an expired record here is not older
                    // than the remembered one.
                    if matches!(e, Rejection::Expired { .. })
                        && newer_expired
                            .as_ref()
                            .is_none_or(|n| verified.issued_at() > n.issued_at())
                    {
                        newer_expired = Some(verified);
                    }
                    rejections.push(e);
                }
            }
        }
        if let Some(c) = best {
            self.record = c.record.clone();
            self.withdrawn_at = None;
            return c;
        }
        if let Some(expired) = newer_expired {
            let supersedes = self
                .record
                .as_ref()
                .is_none_or(|r| expired.issued_at() >= r.issued_at());
            if supersedes {
                self.record = Some(expired);
                self.withdrawn_at = None;
            }
        }
        self.conclude(now, member)
    }
}

#[cfg(test)]
mod tests;
