#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};

use super::*;

/// Every character class the escapes treat differently.
const AWKWARD: &str = "q\"b\\s/n\nr\rt\tbs\u{8}ff\u{c}nul\u{0}us\u{1f}del\u{7f}é日本\u{1F600}";

#[derive(Serialize)]
struct Inner<'a> {
    a: i64,
    list: Vec<&'a str>,
    z: Option<bool>,
}

/// Fields in key order: written directly.
#[derive(Serialize)]
struct Sorted<'a> {
    allowed: bool,
    #[serde(rename = "context")]
    inner: Inner<'a>,
    count: u64,
    empty: Vec<i32>,
    neg: i64,
    none: Option<&'a str>,
    text: &'a str,
    zz: Inner<'a>,
}

/// The same fields out of order: re-encoded.
#[derive(Serialize)]
struct Unsorted<'a> {
    text: &'a str,
    allowed: bool,
}

fn sorted() -> Sorted<'static> {
    Sorted {
        allowed: true,
        inner: Inner {
            a: -5,
            list: vec![AWKWARD, ""],
            z: None,
        },
        count: u64::MAX,
        empty: vec![],
        neg: i64::MIN,
        none: None,
        text: AWKWARD,
        zz: Inner {
            a: 0,
            list: vec!["x"],
            z: Some(false),
        },
    }
}

#[test]
fn a_typed_value_in_key_order_is_written_as_its_canonical_text() {
    let typed = sorted();
    let direct = Detail::from_serialize(&typed).unwrap();
    let through_value = Detail::from_value(&serde_json::to_value(&typed).unwrap());
    assert_eq!(direct.as_str(), through_value.as_str());
    // Written in one pass, not re-encoded.
    assert!(Detail::writes_directly(&typed));
    // The chain's escapes, not serde_json's short ones.
    assert!(
        direct
            .as_str()
            .contains(r#"bs\u0008ff\u000cnul\u0000us\u001f"#),
        "{direct}"
    );
    assert!(direct.as_str().contains(r#"q\"b\\s/n\nr\rt\t"#), "{direct}");
}

#[test]
fn keys_out_of_order_still_give_the_canonical_text() {
    let typed = Unsorted {
        text: AWKWARD,
        allowed: false,
    };
    assert!(!Detail::writes_directly(&typed));
    let direct = Detail::from_serialize(&typed).unwrap();
    assert_eq!(
        direct,
        Detail::from_value(&json!({"allowed": false, "text": AWKWARD}))
    );
    assert!(direct.as_str().starts_with(r#"{"allowed":false,"text":"#));
}

#[test]
fn an_inner_object_does_not_reset_the_order_check_of_the_outer_one() {
    #[derive(Serialize)]
    struct Outer {
        b: Inner2,
        a: i32,
    }
    #[derive(Serialize)]
    struct Inner2 {
        y: i32,
        z: i32,
    }
    let outer = Outer {
        b: Inner2 { y: 1, z: 2 },
        a: 3,
    };
    assert!(!Detail::writes_directly(&outer));
    let direct = Detail::from_serialize(&outer).unwrap();
    assert_eq!(direct.as_str(), r#"{"a":3,"b":{"y":1,"z":2}}"#);
}

#[test]
fn maps_in_any_order_and_non_string_keys_give_the_canonical_text() {
    let mut map = HashMap::new();
    for k in ["delta", "alpha", "charlie", "bravo", "echo"] {
        map.insert(k, k.len());
    }
    let direct = Detail::from_serialize(&map).unwrap();
    assert_eq!(
        direct.as_str(),
        r#"{"alpha":5,"bravo":5,"charlie":7,"delta":5,"echo":4}"#
    );
    let numbered: HashMap<i32, bool> = [(10, true), (9, false)].into_iter().collect();
    assert_eq!(
        Detail::from_serialize(&numbered).unwrap().as_str(),
        r#"{"10":true,"9":false}"#
    );
}

#[test]
fn a_prefix_sorts_before_the_longer_key_and_repeated_keys_are_not_in_order() {
    #[derive(Serialize)]
    struct Prefix {
        ab: i32,
        abc: i32,
    }
    assert!(Detail::writes_directly(&Prefix { ab: 1, abc: 2 }));
    assert_eq!(
        Detail::from_serialize(&Prefix { ab: 1, abc: 2 })
            .unwrap()
            .as_str(),
        r#"{"ab":1,"abc":2}"#
    );
    #[derive(Serialize)]
    struct Twice {
        a: i32,
        #[serde(rename = "a")]
        again: i32,
    }
    // serde_json keeps the last of two equal keys when it parses; the check must not let
    // the duplicate through as if it were canonical.
    assert!(!Detail::writes_directly(&Twice { a: 1, again: 2 }));
    assert_eq!(
        Detail::from_serialize(&Twice { a: 1, again: 2 })
            .unwrap()
            .as_str(),
        r#"{"a":2}"#
    );
}

#[test]
fn stored_json_in_any_layout_reads_back_canonical() {
    let stored = "{ \"b\" : [1, 2],\n \"a\": \"\\b\\u0041\" }";
    let detail = Detail::from_json(stored).unwrap();
    assert_eq!(detail.as_str(), r#"{"a":"\u0008A","b":[1,2]}"#);
    assert!(Detail::from_json("{not json").is_err());
}

#[test]
fn serialises_as_the_json_value_and_deserialises_from_any_layout() {
    let detail = Detail::from_value(&json!({"z": 1, "a": [true, null, AWKWARD]}));
    let wrapped = serde_json::to_string(&json!({"d": 1})).unwrap();
    assert_eq!(wrapped, r#"{"d":1}"#);
    #[derive(Serialize, serde::Deserialize)]
    struct Holder {
        detail: Detail,
    }
    let text = serde_json::to_string(&Holder {
        detail: detail.clone(),
    })
    .unwrap();
    assert_eq!(text, format!(r#"{{"detail":{}}}"#, detail.as_str()));
    let back: Holder = serde_json::from_str("{\"detail\": {\"z\": 1,  \"a\": [true, null, \"q\\\"b\\\\s/n\\nr\\rt\\tbs\\bff\\fnul\\u0000us\\u001fdel\u{7f}é日本\u{1F600}\"]}}").unwrap();
    assert_eq!(back.detail, detail);
    assert_eq!(detail.to_value()["z"], json!(1));
}

/// Random JSON values from a seeded generator, so a failure can be replayed.
struct Rng(StdRng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.r#gen::<u64>()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.gen_range(0..n)
    }
    fn text(&mut self) -> String {
        const PARTS: [&str; 12] = [
            "a", "b", "ab", "\"", "\\", "\n", "\u{8}", "\u{c}", "\u{1}", "é", "/", "Z",
        ];
        (0..self.below(4))
            .map(|_| PARTS[self.below(PARTS.len() as u64) as usize])
            .collect()
    }
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 0),
            2 => match self.below(3) {
                0 => json!(self.next() as i64),
                1 => json!((self.next() % 100_000) as f64 / 7.0),
                _ => json!(self.below(10) as f64),
            },
            3 => json!(self.below(1000)),
            4 => Value::String(self.text()),
            5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                // Insertion order is random: some maps come out sorted, most do not.
                let mut map = serde_json::Map::new();
                for _ in 0..self.below(5) {
                    map.insert(self.text(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

#[test]
fn any_json_value_serialised_directly_gives_its_canonical_text() {
    let mut rng = Rng(StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15));
    for _ in 0..5000 {
        let value = rng.value(0);
        let direct = Detail::from_serialize(&value).unwrap();
        assert_eq!(direct, Detail::from_value(&value), "{value}");
        // Canonical text is a fixed point.
        assert_eq!(Detail::from_json(direct.as_str()).unwrap(), direct);
    }
}

#[test]
fn every_shape_serde_knows_gives_the_canonical_text() {
    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(i32),
        Tuple(u8, char),
        Struct { a: Option<u16>, b: bool },
    }
    #[derive(Serialize)]
    struct Tuple(i8, &'static str);
    #[derive(Serialize)]
    struct Everything {
        bytes: serde_bytes_like::Bytes,
        chars: (char, char),
        float: f64,
        floats: [f32; 2],
        shapes: Vec<Shape>,
        tuple: Tuple,
        unit: (),
        wrapped: Wrapped,
    }
    #[derive(Serialize)]
    struct Wrapped(u128);
    mod serde_bytes_like {
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    let value = Everything {
        bytes: serde_bytes_like::Bytes(vec![0, 7, 255]),
        chars: ('"', 'é'),
        float: 1.0,
        floats: [0.1, -2.5],
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(-3),
            Shape::Tuple(9, '\n'),
            Shape::Struct {
                a: Some(4),
                b: true,
            },
        ],
        tuple: Tuple(-1, AWKWARD),
        unit: (),
        wrapped: Wrapped(u128::from(u64::MAX)),
    };
    // Floats are left to the re-encoding (their canonical form is serde_json's).
    assert!(!Detail::writes_directly(&value));
    let direct = Detail::from_serialize(&value).unwrap();
    assert_eq!(
        direct,
        Detail::from_value(&serde_json::to_value(&value).unwrap())
    );
    assert!(direct.as_str().contains(r#""float":1.0,"#), "{direct}");
    // Without the floats, every other shape is written directly.
    let floatless = (
        value.bytes,
        value.chars,
        value.shapes,
        value.tuple,
        value.unit,
        value.wrapped,
    );
    assert!(Detail::writes_directly(&floatless));
    assert_eq!(
        Detail::from_serialize(&floatless).unwrap(),
        Detail::from_value(&serde_json::to_value(&floatless).unwrap())
    );
}

#[test]
fn a_map_key_that_is_not_text_or_a_number_is_an_error() {
    let map: std::collections::BTreeMap<(i32, i32), i32> = [((1, 2), 3)].into_iter().collect();
    assert!(Detail::from_serialize(&map).is_err());
}

/// Review finding: a detail stored as `{"app":"FORGED",…,"app":"app3"}` parsed to the last
/// value (serde) and verified, while SQLite's `json_extract` read the first. Only the texts
/// Tsuzuku writes read back as exact.
#[test]
fn only_the_text_tsuzuku_writes_reads_back_as_exact() {
    let value = json!({"allowed": true, "app": "app3", "path": AWKWARD, "n": 1.5});
    let canonical = Detail::from_value(&value);
    let (back, exact) = Detail::from_stored(canonical.as_str()).unwrap();
    assert!(exact);
    assert_eq!(back, canonical);
    // serde_json's own layout (rows stored before details were canonical text): `\b` and `\f`
    // escapes instead of `\u0008` and `\u000c`.
    let serde_layout = serde_json::to_string(&value).unwrap();
    assert_ne!(serde_layout, canonical.as_str());
    let (back, exact) = Detail::from_stored(&serde_layout).unwrap();
    assert!(exact, "{serde_layout}");
    assert_eq!(back, canonical);

    let tail = canonical.as_str().strip_prefix('{').unwrap();
    for forged in [
        format!(r#"{{"app":"FORGED",{tail}"#),
        format!(r#"{{"allowed":true,"app":"FORGED",{}"#, &tail[15..]),
        canonical.as_str().replace(',', ", "),
        canonical.as_str().replace("app3", "\\u0061pp3"),
        canonical.as_str().replace("1.5", "15e-1"),
    ] {
        let (back, exact) = Detail::from_stored(&forged).unwrap();
        assert!(!exact, "{forged}");
        // It still parses, to the value serde keeps.
        assert_eq!(back.to_value()["allowed"], true, "{forged}");
    }
    assert!(Detail::from_stored("{\"app\":").is_err());
}
