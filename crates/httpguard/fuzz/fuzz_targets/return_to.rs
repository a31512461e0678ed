//! Any string as a sign-in return address: never panics, and an accepted address always names
//! exactly a known host and a path that starts with a single '/'.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsuzuku_httpguard::redirect::parse_return_to;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let known = |h: &str| h == "app.example.com" || h == "auth.example.com:8443";
    if let Ok(r) = parse_return_to(s, known) {
        assert!(known(&r.host));
        assert!(r.path.starts_with('/') && !r.path.starts_with("//"));
        assert_eq!(r.url(), if s.len() == "https://".len() + r.host.len() { format!("{s}/") } else { s.to_owned() });
    }
});
