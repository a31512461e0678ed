//! A small time-bounded cache for per-request lookups that would otherwise hit the store or
//! sign again on every request (sessions, identity assertions).
//!
//! Entries live at most `ttl`; the cache holds at most `max` entries and is emptied when full
//! (cheap, rare, and never serves stale data). A poisoned lock counts as a miss.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct TtlCache<V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long an entry lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<V> {
        let map = self.map.lock().ok()?;
        let (at, v) = map.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| v.clone())
    }

    pub(crate) fn insert(&self, key: String, value: V, now: Instant) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.max {
                map.clear();
            }
            map.insert(key, (now, value));
        }
    }

    /// Replaces the value of a live entry, keeping the time it was inserted (so it still
    /// expires when the original would have). Does nothing if `key` has no entry.
    pub(crate) fn replace(&self, key: &str, value: V) {
        if let Ok(mut map) = self.map.lock()
            && let Some(entry) = map.get_mut(key)
        {
            entry.1 = value;
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_expire_after_ttl() {
        let c = TtlCache::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        c.insert("a".into(), 1, t0);
        assert_eq!(c.get("a", t0 + Duration::from_millis(999)), Some(1));
        assert_eq!(c.get("a", t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn replace_keeps_the_entry_age_and_skips_missing_keys() {
        let c = TtlCache::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        c.insert("a".into(), 1, t0);
        c.replace("a", 2);
        c.replace("b", 3);
        assert_eq!(c.get("a", t0 + Duration::from_millis(999)), Some(2));
        assert_eq!(c.get("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(c.get("b", t0), None);
    }

    #[test]
    fn a_full_cache_starts_over_and_removal_works() {
        let c = TtlCache::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        c.insert("a".into(), 1, t0);
        c.insert("b".into(), 2, t0);
        c.insert("c".into(), 3, t0);
        assert_eq!(c.get("a", t0), None);
        assert_eq!(c.get("c", t0), Some(3));
        c.remove("c");
        assert_eq!(c.get("c", t0), None);
    }
}
