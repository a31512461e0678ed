#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Automatic promotion under the fencing rule (issue 3, item 2), with a real PostgreSQL primary
//! and streaming standby: after the primary's site is lost, a store configured to promote
//! automatically does so once no primary has answered for the configured time and the standby
//! no longer streams from one; writes work again without an operator. The figure is printed.

use std::time::{Duration, Instant};

use tsuzuku_store::{AutoPromote, NewUser, SiteOptions, StoreRole, StoreRoot};
use tsuzuku_testkit::postgres::PgCluster;

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: name.into(),
        ..NewUser::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_is_replaced_automatically_once_the_fencing_rule_holds() {
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let sites = [primary.url(), standby.url()];
    let after = Duration::from_secs(2);
    let options = SiteOptions {
        auto_promote: Some(AutoPromote {
            after,
            witness: None,
        }),
        ..SiteOptions::default()
    };
    let root = StoreRoot::open_sites_with(&sites, options).await.unwrap();
    // A second opener whose witness never answers: it must never promote by itself (it follows
    // the promotion made by the first).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let witness = closed.local_addr().unwrap().to_string();
    drop(closed);
    let fenced = StoreRoot::open_sites_with(
        &sites,
        SiteOptions {
            auto_promote: Some(AutoPromote {
                after: Duration::from_millis(500),
                witness: Some(witness),
            }),
            ..SiteOptions::default()
        },
    )
    .await
    .unwrap();
    let s = root.tenant("auto");
    s.create_user(user("before"), 1).await.unwrap();
    primary.wait_until_replayed(&standby).await.unwrap();
    // While the primary answers nothing happens.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(root.role(), StoreRole::Primary { .. }));
    assert!(
        standby
            .psql("SELECT pg_is_in_recovery()")
            .await
            .unwrap()
            .contains('t')
    );

    primary.kill().unwrap();
    let killed = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        if s.create_user(user(&format!("after-{n}")), 2).await.is_ok() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no automatic promotion: {:?}",
            root.role()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writable_after = killed.elapsed();
    eprintln!(
        "auto-promotion figures: writes work {} ms after the primary was killed (promotion after {} ms without a primary)",
        writable_after.as_millis(),
        after.as_millis()
    );
    assert!(
        writable_after >= after,
        "promoted before the rule allowed it"
    );
    let start = Instant::now();
    while root.role()
        != (StoreRole::Primary {
            server: standby.url(),
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            root.role()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fenced opener follows the new primary and sees the data.
    let f = fenced.tenant("auto");
    let start = Instant::now();
    while !fenced.role().is_writable() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f.get_user_by_name("before").await.unwrap().is_some());
}
