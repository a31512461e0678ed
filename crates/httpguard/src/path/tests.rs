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
        ("/%C0%AE%C0%AE/etc", PathError::NotUtf8),
        ("/%E0%80%AE", PathError::NotUtf8),
        ("/%FF", PathError::NotUtf8),
        ("/%zz", PathError::BadPercent(1)),
        ("/abc%4", PathError::BadPercent(4)),
        ("/../etc/passwd", PathError::DotSegment),
        ("/a/./b", PathError::DotSegment),
        ("/a/..", PathError::DotSegment),
        ("/a/.", PathError::DotSegment),
        ("/public/..;/admin", PathError::Parameter),
        ("//admin", PathError::EmptySegment),
        ("/a//b", PathError::EmptySegment),
        ("admin", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
    ];
    for (path, want) in cases {
        assert_eq!(check_path(path), Err(want.clone()), "{path}");
    }
}

/// An upstream that decodes the path (WSGI, PHP, most frameworks) would route each of these
/// to the same place as the plainly written path, which a policy may forbid.
#[test]
fn a_second_spelling_of_a_path_is_refused() {
    let cases: &[(&str, PathError)] = &[
        ("/%61dmin/secret", PathError::NeedlessPercent('a')),
        ("/%41dmin", PathError::NeedlessPercent('A')),
        ("/admin%2Dpanel", PathError::NeedlessPercent('-')),
        ("/a%5Fb", PathError::NeedlessPercent('_')),
        ("/%6Ddmin", PathError::NeedlessPercent('m')),
        ("/%6ddmin", PathError::NeedlessPercent('m')),
        ("/v%31/x", PathError::NeedlessPercent('1')),
        ("/caf\u{e9}", PathError::RawNonAscii(4)),
        ("/%c0%ae%c0%ae/etc", PathError::NotUtf8),
        ("/admin;x/secret", PathError::Parameter),
        ("/a;jsessionid=1", PathError::Parameter),
    ];
    for (path, want) in cases {
        assert_eq!(check_path(path), Err(want.clone()), "{path}");
    }
    // Characters that cannot stand in a path as themselves stay encoded, in upper case; so do
    // reserved characters, which encoded are not the character (RFC 3986) and which
    // encodeURIComponent writes so.
    for ok in [
        "/a%20b",
        "/a%3Fb",
        "/a%23b",
        "/a%22b",
        "/a%7Cb",
        "/caf%C3%A9",
        "/users/a%40b.example",
        "/a%3Ab",
        "/a%2Bb",
        "/q%3Dx%26y",
        // Apache and .NET write hex in lower case, Java's URLEncoder writes `~` encoded.
        "/caf%c3%a9",
        "/a%3fb",
        "/%7Euser",
    ] {
        assert_eq!(check_path(ok), Ok(()), "{ok}");
    }
}

#[test]
fn path_parameters_pass_only_when_allowed() {
    let rules = PathRules { parameters: true };
    assert_eq!(check_path_with("/a;jsessionid=1", rules), Ok(()));
    assert_eq!(check_path_with("/app/page;v=2/x", rules), Ok(()));
    // Tomcat's `..;` is a dot segment whatever the rules.
    assert_eq!(
        check_path_with("/public/..;/admin", rules),
        Err(PathError::DotSegment)
    );
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
