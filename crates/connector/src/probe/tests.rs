#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Probes against real local servers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::select::{Health, SelectConfig};
use crate::state::Clock;
use crate::testsupport::{FakeGateway, closed_port, fixed_server, silent_server, test_ca};

fn site(name: &str, preference: u32, addrs: &[SocketAddr]) -> Site {
    Site {
        name: name.to_owned(),
        preference,
        host: format!("gw.{}.example.com", name.to_lowercase()),
        endpoints: addrs.to_vec(),
    }
}

fn plain(timeout_ms: u64) -> ProbeConfig {
    ProbeConfig {
        scheme: Scheme::Http,
        interval: Duration::from_millis(100),
        fast_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(timeout_ms),
        ..ProbeConfig::default()
    }
}

async fn probe_once(addr: SocketAddr, cfg: &ProbeConfig) -> (Outcome, Duration) {
    let s = site("A", 1, &[addr]);
    let p = EndpointProbe::new(&s, addr, cfg).unwrap();
    let start = Instant::now();
    let outcome = p.probe().await;
    (outcome, start.elapsed())
}

#[tokio::test]
async fn healthy_gateway_answers_with_latency_and_the_site_host() {
    let gw = FakeGateway::start("A").await;
    let cfg = plain(500);
    let s = site("A", 1, &[gw.addr]);
    let p = EndpointProbe::new(&s, gw.addr, &cfg).unwrap();
    assert_eq!(
        p.url(),
        format!("http://gw.a.example.com:{}/readyz", gw.addr.port())
    );
    match p.probe().await {
        Outcome::Ok { latency } => assert!(latency < Duration::from_millis(500)),
        other => panic!("expected a good probe, got {other:?}"),
    }
    // The same server answers a non-readiness path with what it saw: the host name, not the
    // address, reached it.
    let cfg = ProbeConfig {
        path: "/whoami".to_owned(),
        ..plain(500)
    };
    let p = EndpointProbe::new(&s, gw.addr, &cfg).unwrap();
    assert!(matches!(p.probe().await, Outcome::Ok { .. }));
    assert_eq!(
        gw.seen(),
        [format!(
            "site=A method=GET path=/whoami host=gw.a.example.com:{} proxy-connection=no",
            gw.addr.port()
        )]
    );
}

#[tokio::test]
async fn failures_are_classified_within_the_timeout() {
    let silent = silent_server().await;
    let closed = closed_port().await;
    let not_ready = fixed_server(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\nnot ready\n",
        None,
    )
    .await;
    let garbage = fixed_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", None).await;
    let drip = fixed_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\nready ready ready ready ready\n",
        Some(Duration::from_millis(40)),
    )
    .await;
    let cfg = plain(300);
    let cases = [
        ("accepts and never answers", silent.addr, Failure::Timeout),
        ("closed port", closed, Failure::Connect),
        ("not ready", not_ready.addr, Failure::Status(503)),
        ("not HTTP", garbage.addr, Failure::Protocol),
        ("slow drip", drip.addr, Failure::Timeout),
    ];
    for (what, addr, expected) in cases {
        let (outcome, took) = probe_once(addr, &cfg).await;
        assert_eq!(outcome, Outcome::Failed(expected), "{what}");
        assert!(
            took < cfg.timeout + Duration::from_millis(200),
            "{what}: took {took:?}"
        );
    }
}

#[tokio::test]
async fn https_probe_checks_the_gateway_certificate() {
    let ca = test_ca(&["gw.a.example.com"]);
    let gw = FakeGateway::start_tls("A", &ca).await;
    let cfg = ProbeConfig {
        ca_pem: Some(ca.ca_pem.clone().into_bytes()),
        ..plain(2000)
    };
    let cfg = ProbeConfig {
        scheme: Scheme::Https,
        ..cfg
    };
    let (outcome, _) = probe_once(gw.addr, &cfg).await;
    assert!(matches!(outcome, Outcome::Ok { .. }), "{outcome:?}");

    // Another CA: the handshake fails, which is a failed probe.
    let other = test_ca(&["gw.a.example.com"]);
    let cfg = ProbeConfig {
        ca_pem: Some(other.ca_pem.into_bytes()),
        ..cfg
    };
    let (outcome, _) = probe_once(gw.addr, &cfg).await;
    assert_eq!(outcome, Outcome::Failed(Failure::Connect));

    // A file without certificates is refused up front.
    let cfg = ProbeConfig {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..cfg
    };
    let s = site("A", 1, &[gw.addr]);
    let err = EndpointProbe::new(&s, gw.addr, &cfg).unwrap_err();
    assert!(matches!(err, ProbeError::EmptyCa), "{err}");
}

#[tokio::test]
async fn probers_feed_the_state() {
    let a = FakeGateway::start("A").await;
    let silent = silent_server().await;
    let closed = closed_port().await;
    let sites = vec![
        site("A", 1, &[a.addr]),
        site("B", 2, &[silent.addr]),
        site("C", 3, &[closed]),
    ];
    let config = SelectConfig {
        down_after: Duration::from_millis(300),
        stale_after: Duration::from_secs(2),
        ..SelectConfig::default()
    };
    let state = SiteState::new(sites.clone(), config, Clock::system()).unwrap();
    let probers = Probers::start(&state, &sites, &plain(200)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let sel = state.selection();
        let health = |n: &str| sel.site_view(n).unwrap().health.clone();
        if matches!(health("A"), Health::Healthy { .. })
            && health("B").is_down()
            && health("C").is_down()
        {
            assert_eq!(sel.site.as_deref(), Some("A"));
            assert!(sel.site_view("A").unwrap().latency.is_some());
            assert_eq!(sel.site_view("C").unwrap().loss, Some(1.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probes did not settle: {:#?}",
            sel.sites
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probers.stop();
}

#[test]
fn invalid_settings_are_refused() {
    let cases = [
        (
            ProbeConfig {
                path: "readyz".to_owned(),
                ..ProbeConfig::default()
            },
            "probe setting path must be an absolute path such as /readyz",
        ),
        (
            ProbeConfig {
                fast_interval: Duration::from_secs(2),
                ..ProbeConfig::default()
            },
            "probe setting fast_interval must be more than zero and at most interval",
        ),
    ];
    for (cfg, expected) in cases {
        assert_eq!(cfg.validate().unwrap_err().to_string(), expected);
    }
    assert!(ProbeConfig::default().validate().is_ok());
}
