#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::*;

const NOW: i64 = 1_700_000_000;

#[test]
fn lockout_starts_at_max_failures_and_doubles_up_to_the_cap() {
    let policy = LockoutPolicy::default();
    for failures in 0..5 {
        assert_eq!(policy.lock_after(failures, NOW), None, "{failures}");
    }
    assert_eq!(policy.lock_after(5, NOW), Some(NOW + 900));
    assert_eq!(policy.lock_after(6, NOW), Some(NOW + 1800));
    assert_eq!(policy.lock_after(7, NOW), Some(NOW + 3600));
    assert_eq!(policy.lock_after(11, NOW), Some(NOW + 57_600));
    assert_eq!(policy.lock_after(12, NOW), Some(NOW + 86_400));
    assert_eq!(policy.lock_after(1_000, NOW), Some(NOW + 86_400));
    assert_eq!(policy.lock_after(i64::MAX, NOW), Some(NOW + 86_400));
}

#[test]
fn lockout_never_overflows_and_can_be_disabled() {
    let policy = LockoutPolicy {
        max_failures: 1,
        lock_secs: i64::MAX / 2,
        max_lock_secs: i64::MAX,
    };
    assert_eq!(policy.lock_after(70, i64::MAX - 5), Some(i64::MAX));
    let off = LockoutPolicy {
        lock_secs: 0,
        ..LockoutPolicy::default()
    };
    assert_eq!(off.lock_after(100, NOW), None);
    // A cap below the first lock does not shorten the first lock.
    let odd = LockoutPolicy {
        max_failures: 3,
        lock_secs: 600,
        max_lock_secs: 60,
    };
    assert_eq!(odd.lock_after(3, NOW), Some(NOW + 600));
    assert_eq!(odd.lock_after(4, NOW), Some(NOW + 600));
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

#[test]
fn bucket_allows_burst_then_refills_at_rate() {
    let limiter = IpRateLimiter::new(3, 1.0);
    let t0 = Instant::now();
    assert!(limiter.check(v4(1), t0));
    assert!(limiter.check(v4(1), t0));
    assert!(limiter.check(v4(1), t0));
    assert!(!limiter.check(v4(1), t0));
    // Another address has its own bucket.
    assert!(limiter.check(v4(2), t0));
    // Half a second refills half a token: still refused.
    assert!(!limiter.check(v4(1), t0 + Duration::from_millis(500)));
    assert!(limiter.check(v4(1), t0 + Duration::from_millis(1000)));
    assert!(!limiter.check(v4(1), t0 + Duration::from_millis(1000)));
    // A long pause refills up to the burst only.
    let later = t0 + Duration::from_secs(3600);
    for _ in 0..3 {
        assert!(limiter.check(v4(1), later));
    }
    assert!(!limiter.check(v4(1), later));
}

#[test]
fn clock_going_backwards_refills_nothing() {
    let limiter = IpRateLimiter::new(1, 10.0);
    let t0 = Instant::now() + Duration::from_secs(10);
    assert!(limiter.check(v4(1), t0));
    assert!(!limiter.check(v4(1), t0 - Duration::from_secs(5)));
    assert!(!limiter.check(v4(1), t0));
}

#[test]
fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
    let limiter = IpRateLimiter::new(1, 0.0);
    let t0 = Instant::now();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert!(limiter.check(a, t0));
    assert!(!limiter.check(b, t0), "same /64 shares a bucket");
    assert!(limiter.check(other, t0));

    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
    assert!(limiter.check(mapped, t0));
    assert!(!limiter.check(v4(7), t0));
    assert_eq!(
        bucket_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    );
}

#[test]
fn memory_stays_bounded_and_refilled_buckets_go_first() {
    let limiter = IpRateLimiter::with_max_tracked(2, 1.0, 100);
    let t0 = Instant::now();
    // An address that is rate limited right now.
    assert!(limiter.check(v4(1), t0));
    assert!(limiter.check(v4(1), t0));
    assert!(!limiter.check(v4(1), t0));
    for i in 0..5_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(limiter.check(ip, t0 + Duration::from_millis(u64::from(i))));
        assert!(limiter.tracked() <= 100);
    }

    // Once every bucket has refilled, the next new address finds them all droppable at once.
    let refill = IpRateLimiter::with_max_tracked(2, 1.0, 100);
    for i in 0..100u32 {
        assert!(refill.check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t0));
    }
    assert_eq!(refill.tracked(), 100);
    assert!(refill.check(v4(1), t0 + Duration::from_secs(10)));
    assert_eq!(refill.tracked(), 1);

    // With no refill at all, eviction falls back to least recently seen.
    let strict = IpRateLimiter::with_max_tracked(1, 0.0, 16);
    for i in 0..16u8 {
        assert!(strict.check(v4(i), t0 + Duration::from_secs(u64::from(i))));
    }
    assert_eq!(strict.tracked(), 16);
    assert!(strict.check(v4(200), t0 + Duration::from_secs(100)));
    assert!(strict.tracked() <= 16);
    // The most recent address is still remembered (and still empty)...
    assert!(!strict.check(v4(15), t0 + Duration::from_secs(101)));
    // ...while the oldest was forgotten and starts afresh.
    assert!(strict.check(v4(0), t0 + Duration::from_secs(102)));
}

#[test]
fn odd_rates_do_not_panic() {
    let t0 = Instant::now();
    for rate in [f64::NAN, f64::INFINITY, -1.0] {
        let limiter = IpRateLimiter::new(1, rate);
        assert!(limiter.check(v4(1), t0));
        assert!(!limiter.check(v4(1), t0 + Duration::from_secs(1000)));
    }
    let zero = IpRateLimiter::new(0, 1.0);
    assert!(!zero.check(v4(1), t0));
}
