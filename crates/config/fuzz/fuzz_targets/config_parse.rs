//! Any text as `tsuzuku.toml`: loading never panics; it yields a valid configuration or an
//! error that names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tsuzuku_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Config::parse(s, Path::new("fuzz.toml")) {
        Ok(c) => assert!(c.validate(Path::new("fuzz.toml")).is_ok()),
        Err(e) => assert!(e.to_string().contains("fuzz.toml")),
    }
});
