#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use tsuzuku_store::DrTransition;

use super::*;

fn report(state: DrState, drill: bool, since_ms: Option<i64>) -> DrReport {
    DrReport {
        state,
        drill,
        since_ms,
    }
}

/// Feeds reports one after another, as the control plane would, and returns what it recorded.
fn record(reports: &[(DrReport, i64)]) -> Vec<DrTransition> {
    let mut rows: Vec<DrTransition> = Vec::new();
    for (r, now) in reports {
        if let Some(t) = transition("laptop-1", rows.last(), r, *now) {
            rows.push(t);
        }
    }
    rows
}

#[test]
fn a_device_never_out_of_normal_mode_records_nothing() {
    let rows = record(&[
        (report(DrState::Normal, false, Some(1_000)), 10_000),
        (report(DrState::Normal, false, Some(1_000)), 20_000),
        // A drill flag on a normal state means nothing.
        (report(DrState::Normal, true, Some(1_000)), 30_000),
    ]);
    assert!(rows.is_empty(), "{rows:?}");
}

#[test]
fn each_change_is_recorded_once_with_the_connectors_time() {
    let rows = record(&[
        (report(DrState::Normal, false, Some(1_000)), 10_000),
        (report(DrState::Active, true, Some(12_000)), 20_000),
        (report(DrState::Active, true, Some(12_000)), 30_000),
        (report(DrState::Returning, false, Some(41_000)), 50_000),
        (report(DrState::Normal, false, Some(52_000)), 60_000),
        (report(DrState::Normal, false, Some(52_000)), 70_000),
    ]);
    let got: Vec<(i64, i64, &str, bool, i64)> = rows
        .iter()
        .map(|t| (t.seq, t.at_ms, t.state.as_str(), t.drill, t.reported_ms))
        .collect();
    assert_eq!(
        got,
        [
            (1, 12_000, "active", true, 20_000),
            (2, 41_000, "returning", false, 50_000),
            (3, 52_000, "normal", false, 60_000),
        ]
    );
}

#[test]
fn a_drill_turning_real_is_a_change() {
    let rows = record(&[
        (report(DrState::Active, true, Some(1_000)), 2_000),
        (report(DrState::Active, false, Some(5_000)), 6_000),
    ]);
    assert_eq!(rows.len(), 2);
    assert!(rows[0].drill && !rows[1].drill);
}

#[test]
fn connector_times_are_kept_within_what_the_control_plane_saw() {
    // A clock ahead: at most the arrival time. A clock behind: not before the last change.
    let rows = record(&[
        (report(DrState::Active, false, Some(99_000)), 20_000),
        (report(DrState::Normal, false, Some(5_000)), 30_000),
        (report(DrState::Returning, false, None), 40_000),
    ]);
    let at: Vec<i64> = rows.iter().map(|t| t.at_ms).collect();
    assert_eq!(at, [20_000, 20_000, 40_000]);
}

fn row(device: &str, seq: i64, at_ms: i64, state: &str, drill: bool) -> DrTransition {
    DrTransition {
        device: device.into(),
        seq,
        at_ms,
        state: state.into(),
        drill,
        reported_ms: at_ms,
    }
}

fn ep(
    device: &str,
    drill: bool,
    entered: Option<i64>,
    left: Option<i64>,
    back: Option<i64>,
) -> Episode {
    Episode {
        device: device.into(),
        drill,
        entered_ms: entered,
        left_ms: left,
        back_ms: back,
    }
}

#[test]
fn episodes_per_device_with_their_end_and_return() {
    let rows = [
        row("a", 1, 1_000, "active", true),
        row("a", 2, 5_000, "returning", false),
        row("a", 3, 7_000, "normal", false),
        row("a", 4, 10_000, "active", false),
        row("b", 1, 2_000, "active", true),
        row("b", 2, 3_000, "normal", false),
        row("c", 1, 4_000, "returning", false),
        row("d", 1, 1_000, "active", true),
        row("d", 2, 2_000, "active", false),
    ];
    let e = episodes(&rows, 0);
    assert_eq!(
        e,
        [
            ep("a", true, Some(1_000), Some(5_000), Some(7_000)),
            ep("a", false, Some(10_000), None, None),
            ep("b", true, Some(2_000), Some(3_000), Some(3_000)),
            ep("c", false, None, Some(4_000), None),
            ep("d", true, Some(1_000), Some(2_000), None),
            ep("d", false, Some(2_000), None, None),
        ]
    );
    assert_eq!(e[0].duration_ms(99_000), Some(4_000));
    assert_eq!(e[1].duration_ms(12_500), Some(2_500));
    assert_eq!(e[3].duration_ms(99_000), None);
    // Only what was under way at or after the start of the window.
    let later = episodes(&rows, 6_000);
    assert_eq!(
        later.iter().map(|e| e.device.as_str()).collect::<Vec<_>>(),
        ["a", "a", "c", "d"]
    );
    let latest = episodes(&rows, 7_001);
    assert_eq!(
        latest.iter().map(|e| e.device.as_str()).collect::<Vec<_>>(),
        ["a", "c", "d"]
    );
}

#[test]
fn the_dr_part_of_a_report_is_checked() {
    use crate::server::parse_report;
    let (_, dr) = parse_report(
        br#"{"device":"laptop-1","dr":{"state":"active","drill":true,"since_ms":1767225600000}}"#,
        5,
    )
    .unwrap();
    assert_eq!(
        dr,
        Some(report(DrState::Active, true, Some(1_767_225_600_000)))
    );
    let (_, dr) = parse_report(br#"{"device":"a","dr":{"state":"returning"}}"#, 5).unwrap();
    assert_eq!(dr, Some(report(DrState::Returning, false, None)));
    for bad in [
        &br#"{"device":"a","dr":{"state":"on"}}"#[..],
        br#"{"device":"a","dr":{"state":"active","since_ms":-1}}"#,
        br#"{"device":"a","dr":{"state":"active","extra":1}}"#,
        br#"{"device":"a","dr":{"drill":true}}"#,
        br#"{"device":"a","dr":"active"}"#,
    ] {
        assert!(
            parse_report(bad, 0).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
