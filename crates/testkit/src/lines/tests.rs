#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use super::LineLog;

#[tokio::test]
async fn collects_the_lines_of_a_reader_and_waits_for_them() {
    let (mut w, r) = tokio::io::duplex(1024);
    let log = LineLog::spawn_from(r);
    w.write_all(b"site: a (first)\ndr: normal\n").await.unwrap();
    let line = log
        .wait_line("site: ", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(line, "site: a (first)");
    w.write_all(b"dr: active\ndr: normal\n").await.unwrap();
    let second = log
        .wait_lines("dr: normal", 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(second, "dr: normal");
    assert_eq!(
        log.lines(),
        ["site: a (first)", "dr: normal", "dr: active", "dr: normal"]
    );
    assert_eq!(log.count(|l| l.starts_with("dr: ")), 3);
    assert!(log.any(|l| l == "dr: active"));
    assert_eq!(
        log.find(|l| l.contains("first")).as_deref(),
        Some("site: a (first)")
    );
    assert!(log.find(|l| l.contains("second")).is_none());
}

#[tokio::test]
async fn an_exact_line_is_not_a_prefix() {
    let log = LineLog::spawn_from(&b"dr: returning soon\ndr: returning\n"[..]);
    log.wait_exact("dr: returning", Duration::from_secs(5))
        .await
        .unwrap();
    let err = log
        .wait_exact("dr: return", Duration::from_millis(100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no line \"dr: return\" within"), "{err}");
}

#[tokio::test]
async fn one_log_collects_two_readers() {
    let log = LineLog::new();
    log.collect(&b"from stdout\n"[..]);
    log.collect(&b"from stderr\n"[..]);
    log.wait_for("from either", 2, Duration::from_secs(5), |l| {
        l.starts_with("from ")
    })
    .await
    .unwrap();
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(lines, ["from stderr", "from stdout"]);
}

#[tokio::test]
async fn a_missing_line_fails_in_time_naming_it_and_listing_the_lines() {
    let log = LineLog::spawn_from(&b"dr: normal\nsite: a\n"[..]);
    let start = Instant::now();
    let err = log
        .wait_lines("dr: normal", 2, Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(
        err.contains("no line starting with \"dr: normal\""),
        "{err}"
    );
    assert!(err.contains("(1 of 2 seen)"), "{err}");
    assert!(err.contains("\"site: a\""), "{err}");
}
