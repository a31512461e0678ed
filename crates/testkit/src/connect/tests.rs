#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

use super::{Connector, connect_answer, connect_status, status};

/// A shell that prints what a connector prints, then stays up.
fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

#[tokio::test]
async fn start_reads_the_pac_and_ready_lines_and_keeps_collecting() {
    let mut c = Connector::start(
        sh(
            "echo 'device: d-1'; echo 'PAC http://127.0.0.1:7/proxy.pac'; \
            echo 'READY 127.0.0.1:7'; echo oops >&2; sleep 0.2; echo 'site: a (up)'; sleep 30",
        )
        .stderr(Stdio::piped()),
    )
    .await
    .unwrap();
    assert_eq!(c.proxy, "127.0.0.1:7");
    assert_eq!(c.pac.as_deref(), Some("http://127.0.0.1:7/proxy.pac"));
    let site = c
        .stdout
        .wait_line("site: ", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(site, "site: a (up)");
    assert_eq!(
        c.stdout.lines()[..3],
        [
            "device: d-1",
            "PAC http://127.0.0.1:7/proxy.pac",
            "READY 127.0.0.1:7"
        ]
    );
    c.stderr
        .wait_line("oops", Duration::from_secs(5))
        .await
        .unwrap();
    c.stop().await.unwrap();
    assert!(c.child.try_wait().unwrap().is_some(), "still running");
}

#[tokio::test]
async fn start_fails_when_no_ready_line_comes() {
    let err = Connector::start(sh("echo 'PAC http://x/'; exit 3").stderr(Stdio::null()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("without printing `READY <address>`"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("PAC http://x/"), "{err}");
}

#[test]
fn status_runs_the_binary_with_the_proxy_and_reports_failures() {
    // `echo` stands in for the binary: it prints the arguments it was given.
    let out = status("echo", "127.0.0.1:7").unwrap();
    assert_eq!(out, "connect status --proxy 127.0.0.1:7\n");
    let err = status("false", "127.0.0.1:7").unwrap_err().to_string();
    assert!(
        err.contains("false connect status --proxy 127.0.0.1:7 failed (exit status: 1)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_raw_connect_returns_the_status_line_or_the_whole_answer() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(
                    req.starts_with("CONNECT app.localhost:443 HTTP/1.1\r\n"),
                    "{req}"
                );
                s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                s.write_all(b"\r\nthe gateway refused the device tunnel\n")
                    .await
                    .unwrap();
            });
        }
    });
    let line = connect_status(&proxy, "app.localhost:443").await.unwrap();
    assert_eq!(line, "HTTP/1.1 502 Bad Gateway");
    let answer = connect_answer(&proxy, "app.localhost:443").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("refused the device tunnel"), "{answer}");
}
