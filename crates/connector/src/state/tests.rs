#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;

use expect_test::expect;

use super::*;
use crate::select::DownCause;

fn sites() -> Vec<Site> {
    ["A", "B"]
        .iter()
        .zip(1u8..)
        .map(|(name, i)| Site {
            name: (*name).to_owned(),
            preference: u32::from(i),
            host: format!("gw.{}.example.com", name.to_lowercase()),
            endpoints: vec![SocketAddr::from(([10, 0, i, 1], 443))],
        })
        .collect()
}

fn endpoint(site: &Site) -> Endpoint {
    Endpoint {
        site: site.name.clone(),
        addr: site.endpoints[0],
    }
}

#[test]
fn status_text() {
    let sites = sites();
    let t0 = Time::from_unix_ms(1_767_225_600_000);
    let mut history = History::new();
    for k in 0..4u64 {
        let at = t0.plus(Duration::from_secs(k));
        history.record(endpoint(&sites[0]), Sample::failed(at, Failure::Connect));
        history.record(
            endpoint(&sites[1]),
            Sample::ok(at, Duration::from_millis(31)),
        );
    }
    let config = SelectConfig::default();
    let selection = select(&Input {
        sites: &sites,
        history: &history,
        exclusions: &[],
        sheds: &[],
        current: None,
        config: &config,
        now: t0.plus(Duration::from_secs(4)),
    });
    let status = Status {
        selection: Arc::new(selection),
        switches: vec![Switch {
            at: t0.plus(Duration::from_secs(2)),
            from: Some("A".to_owned()),
            to: Some("B".to_owned()),
            reason: Reason::FailedOver {
                from: "A".to_owned(),
                cause: DownCause::MissedProbes {
                    count: 3,
                    last: Failure::Connect,
                },
            },
        }],
    };
    expect![[r#"
        site in use: B (failed over: site A missed 4 probes (last: could not connect))
          A (preference 1): down: missed 4 probes (last: could not connect), latency -, loss 100.0%
            10.0.1.1:443 down: missed 4 probes (last: could not connect)
          B (preference 2): healthy, latency 31 ms, loss 0.0%
            10.0.2.1:443 live
        last switches:
          2026-01-01T00:00:02Z A -> B: failed over: site A missed 3 probes (last: could not connect)
    "#]]
    .assert_eq(&status.to_string());
}

#[test]
fn switches_are_recorded_and_bursts_of_traffic_failures_count_once() {
    let sites = sites();
    let state = SiteState::new(sites.clone(), SelectConfig::default(), Clock::system()).unwrap();
    for s in &sites {
        state.record(
            endpoint(s),
            Sample::ok(state.now(), Duration::from_millis(5)),
        );
    }
    assert_eq!(state.selection().site.as_deref(), Some("A"));
    // A burst of refused connections within a few milliseconds is one observation.
    for _ in 0..5 {
        state.report_traffic_failure(endpoint(&sites[0]), Failure::Connect);
    }
    assert_eq!(state.selection().site.as_deref(), Some("A"));
    let view = state.selection();
    let a = view.site_view("A").unwrap();
    assert!(!a.endpoints[0].live);
    assert!(matches!(a.health, crate::select::Health::Healthy { .. }));
    // Spaced failures add up to an outage.
    for _ in 0..2 {
        std::thread::sleep(TRAFFIC_FAILURE_SPACING + Duration::from_millis(5));
        state.report_traffic_failure(endpoint(&sites[0]), Failure::Connect);
    }
    let status = state.status();
    assert_eq!(status.selection.site.as_deref(), Some("B"));
    assert_eq!(status.switches.len(), 1);
    assert_eq!(status.switches[0].from.as_deref(), Some("A"));
    assert_eq!(status.switches[0].to.as_deref(), Some("B"));

    // A new site list takes effect; an empty one is refused.
    state.set_sites(vec![sites[1].clone()]).unwrap();
    assert_eq!(state.selection().site.as_deref(), Some("B"));
    assert!(state.set_sites(vec![]).is_err());
}
