#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The proxy against real local servers standing in for gateway sites.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::connector::{Connector, ConnectorConfig};
use crate::probe::{ProbeConfig, Scheme};
use crate::select::{Exclusion, Health, Sample, SelectConfig, Shed, Site};
use crate::state::Clock;
use crate::testsupport::{FakeGateway, Mode, closed_port, raw_exchange, test_ca};

fn site(name: &str, preference: u32, addrs: &[SocketAddr]) -> Site {
    Site {
        name: name.to_owned(),
        preference,
        host: format!("gw.{}.example.com", name.to_lowercase()),
        endpoints: addrs.to_vec(),
    }
}

fn proxy_config() -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        app_domains: vec!["example.com".to_owned()],
        connect_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    }
}

/// A state whose probe results are recorded by the test, every endpoint answering well now.
fn state_with(sites: Vec<Site>) -> Arc<SiteState> {
    let state = SiteState::new(sites.clone(), SelectConfig::default(), Clock::system()).unwrap();
    mark_ok(&state, &sites);
    state
}

fn mark_ok(state: &SiteState, sites: &[Site]) {
    for s in sites {
        for &addr in &s.endpoints {
            state.record(
                Endpoint {
                    site: s.name.clone(),
                    addr,
                },
                Sample::ok(state.now(), Duration::from_millis(5)),
            );
        }
    }
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a `CONNECT` tunnel; on refusal returns the whole answer.
async fn tunnel_to(proxy: SocketAddr, target: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("no CONNECT answer within 5 s")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if status_of(&head) == 200 {
        return Ok(s);
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut rest = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut rest))
        .await
        .expect("no complete answer body within 2 s")
        .unwrap();
    Err(format!("{head}{}", String::from_utf8_lossy(&rest)))
}

/// Sends `msg` through a tunnel and returns the echo.
async fn ping(s: &mut TcpStream, msg: &str) -> String {
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("no echo within 2 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// Waits until the peer closes the tunnel; returns how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => start.elapsed(),
        Ok(Ok(n)) => panic!("tunnel still carried {n} bytes"),
        Err(_) => panic!("tunnel was not closed within {limit:?}"),
    }
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn blackout_moves_new_tunnels_to_the_next_site_and_closes_old_ones() {
    let a = FakeGateway::start("A").await;
    let b = FakeGateway::start("B").await;
    let mut config = ConnectorConfig::new(
        vec![site("A", 1, &[a.addr]), site("B", 2, &[b.addr])],
        vec!["example.com".to_owned()],
    );
    config.probe = ProbeConfig {
        scheme: Scheme::Http,
        interval: Duration::from_millis(200),
        fast_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        ..ProbeConfig::default()
    };
    config.select = SelectConfig {
        down_after: Duration::from_millis(400),
        stale_after: Duration::from_secs(2),
        ..SelectConfig::default()
    };
    config.proxy = proxy_config();
    config.evaluate_every = Duration::from_millis(20);
    let connector = Connector::start(config).await.unwrap();
    let proxy = connector.proxy_addr();
    wait_for("site A healthy", Duration::from_secs(3), || {
        let st = connector.status();
        matches!(
            st.selection.site_view("A").unwrap().health,
            Health::Healthy { .. }
        )
    })
    .await;

    let mut old = tunnel_to(proxy, "app.example.com:443").await.unwrap();
    assert_eq!(ping(&mut old, "hello").await, "A:hello");
    assert_eq!(
        connector.open_tunnels(),
        BTreeMap::from([("A".to_owned(), 1)])
    );

    // Site A goes dark: new connections are refused, the established one goes silent.
    a.kill();
    let killed = Instant::now();
    let mut new = tunnel_to(proxy, "app.example.com:443").await.unwrap();
    assert_eq!(ping(&mut new, "again").await, "B:again");
    let moved = killed.elapsed();
    assert!(moved < Duration::from_secs(1), "new tunnel took {moved:?}");

    // The tunnel to A is closed once A counts as down, instead of hanging.
    let closed = closed_within(&mut old, Duration::from_secs(3)).await;
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "old tunnel closed after {:?}",
        killed.elapsed()
    );
    assert!(
        closed < Duration::from_secs(2),
        "old tunnel open {closed:?} more"
    );
    let status = connector.status();
    assert_eq!(status.selection.site.as_deref(), Some("B"));
    assert!(
        status
            .selection
            .reason
            .to_string()
            .starts_with("failed over: site A"),
        "{}",
        status.selection.reason
    );
    let last = status.switches.last().unwrap();
    assert_eq!(
        (last.from.as_deref(), last.to.as_deref()),
        (Some("A"), Some("B"))
    );
    wait_for("tunnel count of A gone", Duration::from_secs(1), || {
        connector.open_tunnels() == BTreeMap::from([("B".to_owned(), 1)])
    })
    .await;
    // The tunnel to B is unaffected.
    assert_eq!(ping(&mut new, "still").await, "B:still");
    connector.shutdown().await;
}

#[tokio::test]
async fn pac_file_is_served_to_the_proxy_address_only() {
    let a = FakeGateway::start("A").await;
    let state = state_with(vec![site("A", 1, &[a.addr])]);
    let proxy = Proxy::bind(proxy_config(), state).await.unwrap();
    let addr = proxy.local_addr();

    let resp = raw_exchange(
        addr,
        &format!("GET /proxy.pac HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("content-type: application/x-ns-proxy-autoconfig"));
    assert!(resp.ends_with(proxy.pac()), "{resp}");
    assert!(proxy.pac().contains(&format!("PROXY {addr}")));
    assert!(proxy.pac().contains("\"example.com\""));
    assert_eq!(proxy.pac_url(), format!("http://{addr}/proxy.pac"));

    let resp = raw_exchange(
        addr,
        &format!(
            "GET /proxy.pac HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");

    // A page that rebinds its own name to 127.0.0.1 sends its own host name.
    let resp = raw_exchange(
        addr,
        &format!(
            "GET /proxy.pac HTTP/1.1\r\nHost: attacker.example:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    )
    .await;
    assert_eq!(status_of(&resp), 421, "{resp}");
    assert!(resp.contains("\"attacker.example:"), "{resp}");

    let resp = raw_exchange(
        addr,
        &format!("GET /admin HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&resp), 404, "{resp}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn disallowed_ports_and_foreign_hosts_are_refused() {
    let a = FakeGateway::start("A").await;
    let state = state_with(vec![site("A", 1, &[a.addr])]);
    let proxy = Proxy::bind(proxy_config(), state).await.unwrap();
    let addr = proxy.local_addr();

    let resp = tunnel_to(addr, "app.example.com:22").await.unwrap_err();
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(
        resp.contains("Port 22 is not allowed through the Tsuzuku connector (allowed: 443)"),
        "{resp}"
    );
    let resp = tunnel_to(addr, "www.example.net:443").await.unwrap_err();
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(
        resp.contains("www.example.net is not one of the organisation's app domains (example.com)"),
        "{resp}"
    );
    let resp = raw_exchange(
        addr,
        "GET http://www.example.net/ HTTP/1.1\r\nHost: www.example.net\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 403, "{resp}");
    // Nothing reached the gateway.
    assert!(a.seen().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn plain_http_requests_reach_the_gateway_with_their_host() {
    let a = FakeGateway::start("A").await;
    let state = state_with(vec![site("A", 1, &[a.addr])]);
    let proxy = Proxy::bind(proxy_config(), state).await.unwrap();
    let resp = raw_exchange(
        proxy.local_addr(),
        "GET http://App.Example.com/hello?x=1 HTTP/1.1\r\nHost: App.Example.com\r\nProxy-Connection: keep-alive\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        resp.ends_with(
            "site=A method=GET path=/hello?x=1 host=App.Example.com proxy-connection=no"
        ),
        "{resp}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_the_next_site_and_others_are_not() {
    let a = FakeGateway::start("A").await;
    let b = FakeGateway::start("B").await;
    let state = state_with(vec![site("A", 1, &[a.addr]), site("B", 2, &[b.addr])]);
    let proxy = Proxy::bind(proxy_config(), state.clone()).await.unwrap();
    // A takes requests and drops them without an answer.
    a.set_mode(Mode::HangUp);

    let resp = raw_exchange(
        proxy.local_addr(),
        "GET http://app.example.com/report HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        resp.ends_with("site=B method=GET path=/report host=app.example.com proxy-connection=no")
    );
    assert_eq!(a.seen().len(), 1, "A saw the first attempt");

    // Selection still says A (one failure is not an outage): a POST goes to A, fails, and is
    // not repeated on B.
    mark_ok(&state, &[site("A", 1, &[a.addr])]);
    assert_eq!(state.evaluate().site.as_deref(), Some("A"));
    let resp = raw_exchange(
        proxy.local_addr(),
        "POST http://app.example.com/pay HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nConnection: close\r\n\r\nx=1",
    )
    .await;
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(resp.contains("The POST request was not repeated"), "{resp}");
    assert!(
        !b.seen().iter().any(|l| l.contains("POST")),
        "{:?}",
        b.seen()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn dead_node_is_skipped_and_its_site_kept() {
    let a = FakeGateway::start("A").await;
    let b = FakeGateway::start("B").await;
    let dead = closed_port().await;
    // Site A has two nodes; the first one is dead but its last probe was good.
    let sites = vec![site("A", 1, &[dead, a.addr]), site("B", 2, &[b.addr])];
    let state = state_with(sites);
    let proxy = Proxy::bind(proxy_config(), state.clone()).await.unwrap();
    for i in 0..4 {
        let mut t = tunnel_to(proxy.local_addr(), "app.example.com:443")
            .await
            .unwrap();
        assert_eq!(ping(&mut t, &format!("n{i}")).await, format!("A:n{i}"));
    }
    let sel = state.selection();
    assert_eq!(sel.site.as_deref(), Some("A"));
    let a_view = sel.site_view("A").unwrap();
    assert!(!a_view.endpoints[0].live, "{a_view:?}");
    assert!(a_view.endpoints[1].live);
    // New connections now start with the live node.
    assert_eq!(sel.attempts(0)[0].addr, a.addr);
    assert_eq!(sel.attempts(1)[0].addr, a.addr);
    proxy.shutdown().await;
}

#[tokio::test]
async fn all_sites_down_gives_a_clear_answer() {
    let (x, y) = (closed_port().await, closed_port().await);
    let sites = vec![site("A", 1, &[x]), site("B", 2, &[y])];
    let state = SiteState::new(sites, SelectConfig::default(), Clock::system()).unwrap();
    for (name, addr) in [("A", x), ("B", y)] {
        for _ in 0..3 {
            state.record(
                Endpoint {
                    site: name.to_owned(),
                    addr,
                },
                Sample::failed(state.now(), crate::select::Failure::Connect),
            );
        }
    }
    let proxy = Proxy::bind(proxy_config(), state).await.unwrap();
    let resp = tunnel_to(proxy.local_addr(), "app.example.com:443")
        .await
        .unwrap_err();
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(
        resp.contains("could not reach a gateway (all sites down: A missed"),
        "{resp}"
    );
    assert!(
        resp.contains(&format!("Tried: site A at {x} ("))
            && resp.contains(&format!("site B at {y} (")),
        "{resp}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn excluded_site_tunnels_close_and_shedding_ones_drain() {
    let a = FakeGateway::start("A").await;
    let b = FakeGateway::start("B").await;
    let sites = vec![site("A", 1, &[a.addr]), site("B", 2, &[b.addr])];

    // Load shedding moves new connections; by default existing tunnels finish.
    let state = state_with(sites.clone());
    let proxy = Proxy::bind(proxy_config(), state.clone()).await.unwrap();
    let mut t = tunnel_to(proxy.local_addr(), "app.example.com:443")
        .await
        .unwrap();
    assert_eq!(ping(&mut t, "x").await, "A:x");
    state.set_sheds(vec![Shed {
        site: "A".to_owned(),
        until: state.now().plus(Duration::from_secs(60)),
    }]);
    assert_eq!(state.selection().site.as_deref(), Some("B"));
    let mut t2 = tunnel_to(proxy.local_addr(), "app.example.com:443")
        .await
        .unwrap();
    assert_eq!(ping(&mut t2, "y").await, "B:y");
    assert_eq!(ping(&mut t, "z").await, "A:z");

    // An exclusion makes A unusable: its tunnel is closed.
    state.set_exclusions(vec![Exclusion {
        site: "A".to_owned(),
        until: state.now().plus(Duration::from_secs(60)),
        reason: "maintenance".to_owned(),
    }]);
    closed_within(&mut t, Duration::from_secs(1)).await;
    assert_eq!(ping(&mut t2, "w").await, "B:w");
    proxy.shutdown().await;

    // With TunnelClose::OnSwitch, load shedding closes them too.
    let state = state_with(sites);
    let proxy = Proxy::bind(
        ProxyConfig {
            tunnel_close: TunnelClose::OnSwitch,
            ..proxy_config()
        },
        state.clone(),
    )
    .await
    .unwrap();
    let mut t = tunnel_to(proxy.local_addr(), "app.example.com:443")
        .await
        .unwrap();
    assert_eq!(ping(&mut t, "x").await, "A:x");
    state.set_sheds(vec![Shed {
        site: "A".to_owned(),
        until: state.now().plus(Duration::from_secs(60)),
    }]);
    closed_within(&mut t, Duration::from_secs(1)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn plain_http_leaves_the_device_over_tls_to_the_gateway() {
    let ca = test_ca(&["app.example.com"]);
    let a = FakeGateway::start_tls("A", &ca).await;
    let state = state_with(vec![site("A", 1, &[a.addr])]);
    let tls = crate::tls::client_config(ca.ca_pem.as_bytes()).unwrap();
    let proxy = Proxy::bind(
        ProxyConfig {
            upstream_tls: Some(tls),
            ..proxy_config()
        },
        state.clone(),
    )
    .await
    .unwrap();
    let resp = raw_exchange(
        proxy.local_addr(),
        "GET http://app.example.com/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.ends_with("site=A method=GET path=/x host=app.example.com proxy-connection=no"));
    proxy.shutdown().await;

    // A gateway whose certificate the CA did not issue is not talked to.
    let other = test_ca(&["app.example.com"]);
    let tls = crate::tls::client_config(other.ca_pem.as_bytes()).unwrap();
    let proxy = Proxy::bind(
        ProxyConfig {
            upstream_tls: Some(tls),
            ..proxy_config()
        },
        state,
    )
    .await
    .unwrap();
    let resp = raw_exchange(
        proxy.local_addr(),
        "GET http://app.example.com/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(resp.contains("TLS handshake failed"), "{resp}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn internet_via_the_connector_goes_direct() {
    let a = FakeGateway::start("A").await;
    let outside = FakeGateway::start("OUT").await;
    let state = state_with(vec![site("A", 1, &[a.addr])]);
    let proxy = Proxy::bind(
        ProxyConfig {
            internet: Internet::ViaConnector,
            allowed_ports: vec![443, outside.addr.port()],
            ..proxy_config()
        },
        state,
    )
    .await
    .unwrap();
    assert!(
        proxy
            .pac()
            .contains(&format!("return \"PROXY {}\";\n}}", proxy.local_addr()))
    );
    let mut t = tunnel_to(proxy.local_addr(), &outside.addr.to_string())
        .await
        .unwrap();
    assert_eq!(ping(&mut t, "hi").await, "OUT:hi");
    // App traffic still goes to the gateway.
    let mut t = tunnel_to(proxy.local_addr(), "app.example.com:443")
        .await
        .unwrap();
    assert_eq!(ping(&mut t, "hi").await, "A:hi");
    proxy.shutdown().await;
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    let state = state_with(vec![site("A", 1, &["127.0.0.1:1".parse().unwrap()])]);
    let cases = [
        (
            ProxyConfig {
                listen: "0.0.0.0:0".parse().unwrap(),
                ..proxy_config()
            },
            "the connector's proxy must listen on a loopback address such as 127.0.0.1:3128, not 0.0.0.0:0: other machines must not use it",
        ),
        (
            ProxyConfig {
                allowed_ports: vec![],
                ..proxy_config()
            },
            "allowed_ports is empty: allow at least 443",
        ),
        (
            ProxyConfig {
                app_domains: vec![],
                ..proxy_config()
            },
            "no app domains configured: give the organisation's app domains, such as example.com",
        ),
    ];
    for (cfg, expected) in cases {
        let err = Proxy::bind(cfg, state.clone()).await.err().unwrap();
        assert_eq!(err.to_string(), expected);
    }
}
