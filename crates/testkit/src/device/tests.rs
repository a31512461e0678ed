#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::Antivirus;

/// The `comm` of the process `pid`, if it runs.
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

fn version(av: &Antivirus) -> String {
    let out = std::process::Command::new(av.version_cmd())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn runs_under_its_name_prints_the_version_it_is_given_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut av = Antivirus::start(dir.path(), "2.9.1").unwrap();
    let other = Antivirus::start(dir.path(), "1.0").unwrap();
    assert_ne!(av.name(), other.name());
    assert!(av.name().len() <= 15, "{}", av.name());
    let pid = av.child.id();
    assert_eq!(comm(pid).as_deref(), Some(av.name()));
    assert_eq!(version(&av), "TzkAV 2.9.1\n");
    assert_eq!(version(&other), "TzkAV 1.0\n");
    av.set_version("3.1.0").unwrap();
    assert_eq!(version(&av), "TzkAV 3.1.0\n");
    av.stop().unwrap();
    assert_eq!(comm(pid), None, "still running after stop");
    let other_pid = other.child.id();
    drop(other);
    assert_eq!(comm(other_pid), None, "still running after drop");
}
