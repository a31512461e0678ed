#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use super::eventually;

#[tokio::test]
async fn returns_once_the_condition_holds() {
    let mut calls = 0;
    eventually(Duration::from_secs(5), "the third call", async || {
        calls += 1;
        calls == 3
    })
    .await
    .unwrap();
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn a_closure_returning_a_future_works_too() {
    let ready = Instant::now() + Duration::from_millis(300);
    eventually(Duration::from_secs(5), "300 ms to pass", || async {
        Instant::now() >= ready
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn times_out_naming_what_it_waited_for() {
    let start = Instant::now();
    let err = eventually(Duration::from_millis(500), "the impossible", async || false)
        .await
        .unwrap_err()
        .to_string();
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(
        err.contains("timed out after 500ms waiting for: the impossible"),
        "{err}"
    );
}
