#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use super::{Failover, Record, failed_between, failover};

fn rec(t0: Instant, start_ms: u64, end_ms: u64, ok: bool) -> Record {
    Record {
        start: t0 + Duration::from_millis(start_ms),
        end: t0 + Duration::from_millis(end_ms),
        ok,
        status: ok.then_some(200),
    }
}

#[test]
fn a_slow_request_in_flight_at_the_fault_counts_towards_the_pause() {
    let t0 = Instant::now();
    let fault = t0 + Duration::from_millis(1000);
    let records = [
        rec(t0, 900, 905, true),   // before the fault: ignored
        rec(t0, 995, 1400, true),  // in flight at the fault, retried elsewhere: 400 ms
        rec(t0, 1005, 1020, true), // first request after the fault: 20 ms
        rec(t0, 1500, 1505, true), // after the first success: not part of the pause
        rec(t0, 1600, 3000, false),
    ];
    let f = failover(&records, fault, t0 + Duration::from_secs(10)).unwrap();
    assert_eq!(
        f,
        Failover {
            first_ok: Duration::from_millis(20),
            settled: Duration::from_millis(400),
            failed: 1,
            requests: 4,
        }
    );
    // Looking only up to 2 s: the late failure is not seen yet.
    let f = failover(&records, fault, t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(f.failed, 0);
}

#[test]
fn failures_before_the_first_success_are_counted_and_waited_for() {
    let t0 = Instant::now();
    let fault = t0;
    let records = [
        rec(t0, 0, 700, false),
        rec(t0, 10, 710, false),
        rec(t0, 720, 730, true),
    ];
    let f = failover(&records, fault, t0 + Duration::from_secs(5)).unwrap();
    assert_eq!(f.first_ok, Duration::from_millis(730));
    assert_eq!(f.settled, Duration::from_millis(730));
    assert_eq!(f.failed, 2);
    assert_eq!(
        failed_between(&records, t0, t0 + Duration::from_millis(705)),
        1
    );
}

#[test]
fn no_success_after_the_fault_is_no_failover() {
    let t0 = Instant::now();
    let records = [rec(t0, 0, 5, true), rec(t0, 20, 900, false)];
    assert_eq!(
        failover(
            &records,
            t0 + Duration::from_millis(10),
            t0 + Duration::from_secs(5)
        ),
        None
    );
}
