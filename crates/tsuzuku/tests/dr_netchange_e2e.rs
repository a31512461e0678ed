//! Issue 5 item 2, "on every network change": the connector looks the DR record up as soon as
//! the host's addresses change, not only on its interval.
//!
//! The test runs in a fresh network namespace of its own (it runs itself again under
//! `unshare --net`, as root), so that the address it adds is seen by this connector only and
//! disappears with the namespace. In there: a real DNS server (hickory, in-process) serves the
//! record and the real `tsuzuku connect` looks it up every 60 s. The record is published;
//! nothing happens for 2 s (the next lookup is a minute away); then an address is added to an
//! interface and the connector is in DR mode within about a second, having logged why.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::lines::LineLog;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";
/// Set in the copy of this test that runs inside the new namespace.
const INSIDE: &str = "TSUZUKU_TEST_IN_NETNS";
const TEST: &str = "a_network_change_triggers_a_dr_lookup_at_once";

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until a line of `log` contains `needle`; the moment it was seen.
async fn wait_for(log: &LineLog, needle: &str, within: Duration) -> Instant {
    log.wait_for(&format!("with {needle:?}"), 1, within, |l| {
        l.contains(needle)
    })
    .await
    .unwrap();
    Instant::now()
}

#[test]
fn a_network_change_triggers_a_dr_lookup_at_once() {
    if std::env::var_os(INSIDE).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(inside());
        return;
    }
    // This same test again, in a new network namespace.
    let out = std::process::Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "the test inside a new network namespace failed (it needs root for `unshare --net`)"
    );
    assert!(text.contains("1 passed"), "the inner test did not run");
}

async fn inside() {
    // A namespace starts with only `lo`, down.
    ip(&["link", "set", "lo", "up"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = keys::generate();
    let public = dir.join("dr-public-key.pem");
    std::fs::write(
        &public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let dns = TestDns::start("example.test").await.unwrap();

    let mut connector = tokio::process::Command::new(BIN)
        .args(["connect", "--listen", "127.0.0.1:0"])
        // The normal site does not matter here (nothing answers there).
        .args(["--site", "a=localhost@127.0.0.1:9"])
        .args(["--app-domain", "localhost"])
        .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
        .arg("--dr-trust")
        .arg(&public)
        .args(["--dr-interval", "60s"])
        .args(["--dr-gateway", "localhost@127.0.0.2:9"])
        .env("TSUZUKU_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = LineLog::spawn_from(connector.stdout.take().unwrap());
    log.collect(connector.stderr.take().unwrap());
    wait_for(&log, "dr: normal", Duration::from_secs(10)).await;
    // The first lookup, at start, has been answered (no record) before the record appears.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t = jiff::Timestamp::now().as_second();
    let on = RecordFields {
        state: DrState::On,
        internet: Some(InternetMode::Open),
        issued_at: t,
        not_before: t - 300,
        not_after: t + 3600,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    let strings = split_strings(&sign(&on, &key).unwrap());
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();

    // Without a network change the record is seen at the next lookup, a minute away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let log = log.lines();
        assert!(
            !log.iter().any(|l| l.starts_with("dr: active")),
            "DR mode without a lookup: {log:#?}"
        );
        assert!(
            !log.iter().any(|l| l.contains("network change")),
            "a network change nobody made: {log:#?}"
        );
    }

    // The network changes: an address is added to an interface.
    let changed = Instant::now();
    ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let active = wait_for(&log, "dr: active", Duration::from_secs(5)).await;
    let took = active.duration_since(changed);
    eprintln!("DR mode {took:?} after the network change");
    let line = log
        .find(|l| l.contains("network change: looking up DR record"))
        .expect("the trigger is logged");
    assert!(line.contains("10.77.0.1/32"), "{line}");
    // The status line is printed every 250 ms: within about a second of the change.
    assert!(
        took < Duration::from_millis(1500),
        "DR mode only {took:?} after the network change"
    );
}
