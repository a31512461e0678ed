//! The DR record looked up over DNS over TLS and DNS over HTTPS (ZT-10), end to end through the
//! real `tsuzuku` binary and a real DNS server (hickory-server, in-process) serving the zone over
//! UDP/TCP, TLS and HTTPS with a certificate from a test CA: `dr check --nameserver tls://…` and
//! `https://…` with `--nameserver-ca` find the record; a server whose certificate is not trusted
//! is refused with the certificate problem named; plain UDP still works; and a running
//! connector (`--dr-dns … --dr-dns-ca …`) enters DR mode over DoT, keeps its last verified state
//! when its DoH server's certificate is not trusted, and sees the withdrawal over DoH once it
//! trusts the right CA.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::connect::Connector;
use tsuzuku_testkit::dns::{DOH_PATH, TestDns};

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const ZONE: &str = "example.test";
const NAME: &str = "_tsuzuku-dr.example.test";
const TLS_NAME: &str = "dns.example.test";

/// The DNS server with its encrypted listeners, the DR key's public half and both CA files.
struct Setup {
    dns: TestDns,
    public: String,
    ca: String,
    other_ca: String,
    strings: Vec<String>,
}

async fn setup(dir: &Path) -> Setup {
    let dns = TestDns::start_secure(ZONE, TLS_NAME).await.unwrap();
    let key = keys::generate();
    let public = dir.join("dr-public.pem");
    std::fs::write(
        &public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let ca = dir.join("dns-ca.pem");
    std::fs::write(&ca, dns.ca_pem().unwrap()).unwrap();
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, dns.untrusted_ca_pem().unwrap()).unwrap();
    let t = jiff::Timestamp::now().as_second();
    let fields = RecordFields {
        state: DrState::On,
        internet: Some(InternetMode::Closed),
        issued_at: t,
        not_before: t - 300,
        not_after: t + 3600,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    let strings = split_strings(&sign(&fields, &key).unwrap());
    let s = Setup {
        dns,
        public: public.display().to_string(),
        ca: ca.display().to_string(),
        other_ca: other_ca.display().to_string(),
        strings,
    };
    s.publish().await;
    s
}

impl Setup {
    async fn publish(&self) {
        let refs: Vec<&str> = self.strings.iter().map(String::as_str).collect();
        self.dns.set_txt(NAME, &refs).await.unwrap();
    }

    fn dot(&self) -> String {
        format!("tls://{TLS_NAME}@{}", self.dns.tls_addr().unwrap())
    }

    fn doh(&self) -> String {
        format!(
            "https://{TLS_NAME}@{}{DOH_PATH}",
            self.dns.https_addr().unwrap()
        )
    }
}

async fn check(dir: &Path, s: &Setup, nameserver: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "dr",
        "check",
        NAME,
        "--trust",
        &s.public,
        "--nameserver",
        nameserver,
        "--timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    tokio::process::Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .env("TSUZUKU_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("tsuzuku: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_check_finds_the_record_over_dot_and_doh_and_refuses_an_untrusted_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = setup(dir).await;

    for ns in [s.dot(), s.doh()] {
        let out = check(dir, &s, &ns, &["--nameserver-ca", &s.ca]).await;
        assert!(out.status.success(), "{ns}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("verified"), "{ns}: {stdout}");
        assert!(
            stdout.contains("DR mode — internet closed"),
            "{ns}: {stdout}"
        );

        // A certificate from a CA that is not the one given: refused, the reason named.
        let line = one_line_error(&check(dir, &s, &ns, &["--nameserver-ca", &s.other_ca]).await);
        assert!(
            line.contains("invalid peer certificate: UnknownIssuer"),
            "{ns}: {line}"
        );
        assert!(line.contains("last verified state"), "{ns}: {line}");
        // Without a CA file only the public web roots are trusted.
        let line = one_line_error(&check(dir, &s, &ns, &[]).await);
        assert!(line.contains("invalid peer certificate"), "{ns}: {line}");
    }

    // Plain UDP (and TCP) to the same server still works.
    let out = check(dir, &s, &s.dns.addr().to_string(), &[]).await;
    assert!(out.status.success(), "{out:?}");
    let out = check(dir, &s, &format!("udp://{}", s.dns.addr()), &[]).await;
    assert!(out.status.success(), "{out:?}");
    // A CA file makes no sense there.
    let line = one_line_error(
        &check(
            dir,
            &s,
            &s.dns.addr().to_string(),
            &["--nameserver-ca", &s.ca],
        )
        .await,
    );
    assert!(line.contains("only applies to DNS over TLS"), "{line}");
}

/// Starts `tsuzuku connect` in DR mode, looking the record up at `dns` with the CA file `ca`.
async fn connector(dir: &Path, s: &Setup, dns: &str, ca: &str) -> Connector {
    Connector::start(
        tokio::process::Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0"])
            .args(["--site", "a=localhost@127.0.0.1:9"])
            .args(["--app-domain", "localhost"])
            .args(["--dr-record", NAME, "--dr-dns", dns, "--dr-dns-ca", ca])
            .args(["--dr-trust", &s.public])
            .args(["--dr-interval", "1s"])
            .arg("--dr-state")
            .arg(dir.join("dr-state.json"))
            .args(["--dr-gateway", "dr.localhost@127.0.0.1:9"])
            .env("TSUZUKU_LOG", "warn")
            .stderr(Stdio::null()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_watches_over_dot_and_doh_and_keeps_its_state_when_the_server_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = setup(dir).await;

    // Over DNS over TLS, trusting the DNS server's CA: the record switches the connector.
    let mut c = connector(dir, &s, &s.dot(), &s.ca).await;
    c.stdout
        .wait_exact(
            "dr: active internet=closed drill=false",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let st = c.status().unwrap();
    assert!(st.contains(&format!("via {} (CA file ", s.dot())), "{st}");
    c.stop().await.unwrap();

    // The record is withdrawn, but the connector's DoH server now presents a certificate from a
    // CA it does not trust: it never learns of the withdrawal, says why, and stays in DR mode
    // (from its state file, across the restart).
    s.dns.remove_txt(NAME).await.unwrap();
    let mut c = connector(dir, &s, &s.doh(), &s.other_ca).await;
    c.stdout
        .wait_exact(
            "dr: active internet=closed drill=false",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let st = loop {
        let st = c.status().unwrap();
        if st.contains("invalid peer certificate") {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(st.contains("UnknownIssuer"), "{st}");
    assert!(st.contains("the last verified state stands"), "{st}");
    // Two more lookups later, still in DR mode.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        !c.stdout.any(|l| l == "dr: normal" || l == "dr: returning"),
        "{:?}",
        c.stdout.lines()
    );
    c.stop().await.unwrap();

    // Trusting the right CA again, over DoH the withdrawal is seen: DR mode ends (returning,
    // as this test has no healthy normal site to return to).
    let mut c = connector(dir, &s, &s.doh(), &s.ca).await;
    c.stdout
        .wait_exact("dr: returning", Duration::from_secs(10))
        .await
        .unwrap();
    c.stop().await.unwrap();
}
