#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

#[test]
fn plain_paths_pass_unchanged() {
    for ok in [
        "/",
        "/index.html",
        "/a/b/c/",
        "/search",
        "/caf%C3%A9",
        "/a%20b",
        "/a;jsessionid=1",
        "/file.tar.gz",
        "/.well-known/x",
        "/a/...",
    ] {
        assert_eq!(check_path(ok), Ok(()), "{ok}");
    }
}

#[test]
fn ambiguous_encodings_are_refused() {
    let cases: &[(&str, PathError)] = &[
        ("/%2e%2e/admin", PathError::EncodedDelimiter('.')),
        ("/%2E%2E/admin", PathError::EncodedDelimiter('.')),
        ("/a%2fb", PathError::EncodedDelimiter('/')),
        ("/a%2Fb", PathError::EncodedDelimiter('/')),
        ("/a%5cb", PathError::EncodedDelimiter('\\')),
        ("/a\\b", PathError::Backslash),
        ("/a%00b", PathError::Control),
        ("/a%0d%0aX: y", PathError::Control),
        ("/a%252e%252e/", PathError::EncodedDelimiter('%')),
        ("/a%3bb", PathError::EncodedDelimiter(';')),
        ("/%c0%ae%c0%ae/etc", PathError::NotUtf8),
        ("/%e0%80%ae", PathError::NotUtf8),
        ("/%ff", PathError::NotUtf8),
        ("/%zz", PathError::BadPercent(1)),
        ("/abc%4", PathError::BadPercent(4)),
        ("/../etc/passwd", PathError::DotSegment),
        ("/a/./b", PathError::DotSegment),
        ("/a/..", PathError::DotSegment),
        ("/a/.", PathError::DotSegment),
        ("/public/..;/admin", PathError::DotSegment),
        ("//admin", PathError::EmptySegment),
        ("/a//b", PathError::EmptySegment),
        ("admin", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
    ];
    for (path, want) in cases {
        assert_eq!(check_path(path), Err(want.clone()), "{path}");
    }
}

#[test]
fn overlong_paths_are_refused() {
    let long = format!("/{}", "a".repeat(MAX_PATH));
    assert_eq!(check_path(&long), Err(PathError::TooLong(MAX_PATH)));
}

#[test]
fn error_messages_say_what_was_wrong() {
    assert_eq!(
        check_path("/%2e%2e/").unwrap_err().to_string(),
        "the path encodes '.' with percent-encoding, which is ambiguous"
    );
}
