//! Any text: `Keyring::open` never panics, and no text other than the value sealed for a field
//! opens to plaintext under that field. The input is tried as given and, to get past the format
//! checks more often, as the data part of a value carrying the keyring's data key id.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tsuzuku_keyring::{Keyring, MasterKey};

const FIELD: &str = "users.totp_secret:t1:u1";

fn keyring() -> &'static (Keyring, String) {
    static KR: OnceLock<(Keyring, String)> = OnceLock::new();
    KR.get_or_init(|| {
        let mut kr = Keyring::new(MasterKey::from_bytes([7; 32]), Vec::new()).unwrap();
        kr.generate_data_key(0).unwrap();
        let sealed = kr.seal(FIELD, b"JBSWY3DPEHPK3PXP").unwrap();
        (kr, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (kr, sealed) = keyring();
    let key_id = kr.active_key_id().unwrap();
    for candidate in [s.to_owned(), format!("tz1:{key_id}:{s}")] {
        let _ = Keyring::is_sealed(&candidate);
        if let Ok(plain) = kr.open(FIELD, &candidate) {
            assert_eq!(&candidate, sealed, "a forged value opened");
            assert_eq!(&plain[..], b"JBSWY3DPEHPK3PXP");
        }
        assert!(kr.open("another:field", &candidate).is_err());
    }
});
