//! Login throttling as pure logic with an explicit clock.
//!
//! - [`LockoutPolicy`] decides, from an account's count of consecutive failed logins, whether and
//!   until when the account is locked. The caller stores the count and the lock time, resets the
//!   count after a successful login, and refuses logins while locked (answering as for a wrong
//!   password, so a lock does not confirm that the account exists).
//! - [`IpRateLimiter`] is an in-memory token bucket per client address that slows down password
//!   spraying across many accounts from one place. IPv6 clients are grouped by /64 (one host
//!   usually holds a whole /64); IPv4-mapped IPv6 addresses count as their IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// When repeated failures lock an account, and for how long.
///
/// After `max_failures` consecutive failures the account is locked for `lock_secs`; every
/// further failure doubles the lock, up to `max_lock_secs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures tolerated before the first lock (default 5).
    pub max_failures: u32,
    /// Length of the first lock in seconds (default 900 = 15 minutes).
    pub lock_secs: i64,
    /// Longest lock in seconds (default 86 400 = one day).
    pub max_lock_secs: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock_secs: 900,
            max_lock_secs: 86_400,
        }
    }
}

impl LockoutPolicy {
    /// Given the number of consecutive failures *including the one just recorded* and the current
    /// Unix time, returns the Unix time until which the account is locked, or `None` if it stays
    /// open. Never overflows; a negative or zero `lock_secs` disables locking.
    pub fn lock_after(&self, failures_so_far: i64, now: i64) -> Option<i64> {
        if self.lock_secs <= 0 || failures_so_far < i64::from(self.max_failures.max(1)) {
            return None;
        }
        let extra = failures_so_far - i64::from(self.max_failures.max(1));
        // 2^extra, saturating: beyond 2^62 every lock is capped anyway.
        let factor = u32::try_from(extra)
            .ok()
            .and_then(|e| 1i64.checked_shl(e))
            .filter(|f| *f > 0)
            .unwrap_or(i64::MAX);
        let cap = self.max_lock_secs.max(self.lock_secs);
        let duration = self.lock_secs.saturating_mul(factor).min(cap);
        Some(now.saturating_add(duration))
    }
}

/// Most addresses remembered by default by an [`IpRateLimiter`].
pub const DEFAULT_MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per client address: `burst` attempts at once, refilled at `per_sec` attempts
/// per second. Memory is bounded: at most `max_tracked` addresses are remembered; when full,
/// addresses whose bucket has refilled completely are forgotten first (that loses nothing), then
/// the least recently seen eighth.
#[derive(Debug)]
pub struct IpRateLimiter {
    burst: f64,
    per_sec: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl IpRateLimiter {
    /// A limiter allowing `burst` attempts at once and `per_sec` attempts per second after that.
    /// A `per_sec` that is negative or not finite counts as 0 (no refill).
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self::with_max_tracked(burst, per_sec, DEFAULT_MAX_TRACKED)
    }

    /// Like [`IpRateLimiter::new`] with an explicit bound on remembered addresses (at least 1).
    pub fn with_max_tracked(burst: u32, per_sec: f64, max_tracked: usize) -> Self {
        let per_sec = if per_sec.is_finite() && per_sec > 0.0 {
            per_sec
        } else {
            0.0
        };
        Self {
            burst: f64::from(burst),
            per_sec,
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt from `ip`'s bucket at time `now`; false when the bucket is empty (the
    /// caller should answer 429 and not evaluate the password).
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        let key = bucket_key(ip);
        // A panic while holding the lock cannot leave a bucket half-updated (plain copies), so a
        // poisoned map is still consistent.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= self.max_tracked {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        if now > bucket.last {
            bucket.last = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Number of addresses currently remembered.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let (burst, per_sec) = (self.burst, self.per_sec);
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * per_sec < burst
        });
        if buckets.len() < self.max_tracked {
            return;
        }
        // Still full: forget the least recently seen eighth (at least one) in one pass, so the
        // cost is amortised over the next max_tracked/8 new addresses.
        let mut seen: Vec<Instant> = buckets.values().map(|b| b.last).collect();
        let drop = (seen.len() / 8).max(1);
        let Some(index) = drop.checked_sub(1) else {
            return;
        };
        let (_, cutoff, _) = seen.select_nth_unstable(index);
        let cutoff = *cutoff;
        let mut left = drop;
        buckets.retain(|_, b| {
            if left > 0 && b.last <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// IPv4 as is; IPv4-mapped IPv6 as IPv4; other IPv6 truncated to its /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests;
