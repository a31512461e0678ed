#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! What asynchronous replication costs (issue 3, "Measured"): a real primary and an
//! *asynchronous* streaming standby under a steady write load; the replication lag is sampled
//! on the primary (`pg_stat_replication.replay_lag`), the primary's site is lost mid-stream,
//! the standby is promoted, and the acknowledged writes that did not make it are counted. The
//! figures are printed (`--nocapture`); `bench/state-failover/run.sh` collects them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tsuzuku_store::{NewUser, SiteOptions, StoreRoot};
use tsuzuku_testkit::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_lag_and_what_a_lost_primary_costs() {
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let root = StoreRoot::open_sites_with(&[primary.url(), standby.url()], SiteOptions::default())
        .await
        .unwrap();
    let s = root.tenant("async-rpo");
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, acked, stop) = (s.clone(), Arc::clone(&acked), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}-{i:05}");
                i += 1;
                let new = NewUser {
                    username: name.clone(),
                    display_name: name.clone(),
                    ..NewUser::default()
                };
                if s.create_user(new, 1).await.is_ok() {
                    acked.lock().unwrap().push(name);
                }
            }
        }));
    }
    // Sample the lag the primary sees for 3 s under load.
    let mut lags = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let out = primary
            .psql(
                "SELECT COALESCE(CAST(EXTRACT(EPOCH FROM replay_lag) * 1000 AS BIGINT), 0) FROM pg_stat_replication",
            )
            .await
            .unwrap();
        if let Ok(ms) = out.trim().parse::<i64>() {
            lags.push(ms);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    primary.kill().unwrap();
    let acked_at_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    root.promote().await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for name in &acked {
        if s.get_user_by_name(name).await.unwrap().is_none() {
            lost += 1;
        }
    }
    lags.sort_unstable();
    let p50 = lags.get(lags.len() / 2).copied().unwrap_or(0);
    let max = lags.last().copied().unwrap_or(0);
    eprintln!(
        "async figures: replay lag p50 {p50} ms, max {max} ms over {} samples; acknowledged writes {} ({} at the kill), lost {lost}",
        lags.len(),
        acked.len(),
        acked_at_kill
    );
    assert!(!lags.is_empty(), "no lag samples");
    assert!(acked_at_kill > 0, "no writes acknowledged before the kill");
    assert!(lost <= acked.len());
}
