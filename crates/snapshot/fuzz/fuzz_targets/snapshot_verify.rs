//! Snapshots arrive from the network and from disk: whatever the bytes, verification returns an
//! error or a document, never panics. A fixed trusted key makes most inputs stop at the key or
//! signature check; the structured prefix steers some inputs through the envelope parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsuzuku_snapshot::{TrustedKeys, verify, verify_sites};

const TRUSTED: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

fuzz_target!(|data: &[u8]| {
    let Ok(trusted) = TrustedKeys::from_pem(TRUSTED) else {
        return;
    };
    let _ = verify(data, &trusted, "default", Some(1));
    let _ = verify_sites(data, &trusted, "default", None);
    let _ = TrustedKeys::from_pem(&String::from_utf8_lossy(data));
});
