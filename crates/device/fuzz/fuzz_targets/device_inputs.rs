//! What devices send: posture reports (to every gateway) and enrolment requests (to the control
//! plane, unauthenticated). Whatever the bytes, parsing and checking return an error or a
//! value, never panic. A fixed public key makes most reports stop at the signature; the
//! enrolment check runs its proof verification on whatever key the input names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsuzuku_device::{EnrollRequest, SignedPosture, verify_posture};

/// An uncompressed P-256 point (the generator).
const KEY: [u8; 65] = [
    4, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98,
    0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c,
    0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68,
    0x37, 0xbf, 0x51, 0xf5,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedPosture::from_json(data) {
        let _ = verify_posture(&signed, "dev-1", &KEY, 1_800_000_000, 300);
        let _ = verify_posture(&signed, "dev-1", data, 1_800_000_000, 300);
    }
    if let Ok(req) = serde_json::from_slice::<EnrollRequest>(data) {
        let _ = req.check();
    }
    let _ = tsuzuku_device::collect::parse_version(&String::from_utf8_lossy(data));
    let _ = tsuzuku_device::collect::root_device(&String::from_utf8_lossy(data));
    let _ = tsuzuku_device::collect::os_release_field(&String::from_utf8_lossy(data), "ID");
});
