//! End-to-end tests of the DR trigger record through the real `tsuzuku` binary and a real DNS
//! server (hickory-server, in-process): `dr keygen`, `dr record`, publish, `dr check` → DR mode;
//! a tampered record, a record signed with another key, a withdrawn record and a failing DNS
//! server each give their own outcome.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tsuzuku_testkit::dns::{Fault, TestDns};

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const ZONE: &str = "example.test";
const NAME: &str = "_tsuzuku-dr.example.test";

async fn tsuzuku(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("TSUZUKU_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("tsuzuku: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_owned()
}

async fn keygen(dir: &Path, sub: &str) -> (String, String, String) {
    let out = tsuzuku(dir, &["--json", "dr", "keygen", "--out", sub]).await;
    let v = json(&out);
    (
        v["key_id"].as_str().unwrap().to_owned(),
        v["private_key"].as_str().unwrap().to_owned(),
        v["public_key"].as_str().unwrap().to_owned(),
    )
}

/// `dr record --json` with these extra flags; returns the value and its TXT strings.
async fn record(dir: &Path, key: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["--json", "dr", "record", "--key", key, "--name", NAME];
    args.extend_from_slice(extra);
    let v = json(&tsuzuku(dir, &args).await);
    let strings = v["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    (v["value"].as_str().unwrap().to_owned(), strings)
}

async fn publish(dns: &TestDns, strings: &[String]) {
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();
}

async fn check(dir: &Path, dns: &TestDns, trust: &str, extra: &[&str]) -> Output {
    let ns = dns.addr().to_string();
    let mut args = vec![
        "dr",
        "check",
        NAME,
        "--trust",
        trust,
        "--nameserver",
        &ns,
        "--timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    tsuzuku(dir, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_record_switches_and_a_forged_one_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dns = TestDns::start(ZONE).await.unwrap();

    let (key_id, private, public) = keygen(dir, "keys").await;
    assert_eq!(key_id.len(), 16);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(&private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key mode {mode:o}");
    }
    // Never overwritten.
    let again = tsuzuku(dir, &["dr", "keygen", "--out", "keys"]).await;
    assert!(one_line_error(&again).contains("already exists"));

    // No record yet: NXDOMAIN, exit 2, normal mode.
    let out = check(dir, &dns, &public, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("normal mode"));

    // Publish an `on` record: every connector in DR mode.
    let (value, strings) = record(
        dir,
        &private,
        &["--state", "on", "--internet", "controlled", "--for", "2h"],
    )
    .await;
    assert!(value.contains(&format!("k={key_id}")), "{value}");
    publish(&dns, &strings).await;
    let out = check(dir, &dns, &public, &[]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verified"), "{stdout}");
    assert!(
        stdout.contains("DR mode — internet controlled until"),
        "{stdout}"
    );
    let out = tsuzuku(
        dir,
        &[
            "--json",
            "dr",
            "check",
            NAME,
            "--trust",
            &public,
            "--nameserver",
            &dns.addr().to_string(),
        ],
    )
    .await;
    let v = json(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["dr_active"], true);
    assert_eq!(v["internet"], "controlled");
    assert_eq!(v["drill"], false);
    assert_eq!(v["key_id"], key_id.as_str());
    // Checked after it expires, the same record is refused.
    let out = check(dir, &dns, &public, &["--at", "2100-01-01T00:00:00Z"]).await;
    assert!(one_line_error(&out).contains("expired"), "{out:?}");

    // A tampered record (internet mode changed) fails its signature.
    let tampered = value.replace("m=controlled", "m=open");
    publish(&dns, &[tampered]).await;
    let line = one_line_error(&check(dir, &dns, &public, &[]).await);
    assert!(line.contains("signature does not verify"), "{line}");
    assert!(line.contains(&key_id), "{line}");

    // A record signed with another key is not trusted.
    let (other_id, other_private, _) = keygen(dir, "other").await;
    let (_, strings) = record(
        dir,
        &other_private,
        &["--state", "on", "--internet", "open", "--for", "1h"],
    )
    .await;
    publish(&dns, &strings).await;
    let line = one_line_error(&check(dir, &dns, &public, &[]).await);
    assert!(line.contains("not trusted"), "{line}");
    assert!(line.contains(&other_id), "{line}");

    // An unsigned record is refused as such.
    let unsigned = value.split("; sig=").next().unwrap().to_owned();
    publish(&dns, &[unsigned]).await;
    let line = one_line_error(&check(dir, &dns, &public, &[]).await);
    assert!(line.contains("unsigned"), "{line}");

    // DNS failing is not a conclusion: connectors keep their last verified state.
    dns.set_fault(Fault::ServFail);
    let line = one_line_error(&check(dir, &dns, &public, &[]).await);
    assert!(line.contains("SERVFAIL"), "{line}");
    assert!(line.contains("last verified state"), "{line}");
    dns.set_fault(Fault::None);

    // Withdrawn: back to normal.
    dns.remove_txt(NAME).await.unwrap();
    let out = check(dir, &dns, &public, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drill_record_applies_only_to_its_groups_and_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dns = TestDns::start(ZONE).await.unwrap();
    let (_, private, public) = keygen(dir, "keys").await;
    let groups: Vec<String> = (0..40).map(|i| format!("drill-group-{i:02}")).collect();
    let groups = groups.join(",");
    let (value, strings) = record(
        dir,
        &private,
        &[
            "--state",
            "test",
            "--internet",
            "closed",
            "--for",
            "30m",
            "--groups",
            &groups,
            "--devices",
            "laptop-7",
        ],
    )
    .await;
    assert!(strings.len() >= 3, "{value}");
    assert!(strings.iter().all(|s| s.len() <= 255));
    publish(&dns, &strings).await;

    for member in [
        &["--group", "drill-group-33"][..],
        &["--device", "laptop-7"][..],
    ] {
        let mut args = vec!["--json"];
        args.extend_from_slice(member);
        let v = json(&check(dir, &dns, &public, &args).await);
        assert_eq!(v["dr_active"], true, "{member:?}");
        assert_eq!(v["drill"], true);
        assert_eq!(v["internet"], "closed");
    }
    let out = check(dir, &dns, &public, &["--json", "--group", "sales"]).await;
    let v = json(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["dr_active"], false);
    assert_eq!(v["reason"], "DrillForOthers");

    // A test record without groups or devices cannot be made.
    let out = tsuzuku(
        dir,
        &[
            "dr",
            "record",
            "--key",
            &private,
            "--state",
            "test",
            "--internet",
            "open",
            "--for",
            "1h",
        ],
    )
    .await;
    assert!(one_line_error(&out).contains("groups"));
}
