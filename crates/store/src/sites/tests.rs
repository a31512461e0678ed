#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn primary(timeline: u32) -> Option<Probe> {
    Some(Probe {
        in_recovery: false,
        timeline: Some(timeline),
        replay_lsn: None,
        replay_at: None,
        streaming: false,
    })
}

fn standby(lsn: i64) -> Option<Probe> {
    Some(Probe {
        in_recovery: true,
        timeline: None,
        replay_lsn: Some(lsn),
        replay_at: Some(UNIX_EPOCH + Duration::from_secs(1_760_000_000)),
        streaming: true,
    })
}

#[test]
fn the_primary_wins_wherever_it_is_listed() {
    assert_eq!(choose(None, &[primary(1), standby(9)]), Choice::Primary(0));
    assert_eq!(choose(None, &[standby(9), primary(1)]), Choice::Primary(1));
    assert_eq!(
        choose(Some(0), &[standby(9), primary(1)]),
        Choice::Primary(1)
    );
}

#[test]
fn a_lost_primary_falls_back_to_the_most_advanced_standby() {
    assert_eq!(
        choose(Some(0), &[None, standby(5), standby(7)]),
        Choice::Standby(2)
    );
    // The current standby stays while it is as advanced as any other (no flapping).
    assert_eq!(
        choose(Some(1), &[None, standby(7), standby(7)]),
        Choice::Standby(1)
    );
    assert_eq!(
        choose(Some(0), &[None, standby(7), standby(7)]),
        Choice::Standby(1)
    );
    // A standby that has replayed nothing yet still serves when it is the only one.
    let mut fresh = standby(0).unwrap();
    fresh.replay_lsn = None;
    assert_eq!(choose(None, &[None, Some(fresh)]), Choice::Standby(1));
}

#[test]
fn nothing_reachable_is_no_choice() {
    assert_eq!(choose(Some(1), &[None, None]), Choice::None);
    assert_eq!(choose(None, &[]), Choice::None);
}

#[test]
fn two_primaries_prefer_the_current_then_the_newest_timeline() {
    // An old primary restarted after a failover is on an older timeline.
    assert_eq!(choose(None, &[primary(1), primary(2)]), Choice::Primary(1));
    assert_eq!(
        choose(Some(0), &[primary(1), primary(2)]),
        Choice::Primary(0)
    );
    assert_eq!(choose(None, &[primary(3), primary(3)]), Choice::Primary(0));
}

#[test]
fn times_are_shown_in_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_760_000_000)),
        "2025-10-09T08:53:20Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661)),
        "2000-02-29T01:01:01Z"
    );
    assert_eq!(
        ago(SystemTime::now() - Duration::from_secs(125)),
        "2 min 5 s"
    );
}

#[test]
fn connections_opened_before_a_switch_are_discarded() {
    let clock = SwitchClock::new(Duration::from_millis(200));
    assert!(
        !clock.predates_switch(Duration::from_secs(3600)),
        "no switch yet"
    );
    clock.mark();
    assert!(clock.predates_switch(Duration::from_secs(1)));
    assert!(
        clock.predates_switch(Duration::ZERO),
        "within the grace period"
    );
    std::thread::sleep(Duration::from_millis(250));
    assert!(!clock.predates_switch(Duration::ZERO));
}

#[test]
fn embedded_store_is_always_primary_and_cannot_promote() {
    let sites = Sites::embedded("sqlite:///x.db".into());
    assert_eq!(
        sites.role(),
        StoreRole::Primary {
            server: "sqlite:///x.db".into()
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(sites.promote()),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn role_display_says_what_and_since_when() {
    let role = StoreRole::ReadOnlyStandby {
        server: "postgres://b:5432/t".into(),
        since: UNIX_EPOCH + Duration::from_secs(1_760_000_000),
    };
    assert_eq!(
        role.to_string(),
        "read-only standby (postgres://b:5432/t) since 2025-10-09T08:53:20Z"
    );
    assert!(!role.is_writable());
    assert!(role.is_readable());
}

#[test]
fn automatic_promotion_follows_the_fencing_rule() {
    let cfg = AutoPromote {
        after: Duration::from_secs(5),
        witness: None,
    };
    let held = |v: PromoteVerdict, needle: &str| match v {
        PromoteVerdict::Hold(why) => assert!(why.contains(needle), "{why}"),
        PromoteVerdict::Promote => panic!("promoted; expected a hold about {needle:?}"),
    };
    held(
        auto_promote_verdict(&cfg, None, Some(false), None),
        "primary answers",
    );
    held(
        auto_promote_verdict(&cfg, Some(Duration::from_secs(4)), Some(false), None),
        "required",
    );
    held(
        auto_promote_verdict(&cfg, Some(Duration::from_secs(6)), None, None),
        "no standby",
    );
    held(
        auto_promote_verdict(&cfg, Some(Duration::from_secs(6)), Some(true), None),
        "still streams",
    );
    assert_eq!(
        auto_promote_verdict(&cfg, Some(Duration::from_secs(5)), Some(false), None),
        PromoteVerdict::Promote
    );
    let fenced = AutoPromote {
        witness: Some("198.51.100.1:443".into()),
        ..cfg
    };
    held(
        auto_promote_verdict(
            &fenced,
            Some(Duration::from_secs(6)),
            Some(false),
            Some(false),
        ),
        "witness",
    );
    held(
        auto_promote_verdict(&fenced, Some(Duration::from_secs(6)), Some(false), None),
        "witness",
    );
    assert_eq!(
        auto_promote_verdict(
            &fenced,
            Some(Duration::from_secs(6)),
            Some(false),
            Some(true)
        ),
        PromoteVerdict::Promote
    );
}
