//! Pure checks of untrusted HTTP input that decide whether a request may go on at all: the
//! request path (`path`) and the return address of a sign-in (`redirect`).
//!
//! Architecture invariant: no IO, no HTTP library, no allocation-heavy parsing — functions of
//! strings that return a verdict. That keeps them cheap to fuzz (`fuzz/`) and lets the gateway,
//! the future connector and tests share one definition of "safe".

pub mod path;
pub mod redirect;
