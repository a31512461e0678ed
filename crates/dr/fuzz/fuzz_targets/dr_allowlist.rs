//! Any bytes as a signed internet allowlist (`TSZAL1`) and as host patterns: verifying and
//! parsing never panic; a list that verifies signs and verifies back to the same hosts; a
//! pattern that parses matches the host it names.
//!
//! Random bytes almost never carry a valid signature, so the input is also signed with the
//! trusted key — as it is, and behind a valid head (`TSZAL1`, `t=`, `k=`) — to drive the parser
//! past the signature check.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use libfuzzer_sys::fuzz_target;
use tsuzuku_dr::TrustedKeys;
use tsuzuku_dr::allowlist::{HostSet, Pattern, sign_list, verify_list};
use tsuzuku_dr::keys::key_id;

fn signed(body: &[u8], key: &SigningKey) -> Vec<u8> {
    let mut out = body.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let sig = key.sign(&out);
    out.extend_from_slice(b"sig=");
    out.extend_from_slice(B64.encode(sig.to_bytes()).as_bytes());
    out.push(b'\n');
    out
}

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.insert(key.verifying_key()).unwrap();

    let _ = verify_list(data, &trusted);
    let head = format!("TSZAL1\nt=1767225600\nk={}\n", key_id(&key.verifying_key()));
    let mut behind_head = head.into_bytes();
    behind_head.extend_from_slice(data);
    for candidate in [signed(data, &key), signed(&behind_head, &key)] {
        if let Ok(list) = verify_list(&candidate, &trusted) {
            let texts: Vec<String> = list
                .hosts
                .patterns()
                .iter()
                .map(ToString::to_string)
                .collect();
            let again = sign_list(list.issued_at, &texts, &key).unwrap();
            let back = verify_list(again.as_bytes(), &trusted).unwrap();
            assert_eq!(back.hosts, list.hosts);
            assert_eq!(back.issued_at, list.issued_at);
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(64) {
            if let Ok(p) = Pattern::parse(line) {
                let set = HostSet::parse(&[p.to_string()]).unwrap();
                if let Pattern::Exact(name) = &p {
                    assert!(set.matches(name), "{line:?} does not match itself");
                }
            }
            let _ = HostSet::default().matches(line);
        }
    }
});
