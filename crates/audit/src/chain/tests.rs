#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;
use crate::Detail;
use crate::event::EventKind;

/// Small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(rng: &mut Rng, i: i64) -> AuditEvent {
    let kind = EventKind::ALL[rng.below(6) as usize];
    AuditEvent {
        time_ms: 1_700_000_000_000 + i * 17,
        kind,
        actor: (rng.below(3) != 0).then(|| format!("user-{}", rng.below(50))),
        tenant: "default".into(),
        detail: json!({
            "i": i,
            "allowed": rng.below(2) == 0,
            "latency": (rng.below(100_000) as f64) / 7.0,
            "path": format!("/app/{}\n\"quoted\"", rng.below(1000)),
            "nested": {"z": [1, 2, {"b": null, "a": "x"}], "a": "é\u{1}"},
        })
        .into(),
    }
}

fn chain(seed: u64, n: i64) -> Vec<ChainedEvent> {
    let mut rng = Rng(seed.max(1));
    let mut out: Vec<ChainedEvent> = Vec::new();
    for i in 1..=n {
        let ev = event(&mut rng, i);
        let linked = link(out.last(), ev);
        out.push(linked);
    }
    out
}

fn problems(events: Vec<ChainedEvent>) -> Vec<ChainProblem> {
    verify(events).problems
}

#[test]
fn canonical_bytes_format_is_frozen() {
    let ev = AuditEvent {
        time_ms: 1_700_000_000_123,
        kind: EventKind::Login,
        actor: Some("alice \"a\"".into()),
        tenant: "default".into(),
        detail: json!({"z": 1, "a": [true, null, 1.5], "m": {"y": "\n", "b": "\u{1f}"}}).into(),
    };
    let expected = concat!(
        r#"{"actor":"alice \"a\"","detail":{"a":[true,null,1.5],"m":{"b":"\u001f","y":"\n"},"z":1},"#,
        r#""kind":"login","prev_hash":"abc","seq":7,"tenant":"default","time_ms":1700000000123,"v":1}"#
    );
    let bytes = canonical_bytes(7, "abc", &ev);
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
    // The canonical bytes are valid JSON that means the same as the event.
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(parsed["detail"], ev.detail.to_value());
    assert_eq!(parsed["actor"], "alice \"a\"");
    assert_eq!(
        chain_hash(7, "abc", &ev),
        hex::encode(Sha256::digest(expected.as_bytes()))
    );
}

#[test]
fn canonical_bytes_ignore_map_insertion_order() {
    let mut a = serde_json::Map::new();
    a.insert("b".into(), json!(1));
    a.insert("a".into(), json!({"y": 2, "x": 3}));
    let mut b = serde_json::Map::new();
    b.insert("a".into(), json!({"x": 3, "y": 2}));
    b.insert("b".into(), json!(1));
    let ev = |detail| AuditEvent {
        time_ms: 1,
        kind: EventKind::System,
        actor: None,
        tenant: "t".into(),
        detail,
    };
    assert_eq!(
        canonical_bytes(1, GENESIS_HASH, &ev(serde_json::Value::Object(a).into())),
        canonical_bytes(1, GENESIS_HASH, &ev(serde_json::Value::Object(b).into()))
    );
}

#[test]
fn link_starts_at_genesis_and_chains() {
    let c = chain(1, 3);
    assert_eq!(GENESIS_HASH.len(), 64);
    assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    assert_eq!(c[0].seq, 1);
    assert_eq!(c[0].prev_hash, GENESIS_HASH);
    assert_eq!(c[1].seq, 2);
    assert_eq!(c[1].prev_hash, c[0].hash);
    assert_eq!(c[2].prev_hash, c[1].hash);
    assert_eq!(c[2].hash.len(), 64);
    assert_ne!(c[1].hash, c[2].hash);
}

#[test]
fn empty_chain_is_intact() {
    let report = verify(Vec::new());
    assert!(report.is_intact());
    assert_eq!(report.checked, 0);
    assert_eq!(report.head, None);
}

#[test]
fn intact_chain_verifies_and_reports_head() {
    let c = chain(2, 300);
    let head = (300, c[299].hash.clone());
    let report = verify(c);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checked, 300);
    assert_eq!(report.head, Some(head));
    assert!(report.to_string().contains("head is event #300"));
}

#[test]
fn events_survive_a_trip_through_stored_json() {
    // Storage keeps `detail` as JSON text and rebuilds the value: floats must round-trip.
    let c = chain(3, 200);
    let reloaded: Vec<ChainedEvent> = c
        .iter()
        .map(|e| {
            let text = serde_json::to_string(&e.event.detail).unwrap();
            let mut e = e.clone();
            e.event.detail = serde_json::from_str(&text).unwrap();
            e
        })
        .collect();
    assert!(verify(reloaded).is_intact());
}

#[test]
fn altered_content_is_detected() {
    let mut c = chain(4, 10);
    c[4].event.actor = Some("mallory".into());
    assert_eq!(problems(c), vec![ChainProblem::Altered { seq: 5 }]);

    let mut c = chain(4, 10);
    set_detail(&mut c[6].event, "allowed", json!("yes"));
    assert_eq!(problems(c), vec![ChainProblem::Altered { seq: 7 }]);

    let mut c = chain(4, 10);
    c[0].event.time_ms += 1;
    assert_eq!(problems(c), vec![ChainProblem::Altered { seq: 1 }]);
}

#[test]
fn altered_and_rehashed_event_breaks_the_next_link() {
    let mut c = chain(5, 10);
    c[4].event.kind = EventKind::Admin;
    c[4].hash = chain_hash(c[4].seq, &c[4].prev_hash, &c[4].event);
    let p = problems(c);
    assert_eq!(p, vec![ChainProblem::BrokenLink { seq: 6 }]);
    assert!(
        p[0].to_string()
            .contains("event #6 does not link to event #5")
    );
}

#[test]
fn prev_hash_not_matching_is_detected() {
    let mut c = chain(6, 10);
    c[3].prev_hash = c[1].hash.clone();
    let p = problems(c.clone());
    assert!(p.contains(&ChainProblem::BrokenLink { seq: 4 }), "{p:?}");
    assert!(p.contains(&ChainProblem::Altered { seq: 4 }), "{p:?}");

    // Re-hashed too: only the link betrays it.
    c[3].hash = chain_hash(4, &c[3].prev_hash, &c[3].event);
    c[4].prev_hash = c[3].hash.clone();
    c[4].hash = chain_hash(5, &c[4].prev_hash, &c[4].event);
    let p = problems(c);
    assert!(p.contains(&ChainProblem::BrokenLink { seq: 4 }), "{p:?}");
}

#[test]
fn removed_events_are_detected() {
    let mut c = chain(7, 10);
    c.remove(4);
    let p = problems(c);
    assert_eq!(
        p,
        vec![ChainProblem::Removed {
            after_seq: 4,
            missing_from: 5,
            missing_to: 5
        }]
    );
    assert!(
        p[0].to_string().contains("event #5 was removed"),
        "{}",
        p[0]
    );

    let mut c = chain(7, 10);
    c.drain(2..6);
    let p = problems(c);
    assert_eq!(
        p,
        vec![ChainProblem::Removed {
            after_seq: 2,
            missing_from: 3,
            missing_to: 6
        }]
    );
    assert!(p[0].to_string().contains("#3 to #6"), "{}", p[0]);

    let mut c = chain(7, 10);
    c.remove(0);
    assert_eq!(
        problems(c),
        vec![ChainProblem::Removed {
            after_seq: 0,
            missing_from: 1,
            missing_to: 1
        }]
    );
}

#[test]
fn swapped_events_are_detected() {
    let mut c = chain(8, 10);
    c.swap(3, 4); // order: 1 2 3 5 4 6 ...
    let p = problems(c);
    assert_eq!(
        p,
        vec![ChainProblem::Reordered {
            seq: 4,
            expected: 6
        }]
    );
    assert!(p[0].to_string().contains("event #4 is out of order"));

    let mut c = chain(8, 10);
    c.swap(1, 7); // 1 8 3 4 5 6 7 2 9 10
    let p = problems(c);
    assert!(
        p.contains(&ChainProblem::Reordered {
            seq: 3,
            expected: 9
        }),
        "{p:?}"
    );
    assert!(
        p.contains(&ChainProblem::Reordered {
            seq: 2,
            expected: 9
        }),
        "{p:?}"
    );
    assert!(
        !p.iter().any(|x| matches!(x, ChainProblem::Removed { .. })),
        "nothing was removed: {p:?}"
    );
}

#[test]
fn duplicated_event_is_detected() {
    let mut c = chain(9, 5);
    let dup = c[2].clone();
    c.insert(4, dup);
    assert_eq!(problems(c), vec![ChainProblem::Duplicate { seq: 3 }]);
}

#[test]
fn verify_from_an_anchor_checks_the_first_link() {
    let c = chain(10, 20);
    let tail: Vec<_> = c[10..].to_vec();
    let ok = verify_from(10, &c[9].hash, tail.clone());
    assert!(ok.is_intact(), "{ok}");
    assert_eq!(ok.checked, 10);
    let bad = verify_from(10, &c[8].hash, tail.clone());
    assert_eq!(bad.problems, vec![ChainProblem::BrokenLink { seq: 11 }]);
    // Without an anchor the missing start shows as removed events.
    assert_eq!(
        verify(tail).problems,
        vec![ChainProblem::Removed {
            after_seq: 0,
            missing_from: 1,
            missing_to: 10
        }]
    );
}

#[test]
fn truncated_tail_is_detected_against_a_recorded_head() {
    let c = chain(11, 10);
    let head_hash = c[9].hash.clone();
    let mut report = verify(c[..8].to_vec());
    assert!(report.is_intact());
    report.check_head(Some((10, &head_hash)));
    assert_eq!(
        report.problems,
        vec![ChainProblem::HeadMismatch {
            last_seq: 8,
            head_seq: 10
        }]
    );
    assert!(report.to_string().contains("newest events were removed"));

    let mut full = verify(c);
    full.check_head(Some((10, &head_hash)));
    assert!(full.is_intact());

    let mut empty = verify(Vec::new());
    empty.check_head(None);
    assert!(empty.is_intact());
}

/// Many chains, one random tampering each; the verifier must report exactly what was done.
#[test]
fn random_tampering_is_always_detected_precisely() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed * 7919);
        let n = 5 + rng.below(60) as i64;
        let mut c = chain(seed, n);
        let k = 1 + rng.below((n - 2) as u64) as usize; // index 1..n-2, never first or last
        let seq = c[k].seq;
        let op = rng.below(5);
        let expected = match op {
            0 => {
                set_detail(&mut c[k].event, "i", json!(-1));
                vec![ChainProblem::Altered { seq }]
            }
            1 => {
                c[k].event.tenant = "other".into();
                c[k].hash = chain_hash(seq, &c[k].prev_hash, &c[k].event);
                vec![ChainProblem::BrokenLink { seq: seq + 1 }]
            }
            2 => {
                let len = 1 + rng.below((n as u64 - 1 - k as u64).min(5)) as usize;
                c.drain(k..k + len);
                vec![ChainProblem::Removed {
                    after_seq: seq - 1,
                    missing_from: seq,
                    missing_to: seq + len as i64 - 1,
                }]
            }
            3 => {
                c.swap(k, k + 1);
                vec![ChainProblem::Reordered {
                    seq,
                    expected: seq + 2,
                }]
            }
            _ => {
                let dup = c[k - 1].clone();
                c.insert(k + 1, dup);
                vec![ChainProblem::Duplicate { seq: seq - 1 }]
            }
        };
        let report = verify(c);
        assert_eq!(
            report.problems, expected,
            "seed {seed}, op {op}, k {k}, n {n}"
        );
        assert!(!report.is_intact());
        assert!(report.to_string().contains("NOT intact"));
    }
}

#[test]
fn link_to_a_head_equals_link_to_the_event() {
    let c = chain(12, 3);
    let next = event(&mut Rng(99), 4);
    assert_eq!(
        link_to(c[2].seq, &c[2].hash, next.clone()),
        link(Some(&c[2]), next.clone())
    );
    assert_eq!(link_to(0, GENESIS_HASH, next.clone()), link(None, next));
}

#[test]
fn unreadable_events_are_reported_by_reason_and_keep_the_sequence() {
    let c = chain(13, 5);
    let mut v = Verifier::new();
    for (i, e) in c.iter().enumerate() {
        match i {
            2 => v.push_unreadable(
                e.seq,
                Some(&e.prev_hash),
                Some(&e.hash),
                "its kind \"bogus\" is unknown",
            ),
            // A hash that cannot be read leaves the next link unchecked, not blamed.
            3 => v.push_unreadable(e.seq, Some(&e.prev_hash), None, "its hash is not text"),
            _ => v.push(e),
        }
    }
    let report = v.finish();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem::Unreadable {
                seq: 3,
                reason: "its kind \"bogus\" is unknown".into()
            },
            ChainProblem::Unreadable {
                seq: 4,
                reason: "its hash is not text".into()
            },
        ]
    );
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("event #3 was altered: its stored row cannot be read as an event"),
        "{report}"
    );
    assert_eq!(report.checked, 5);
    assert_eq!(report.head, Some((5, c[4].hash.clone())));
}

/// Review finding: a row numbered -5 was shown by `audit tail` and never verified.
#[test]
fn rows_numbered_below_one_or_not_at_all_are_reported() {
    let c = chain(14, 3);
    let mut v = Verifier::new();
    let mut forged = c[0].clone();
    forged.seq = -5;
    v.push(&forged);
    v.push_bad_seq("abc");
    for e in &c {
        v.push(e);
    }
    let report = v.finish();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem::BadSeq {
                stored: "-5".into()
            },
            ChainProblem::BadSeq {
                stored: "abc".into()
            },
        ]
    );
    assert!(report.problems[0].to_string().contains("a row numbered -5"));
    assert_eq!(report.checked, 5);
}

/// Review finding: `audit verify` ignored the stored head. A verifier told the head reports
/// the end of the chain against it.
#[test]
fn the_end_of_the_chain_is_checked_against_the_expected_head() {
    let c = chain(15, 8);
    let run = |events: &[ChainedEvent], head: Option<(i64, &str)>| {
        let mut v = Verifier::new();
        v.expect_head(head);
        for e in events {
            v.push(e);
        }
        v.finish().problems
    };
    let head6 = (6, c[5].hash.as_str());
    assert_eq!(run(&c[..6], Some(head6)), vec![]);
    assert_eq!(run(&[], Some((0, GENESIS_HASH))), vec![]);
    assert_eq!(run(&[], None), vec![]);
    // Tail truncation: 5 and 6 deleted, the head still says 6.
    let p = run(&c[..4], Some(head6));
    assert_eq!(
        p,
        vec![ChainProblem::HeadMismatch {
            last_seq: 4,
            head_seq: 6
        }]
    );
    assert!(p[0].to_string().contains("(events #5 to #6)"), "{}", p[0]);
    // The head row deleted.
    let p = run(&c[..6], None);
    assert_eq!(p, vec![ChainProblem::HeadMissing { last_seq: 6 }]);
    // Events appended behind the log's back, correctly hashed, past the head.
    let p = run(&c, Some(head6));
    assert_eq!(
        p,
        vec![ChainProblem::PastHead {
            first: 7,
            last: 8,
            head_seq: 6
        }]
    );
    assert!(
        p[0].to_string()
            .starts_with("events #7 to #8 past the recorded head")
    );
    assert_eq!(
        run(&c[..6], Some((0, GENESIS_HASH))),
        vec![ChainProblem::PastHead {
            first: 1,
            last: 6,
            head_seq: 0
        }]
    );
    // The head's event is not the one recorded.
    assert_eq!(
        run(&c[..6], Some((6, c[4].hash.as_str()))),
        vec![ChainProblem::HeadHashMismatch { seq: 6 }]
    );
    assert_eq!(
        run(&[], Some((0, c[0].hash.as_str()))),
        vec![ChainProblem::HeadHashMismatch { seq: 0 }]
    );
    // A head that cannot be read.
    let mut v = Verifier::new();
    v.expect_unreadable_head("its seq is not a number");
    v.push(&c[0]);
    assert_eq!(
        v.finish().problems,
        vec![ChainProblem::HeadUnreadable {
            reason: "its seq is not a number".into()
        }]
    );
}

/// Review finding: a detail with a duplicate key verified intact.
#[test]
fn a_detail_not_stored_as_its_canonical_text_is_altered() {
    let c = chain(16, 3);
    let mut v = Verifier::new();
    v.push(&c[0]);
    v.push_not_canonical(&c[1]);
    let mut changed = c[2].clone();
    set_detail(&mut changed.event, "i", json!(-1));
    v.push_not_canonical(&changed);
    let report = v.finish();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem::DetailNotCanonical { seq: 2 },
            ChainProblem::Altered { seq: 3 }
        ]
    );
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("event #2 was altered: its stored detail is not the exact text")
    );
}

#[test]
fn a_detail_stored_as_its_text_and_read_back_verifies() {
    let mut rng = Rng(0x5eed_cafe);
    for i in 1..=200 {
        let mut ev = event(&mut rng, i);
        if i % 3 == 0 {
            // Control characters, non-ASCII, nested objects and arrays, a float.
            ev.detail = json!({
                "z": {"b": [1, "\u{1}\u{7f}é", null], "a": 0.1},
                "a": "tab\tbell\u{7}",
                "n": -i,
            })
            .into();
        }
        let hash = chain_hash(i, GENESIS_HASH, &ev);
        // Stored as its text and read back, the event hashes the same.
        let mut back = ev.clone();
        back.detail = Detail::from_json(ev.detail.as_str()).unwrap();
        assert_eq!(back.detail, ev.detail, "event {i}");
        assert_eq!(chain_hash(i, GENESIS_HASH, &back), hash, "event {i}");
        // And the text is the canonical form of the value it parses to.
        assert_eq!(
            canonical_detail(&ev.detail.to_value()),
            ev.detail.as_str(),
            "event {i}"
        );
    }
}

#[test]
fn canonical_detail_sorts_keys_and_escapes_minimally() {
    let d = json!({"b": "x\"y\\z\n", "a": [true, {"d": 1, "c": 2}]});
    assert_eq!(
        canonical_detail(&d),
        r#"{"a":[true,{"c":2,"d":1}],"b":"x\"y\\z\n"}"#
    );
}

/// The escaping that copies unescaped runs at once gives, for every ASCII byte in every
/// position and for multi-byte characters, what escaping byte by byte gives.
#[test]
fn string_escapes_match_the_byte_by_byte_rule() {
    fn reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
    let mut cases: Vec<String> = vec![String::new(), "é\"ü\\日本\u{1f}語".into()];
    for b in 0u8..128 {
        let c = char::from(b);
        cases.push(c.to_string());
        cases.push(format!("ab{c}"));
        cases.push(format!("{c}cd"));
        cases.push(format!("x{c}{c}y é"));
    }
    for s in cases {
        let mut out = Vec::new();
        write_json_string(&mut out, &s);
        assert_eq!(String::from_utf8(out).unwrap(), reference(&s), "{s:?}");
    }
}

/// A detail whose maps are already in key order and one built in another order encode alike.
#[test]
fn sorted_and_unsorted_maps_encode_alike() {
    let mut sorted = serde_json::Map::new();
    let mut unsorted = serde_json::Map::new();
    for k in ["a", "b", "c", "d"] {
        sorted.insert(k.to_owned(), json!({"x": 1, "y": [k]}));
    }
    for k in ["c", "a", "d", "b"] {
        unsorted.insert(k.to_owned(), json!({"y": [k], "x": 1}));
    }
    assert_eq!(
        canonical_detail(&Value::Object(sorted)),
        canonical_detail(&Value::Object(unsorted))
    );
    assert_eq!(
        canonical_detail(&json!({"b": -7, "a": 1.25, "c": 18446744073709551615u64})),
        r#"{"a":1.25,"b":-7,"c":18446744073709551615}"#
    );
}

/// Tampering with one field of an event's detail, as someone editing the stored row would.
fn set_detail(ev: &mut AuditEvent, key: &str, value: serde_json::Value) {
    let mut detail = ev.detail.to_value();
    detail[key] = value;
    ev.detail = detail.into();
}

/// The word-at-a-time scan finds exactly the first byte the byte-at-a-time rule would.
#[test]
fn the_escape_scan_finds_the_first_byte_to_escape_wherever_it_is() {
    let naive = |bytes: &[u8]| {
        bytes
            .iter()
            .position(|&b| must_escape(b))
            .unwrap_or(bytes.len())
    };
    // Every byte value at every position of strings up to 19 bytes long, over a background of
    // bytes just above, below and far from the ones that need escaping.
    for background in [b'a', 0x21, 0x7f, 0x80, 0xff, b'#', b'[', b']'] {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![background; len];
                    bytes[at] = b;
                    assert_eq!(first_to_escape(&bytes), naive(&bytes), "{bytes:?}");
                    // A second one later never hides the first.
                    if at + 3 < len {
                        bytes[at + 3] = b'"';
                        assert_eq!(first_to_escape(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }
}
