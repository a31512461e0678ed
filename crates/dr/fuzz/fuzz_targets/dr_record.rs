//! Any bytes as a DR record's TXT strings (split at NUL bytes) and a time: parsing and checking
//! never panic; whatever parses signs and parses back to the same fields; whatever is accepted
//! is valid at that time; a lookup's outcome never makes memory follow an unverified record.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use tsuzuku_dr::TrustedKeys;
use tsuzuku_dr::check::{Member, check};
use tsuzuku_dr::memory::{Memory, Observation};
use tsuzuku_dr::record::{join_strings, parse, sign};

fuzz_target!(|data: &[u8]| {
    let (now, rest) = match data.split_first_chunk::<8>() {
        Some((t, rest)) => (i64::from_le_bytes(*t) % 300_000_000_000, rest),
        None => (1_767_225_600, data),
    };
    let strings: Vec<Vec<u8>> = rest.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.insert(key.verifying_key()).unwrap();
    let member = Member {
        groups: vec!["g1".into()],
        device_id: Some("d1".into()),
    };

    if let Ok(value) = join_strings(&strings)
        && let Ok(rec) = parse(&value)
    {
        let resigned = sign(&rec.fields, &key).unwrap();
        assert_eq!(parse(&resigned).unwrap().fields, rec.fields);
    }

    if let Ok(c) = check(&strings, &trusted, now, None, &member) {
        let f = c.record.as_ref().unwrap().fields();
        assert!(f.not_before <= now && now < f.not_after);
        if let Some(dr) = c.dr {
            assert_eq!(dr.until, f.not_after);
        }
    }

    let mut memory = Memory::default();
    let records = [strings];
    let step = memory.observe(Observation::Records(&records), &trusted, now, &member);
    if step.conclusion.dr_active() {
        assert!(memory.record.is_some());
    }
});
