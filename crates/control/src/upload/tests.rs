#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::json;
use tsuzuku_audit::{AuditEvent, ChainedEvent, EventKind, link};
use tsuzuku_store::StoreRoot;

use super::*;

/// A DR gateway's chain of `n` decisions in `tenant`.
fn chain(tenant: &str, n: usize) -> Vec<ChainedEvent> {
    let mut out: Vec<ChainedEvent> = Vec::new();
    for i in 1..=n {
        let ev = AuditEvent {
            time_ms: 1_767_225_600_000 + i as i64,
            kind: EventKind::Decision,
            actor: Some("alice".into()),
            tenant: tenant.into(),
            detail: json!({"path": format!("/payroll/{i}"), "allowed": true}).into(),
        };
        let linked = link(out.last(), ev);
        out.push(linked);
    }
    out
}

fn body(node: &str, chain_id: &str, events: &[ChainedEvent]) -> Vec<u8> {
    serde_json::to_vec(&json!({"node": node, "chain": chain_id, "events": events})).unwrap()
}

#[test]
fn uploads_are_checked_and_name_their_origin() {
    let c = chain("default", 3);
    let id = c[0].hash.clone();
    let up = parse_upload(&body("dr-1", &id, &c), "default").unwrap();
    assert_eq!(up.node, "dr-1");
    assert_eq!(up.chain, id);
    assert_eq!(up.events.len(), 3);
    let d = up.events[1].event.detail.to_value();
    assert_eq!(d["dr_gateway"], "dr-1");
    assert_eq!(d["dr_seq"], 2);
    assert_eq!(d["dr_hash"], c[1].hash.as_str());
    assert_eq!(d["path"], "/payroll/2");
    assert_eq!(up.events[1].event.time_ms, c[1].event.time_ms);
    assert_eq!(up.events[1].event.actor, c[1].event.actor);
    assert_eq!(up.events[1].dr_prev_hash, c[0].hash);
    // A later part of the chain alone is fine.
    assert!(parse_upload(&body("dr-1", &id, &c[1..]), "default").is_ok());

    let mut altered = c.clone();
    let mut detail = altered[1].event.detail.to_value();
    detail["allowed"] = json!(false);
    altered[1].event.detail = detail.into();
    let mut gap = c.clone();
    gap.remove(1);
    let mut foreign = chain("someone-else", 1);
    foreign[0].event.tenant = "someone-else".into();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (body("dr-1", &id, &altered), "does not match its hash"),
        (body("dr-1", &id, &gap), "does not follow"),
        (body("dr 1", &id, &c), "node"),
        (body("dr-1", "abc", &c), "chain"),
        (body("dr-1", &id, &[]), "1 to 1000"),
        (
            body("dr-1", &"0".repeat(64), &c),
            "not the first event of the named chain",
        ),
        (body("dr-1", &foreign[0].hash, &foreign), "tenant"),
        (br#"{"node":"dr-1"}"#.to_vec(), "not an audit upload"),
    ];
    for (b, needle) in cases {
        let e = parse_upload(&b, "default").unwrap_err();
        assert!(e.contains(needle), "{e:?} should say {needle:?}");
    }
}

#[tokio::test]
async fn the_endpoint_appends_once_and_answers_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let store = StoreRoot::open(&url).await.unwrap().tenant("default");
    let c = chain("default", 4);
    let id = c[0].hash.clone();
    let answer = |(code, text): (u16, String)| -> (u16, serde_json::Value) {
        (code, serde_json::from_str(&text).unwrap_or(json!(text)))
    };
    let (code, a) = answer(accept(&store, &body("dr-1", &id, &c[..2]), 7).await);
    assert_eq!(
        (code, &a["uploaded_to"], &a["appended"]),
        (200, &json!(2), &json!(2))
    );
    // The answer was lost; the DR gateway sends again with more.
    let (code, a) = answer(accept(&store, &body("dr-1", &id, &c), 8).await);
    assert_eq!(
        (code, &a["uploaded_to"], &a["appended"]),
        (200, &json!(4), &json!(2))
    );
    // A gap (the same chain, grown to 6, but #5 left out): 409 with where the upload stands.
    let more = chain("default", 6);
    let (code, a) = answer(accept(&store, &body("dr-1", &more[0].hash, &more[5..]), 9).await);
    assert_eq!((code, &a["uploaded_to"]), (409, &json!(4)));
    let (code, _) = answer(accept(&store, b"{}", 9).await);
    assert_eq!(code, 400);
    let events = store.audit_events(1, 100).await.unwrap();
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e.event.detail.to_value()["dr_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(store.verify_audit().await.unwrap().is_intact());
}

#[test]
fn the_position_file_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit-upload.json");
    assert_eq!(read_position(&path), None);
    let p = Position {
        chain: "a".repeat(64),
        uploaded_to: 12,
    };
    write_position(&path, &p).unwrap();
    assert_eq!(read_position(&path), Some(p.clone()));
    write_position(
        &path,
        &Position {
            uploaded_to: 13,
            ..p
        },
    )
    .unwrap();
    assert_eq!(read_position(&path).unwrap().uploaded_to, 13);
    assert!(!path.with_extension("tmp").exists());
}
