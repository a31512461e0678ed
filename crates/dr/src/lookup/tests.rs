//! Lookups against a real authoritative DNS server (hickory-server, in-process via testkit).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tsuzuku_testkit::dns::{Fault, TestDns};

use super::*;
use crate::check::{Member, Reason};
use crate::keys::TrustedKeys;
use crate::memory::{Memory, Observation};
use crate::record::{DrState, InternetMode, RecordFields, sign, split_strings};

const ZONE: &str = "example.test";
const NAME: &str = "_tsuzuku-dr.example.test";
const T: i64 = 1_767_225_600;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[44u8; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(key().verifying_key()).unwrap();
    t
}

fn value(state: DrState, groups: usize) -> String {
    let f = RecordFields {
        state,
        internet: (state != DrState::Off).then_some(InternetMode::Controlled),
        issued_at: T,
        not_before: T - 300,
        not_after: T + 3600,
        groups: (0..groups).map(|i| format!("group-{i:02}")).collect(),
        devices: BTreeSet::new(),
    };
    sign(&f, &key()).unwrap()
}

fn strs(parts: &[String]) -> Vec<&str> {
    parts.iter().map(String::as_str).collect()
}

#[test]
fn transports_parse_from_their_written_forms() {
    let cases = [
        (
            "127.0.0.1:5353",
            Transport::UdpTcp("127.0.0.1:5353".parse().unwrap()),
        ),
        (
            "10.0.0.1",
            Transport::UdpTcp("10.0.0.1:53".parse().unwrap()),
        ),
        ("[::1]:53", Transport::UdpTcp("[::1]:53".parse().unwrap())),
        (
            "udp://10.0.0.1",
            Transport::Udp("10.0.0.1:53".parse().unwrap()),
        ),
        (
            "tcp://10.0.0.1:54",
            Transport::Tcp("10.0.0.1:54".parse().unwrap()),
        ),
        (
            "tls://dns.example@10.0.0.1",
            Transport::Tls {
                addr: "10.0.0.1:853".parse().unwrap(),
                server_name: "dns.example".into(),
                ca_file: None,
            },
        ),
        (
            "https://dns.example@10.0.0.1:8443/q",
            Transport::Https {
                addr: "10.0.0.1:8443".parse().unwrap(),
                server_name: "dns.example".into(),
                path: Some("/q".into()),
                ca_file: None,
            },
        ),
        ("system", Transport::System),
    ];
    for (text, expected) in cases {
        let t: Transport = text.parse().unwrap();
        assert_eq!(t, expected, "{text}");
        assert_eq!(t.to_string().parse::<Transport>().unwrap(), expected);
    }
    for bad in [
        "",
        "dns.example",
        "tls://10.0.0.1",
        "https://@10.0.0.1",
        "udp://x",
        "1.2.3.4:99999",
    ] {
        assert!(bad.parse::<Transport>().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_published_record_is_found_over_udp_and_over_tcp() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let v = value(DrState::On, 0);
    dns.set_txt(NAME, &strs(&split_strings(&v))).await.unwrap();
    for transport in [
        Transport::UdpTcp(dns.addr()),
        Transport::Udp(dns.addr()),
        Transport::Tcp(dns.addr()),
    ] {
        let lookup = TxtLookup::new(&transport, Duration::from_secs(3)).unwrap();
        let answer = lookup.lookup(NAME).await.unwrap();
        let Answer::Records(records) = answer else {
            panic!("{transport}: {answer:?}")
        };
        assert_eq!(records.len(), 1);
        let c = crate::check::check(&records[0], &trusted(), T, None, &Member::default()).unwrap();
        assert!(c.dr_active(), "{transport}");
    }
}

#[tokio::test]
async fn a_long_record_in_several_strings_arrives_whole() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let v = value(DrState::Test, 50);
    // Longer than a DNS message over UDP without EDNS (512 bytes).
    assert!(v.len() > 600, "{}", v.len());
    let parts = split_strings(&v);
    dns.set_txt(NAME, &strs(&parts)).await.unwrap();
    let lookup = TxtLookup::new(&Transport::UdpTcp(dns.addr()), Duration::from_secs(3)).unwrap();
    let Answer::Records(records) = lookup.lookup(NAME).await.unwrap() else {
        panic!("no records")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].len(), parts.len());
    assert_eq!(crate::record::join_strings(&records[0]).unwrap(), v);
}

#[tokio::test]
async fn nxdomain_servfail_and_timeout_are_distinct_outcomes() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let lookup =
        TxtLookup::new(&Transport::UdpTcp(dns.addr()), Duration::from_millis(800)).unwrap();

    assert_eq!(
        lookup.lookup(NAME).await,
        Ok(Answer::Withdrawn { nxdomain: true })
    );
    // The zone apex exists but has no TXT record.
    assert_eq!(
        lookup.lookup(ZONE).await,
        Ok(Answer::Withdrawn { nxdomain: false })
    );

    dns.set_fault(Fault::ServFail);
    let err = lookup.lookup(NAME).await.unwrap_err();
    assert!(matches!(err, LookupError::ServFail { .. }), "{err:?}");

    dns.set_fault(Fault::Silent);
    let started = Instant::now();
    let err = lookup.lookup(NAME).await.unwrap_err();
    assert!(matches!(err, LookupError::Timeout { .. }), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(err.to_string().contains("800 ms"), "{err}");

    dns.set_fault(Fault::None);
    assert_eq!(
        lookup.lookup(NAME).await,
        Ok(Answer::Withdrawn { nxdomain: true })
    );
}

#[tokio::test]
async fn replacing_the_record_while_running_is_seen_on_the_next_lookup() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let lookup = TxtLookup::new(&Transport::UdpTcp(dns.addr()), Duration::from_secs(3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dr-state.json");
    let member = Member::default();
    let mut memory = Memory::default();

    let step = |memory: &mut Memory, result: &Result<Answer, LookupError>, now: i64| {
        let s = memory.observe(observation(result), &trusted(), now, &member);
        if s.changed {
            crate::statefile::save(&state, memory).unwrap();
        }
        s
    };

    dns.set_txt(NAME, &[&value(DrState::On, 0)]).await.unwrap();
    let s = step(&mut memory, &lookup.lookup(NAME).await, T);
    assert!(s.conclusion.dr_active());

    // DNS fails: the last verified state stands, also after a restart (loaded from the file).
    dns.set_fault(Fault::ServFail);
    let mut restarted = crate::statefile::load(&state, &trusted()).unwrap().unwrap();
    let s = step(&mut restarted, &lookup.lookup(NAME).await, T + 30);
    assert!(s.conclusion.dr_active(), "{}", s.conclusion);
    dns.set_fault(Fault::None);

    // A tampered record at the name changes nothing.
    let tampered = value(DrState::On, 0).replace("m=controlled", "m=open");
    dns.set_txt(NAME, &[&tampered]).await.unwrap();
    let s = step(&mut restarted, &lookup.lookup(NAME).await, T + 60);
    assert_eq!(s.conclusion.dr.unwrap().internet, InternetMode::Controlled);
    assert_eq!(s.rejections.len(), 1);

    // Withdrawn: back to normal.
    dns.remove_txt(NAME).await.unwrap();
    let s = step(&mut restarted, &lookup.lookup(NAME).await, T + 90);
    assert_eq!(s.conclusion.reason, Reason::Withdrawn);
    let reloaded = crate::statefile::load(&state, &trusted()).unwrap().unwrap();
    assert_eq!(reloaded.withdrawn_at, Some(T + 90));
}

#[tokio::test]
async fn dns_over_tls_and_https_resolvers_build_and_fail_cleanly_against_plain_dns() {
    let dns = TestDns::start(ZONE).await.unwrap();
    for transport in [
        Transport::Tls {
            addr: dns.addr(),
            server_name: "dns.example.test".into(),
            ca_file: None,
        },
        Transport::Https {
            addr: dns.addr(),
            server_name: "dns.example.test".into(),
            path: None,
            ca_file: None,
        },
    ] {
        let lookup = TxtLookup::new(&transport, Duration::from_millis(800)).unwrap();
        // The test server speaks plain DNS on that port: the TLS handshake fails, which is an
        // error (the last verified state stands), never an answer.
        let result = lookup.lookup(NAME).await;
        assert!(result.is_err(), "{transport}: {result:?}");
        assert!(matches!(observation(&result), Observation::Unreachable));
    }
}

#[tokio::test]
async fn the_system_resolver_can_be_set_up() {
    // Reads /etc/resolv.conf; asks nothing.
    TxtLookup::new(&Transport::System, Duration::from_secs(1)).unwrap();
}

const TLS_NAME: &str = "dns.example.test";

/// The transports of a [`TestDns::start_secure`] server, trusting the CA in `ca`.
fn secure_transports(dns: &TestDns, ca: &std::path::Path) -> [Transport; 2] {
    [
        Transport::Tls {
            addr: dns.tls_addr().unwrap(),
            server_name: TLS_NAME.into(),
            ca_file: None,
        }
        .with_ca_file(ca)
        .unwrap(),
        Transport::Https {
            addr: dns.https_addr().unwrap(),
            server_name: TLS_NAME.into(),
            path: Some(tsuzuku_testkit::dns::DOH_PATH.into()),
            ca_file: None,
        }
        .with_ca_file(ca)
        .unwrap(),
    ]
}

#[tokio::test]
async fn a_published_record_is_found_over_dns_over_tls_and_https_with_a_private_ca() {
    let dns = TestDns::start_secure(ZONE, TLS_NAME).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("dns-ca.pem");
    std::fs::write(&ca, dns.ca_pem().unwrap()).unwrap();
    let v = value(DrState::Test, 50);
    dns.set_txt(NAME, &strs(&split_strings(&v))).await.unwrap();
    for transport in secure_transports(&dns, &ca) {
        assert!(transport.to_string().contains("(CA file "), "{transport}");
        let lookup = TxtLookup::new(&transport, Duration::from_secs(3)).unwrap();
        let answer = lookup.lookup(NAME).await.unwrap();
        let Answer::Records(records) = answer else {
            panic!("{transport}: {answer:?}")
        };
        assert_eq!(records.len(), 1, "{transport}");
        assert_eq!(crate::record::join_strings(&records[0]).unwrap(), v);
        // Withdrawn is seen over the encrypted transports too.
        dns.remove_txt(NAME).await.unwrap();
        assert_eq!(
            lookup.lookup(NAME).await,
            Ok(Answer::Withdrawn { nxdomain: true }),
            "{transport}"
        );
        dns.set_txt(NAME, &strs(&split_strings(&v))).await.unwrap();
    }
    // Plain UDP to the same server still works.
    let lookup = TxtLookup::new(&Transport::Udp(dns.addr()), Duration::from_secs(3)).unwrap();
    assert!(matches!(
        lookup.lookup(NAME).await,
        Ok(Answer::Records(r)) if r.len() == 1
    ));
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_trusted_is_refused_and_the_last_state_stands() {
    let dns = TestDns::start_secure(ZONE, TLS_NAME).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good_ca = dir.path().join("dns-ca.pem");
    std::fs::write(&good_ca, dns.ca_pem().unwrap()).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, dns.untrusted_ca_pem().unwrap()).unwrap();
    dns.set_txt(NAME, &[&value(DrState::On, 0)]).await.unwrap();
    let member = Member::default();

    for (good, bad) in secure_transports(&dns, &good_ca)
        .into_iter()
        .zip(secure_transports(&dns, &other_ca))
    {
        // The record verified over the trusted server: DR mode.
        let mut memory = Memory::default();
        let ok = TxtLookup::new(&good, Duration::from_secs(3))
            .unwrap()
            .lookup(NAME)
            .await;
        let s = memory.observe(observation(&ok), &trusted(), T, &member);
        assert!(s.conclusion.dr_active(), "{good}: {}", s.conclusion);

        // The record is withdrawn, but the only server asked presents a certificate from a CA
        // that is not trusted: an error naming the certificate problem, and the last verified
        // state stands.
        dns.remove_txt(NAME).await.unwrap();
        let result = TxtLookup::new(&bad, Duration::from_secs(3))
            .unwrap()
            .lookup(NAME)
            .await;
        let err = result.clone().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("invalid peer certificate: UnknownIssuer"),
            "{bad}: {msg}"
        );
        let s = memory.observe(observation(&result), &trusted(), T + 30, &member);
        assert!(s.conclusion.dr_active(), "{bad}: {}", s.conclusion);
        assert!(!s.changed, "{bad}");

        // Without a CA file only public roots are trusted: the test certificate is refused too.
        let public_roots = match &good {
            Transport::Tls {
                addr, server_name, ..
            } => Transport::Tls {
                addr: *addr,
                server_name: server_name.clone(),
                ca_file: None,
            },
            Transport::Https {
                addr,
                server_name,
                path,
                ..
            } => Transport::Https {
                addr: *addr,
                server_name: server_name.clone(),
                path: path.clone(),
                ca_file: None,
            },
            other => panic!("{other}"),
        };
        let err = TxtLookup::new(&public_roots, Duration::from_secs(3))
            .unwrap()
            .lookup(NAME)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid peer certificate: UnknownIssuer"),
            "{public_roots}: {err}"
        );

        // A certificate for another name than the one configured is refused as well.
        let wrong_name = match good.clone() {
            Transport::Tls { addr, .. } => Transport::Tls {
                addr,
                server_name: "other.example.test".into(),
                ca_file: Some(good_ca.clone()),
            },
            Transport::Https { addr, path, .. } => Transport::Https {
                addr,
                server_name: "other.example.test".into(),
                path,
                ca_file: Some(good_ca.clone()),
            },
            other => panic!("{other}"),
        };
        let err = TxtLookup::new(&wrong_name, Duration::from_secs(3))
            .unwrap()
            .lookup(NAME)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("certificate not valid for name"),
            "{wrong_name}: {err}"
        );
        dns.set_txt(NAME, &[&value(DrState::On, 0)]).await.unwrap();
    }
}

#[tokio::test]
async fn a_dns_over_tls_server_that_is_down_is_reported_as_such() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for text in [
        format!("tls://{TLS_NAME}@{closed}"),
        format!("https://{TLS_NAME}@{closed}/dns-query"),
    ] {
        let transport: Transport = text.parse().unwrap();
        let err = TxtLookup::new(&transport, Duration::from_secs(2))
            .unwrap()
            .lookup(NAME)
            .await
            .unwrap_err();
        assert!(matches!(err, LookupError::Failed { .. }), "{text}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("cannot connect to {closed}")),
            "{text}: {err}"
        );
    }
}

#[test]
fn a_ca_file_needs_a_tls_transport_and_must_hold_certificates() {
    let e = Transport::Udp("127.0.0.1:53".parse().unwrap())
        .with_ca_file("/etc/ca.pem")
        .unwrap_err();
    assert!(
        e.to_string().contains("only applies to DNS over TLS"),
        "{e}"
    );
    assert!(Transport::System.with_ca_file("/x").is_err());

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let tls = |ca: &std::path::Path| {
        "tls://dns.example@127.0.0.1:853"
            .parse::<Transport>()
            .unwrap()
            .with_ca_file(ca)
            .unwrap()
    };
    for (ca, says) in [
        (dir.path().join("missing.pem"), "cannot read the CA file"),
        (not_pem, "holds no certificate"),
    ] {
        let e = TxtLookup::new(&tls(&ca), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, LookupError::Setup { .. }), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.to_string().contains(&ca.display().to_string()), "{e}");
    }
}
