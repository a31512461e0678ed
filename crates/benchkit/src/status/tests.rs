#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{DrPhase, SiteLine, Status, dr_phase};

const FAILED_OVER: &str = "\
site in use: b (failed over: site a missed 3 probes (last: could not connect))
  a (preference 0): down: missed 3 probes (last: could not connect), latency 4 ms, loss 5.0%
    127.0.0.1:4431 down: missed 3 probes (last: could not connect)
  b (preference 1): healthy, latency 12 ms, loss 0.0%
    127.0.0.1:4432 live
last switches:
  2026-11-22T10:00:00Z a -> b: failed over: site a missed 3 probes (last: could not connect)
";

#[test]
fn reads_the_site_in_use_and_every_site_line() {
    let s = Status::parse(FAILED_OVER).unwrap();
    assert_eq!(s.site.as_deref(), Some("b"));
    assert!(s.on("b") && !s.on("a"));
    assert_eq!(
        s.reason,
        "failed over: site a missed 3 probes (last: could not connect)"
    );
    assert_eq!(
        s.sites,
        vec![
            SiteLine {
                name: "a".into(),
                health: "down: missed 3 probes (last: could not connect)".into(),
                latency_ms: Some(4),
            },
            SiteLine {
                name: "b".into(),
                health: "healthy".into(),
                latency_ms: Some(12),
            },
        ]
    );
    assert!(!s.all_healthy());
    assert_eq!(s.latency_ms("b"), Some(12));
    assert_eq!(s.latency_ms("c"), None);
}

#[test]
fn reads_none_and_unprobed_sites() {
    let text = "site in use: none (all sites down: a failed probes for 1.2 s (last: no answer within the timeout))\n  a (preference 0): not probed yet, latency -, loss -\n";
    let s = Status::parse(text).unwrap();
    assert_eq!(s.site, None);
    assert_eq!(s.sites[0].health, "not probed yet");
    assert_eq!(s.sites[0].latency_ms, None);
    assert!(!s.all_healthy());
    let ok = "site in use: a (preferred site healthy)\n  a (preference 0): healthy, latency 3 ms, loss 0.0%\n    127.0.0.1:1 live\n  b (preference 1): healthy, latency 4 ms, loss 0.0%\n";
    assert!(Status::parse(ok).unwrap().all_healthy());
    assert_eq!(Status::parse("HTTP/1.1 404"), None);
}

#[test]
fn reads_the_dr_phase() {
    let active = "site in use: none (all sites down)\n  a (preference 0): down, latency -, loss -\ndisaster recovery: ACTIVE since 2026-11-22T10:00:00Z, internet open until 2026-11-22T11:00:00Z\n  conclusion: on\n";
    assert_eq!(dr_phase(active), Some(DrPhase::Active));
    assert_eq!(
        dr_phase("disaster recovery: RETURNING since 2026-11-22T10:00:00Z: DR mode ended\n"),
        Some(DrPhase::Returning)
    );
    assert_eq!(
        dr_phase(
            "site in use: a (preferred)\ndisaster recovery: not active (since 2026-11-22T10:00:00Z)\n"
        ),
        Some(DrPhase::Normal)
    );
    assert_eq!(dr_phase("site in use: a (preferred)\n"), None);
    assert_eq!(dr_phase("disaster recovery: something else\n"), None);
}
