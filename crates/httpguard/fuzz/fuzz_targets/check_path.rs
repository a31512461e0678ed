//! Any byte string: `check_path` never panics, and what it accepts has none of the forms it
//! promises to refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsuzuku_httpguard::path::check_path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if check_path(s).is_ok() {
        let lower = s.to_ascii_lowercase();
        assert!(s.starts_with('/'));
        assert!(!s.contains('\\'));
        assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
        assert!(!lower.contains("%00") && !lower.contains("%25"));
        assert!(!s.contains("/../") && !s.contains("/./") && !s.contains("//"));
        assert!(!s.ends_with("/..") && !s.ends_with("/."));
        // No encoded letter, digit, '-' or '_' (a plain prefix has one spelling), ASCII, no `;`.
        assert!(s.is_ascii() && !s.contains(';'));
        for (i, _) in s.match_indices('%') {
            let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            assert!(!(v.is_ascii_alphanumeric() || v == b'-' || v == b'_'));
        }
    }
});
