#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trusting(k: &SigningKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(k.verifying_key()).unwrap();
    t
}

#[test]
fn patterns_parse_and_normalise() {
    let cases: &[(&str, &str)] = &[
        ("Example.COM.", "example.com"),
        ("*.example.com", "*.example.com"),
        ("  *.Sub.Example.com ", "*.sub.example.com"),
        ("192.0.2.7", "192.0.2.7"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("2001:db8::1", "[2001:db8::1]"),
        ("localhost", "localhost"),
        ("192.0.2.7.", "192.0.2.7"),
        ("1.example.com", "1.example.com"),
    ];
    for (text, shown) in cases {
        assert_eq!(Pattern::parse(text).unwrap().to_string(), *shown, "{text}");
    }
}

#[test]
fn bad_patterns_are_refused_with_the_reason() {
    for (text, problem) in [
        ("", "it is empty"),
        ("*", "whole first label"),
        ("*.com", "two labels"),
        ("a.*.example.com", "whole first label"),
        ("**.example.com", "whole first label"),
        ("exa mple.com", "only letters"),
        ("-bad.example.com", "hyphen"),
        ("a..b", "empty label"),
        ("[example.com]", "IPv6"),
        ("http://example.com", "only letters"),
        // Browsers read these as IPv4 addresses, so a name pattern would never match them.
        ("1.2.3", "IPv4"),
        ("example.123", "IPv4"),
        ("*.example.0", "IPv4"),
    ] {
        let e = Pattern::parse(text).unwrap_err();
        assert!(e.to_string().contains(problem), "{text}: {e}");
        assert_eq!(e.pattern, text);
    }
}

#[test]
fn matching() {
    let set = HostSet::parse(&["example.com", "*.cdn.example.net", "192.0.2.7", "[::1]"]).unwrap();
    let yes = [
        "example.com",
        "EXAMPLE.com.",
        "a.cdn.example.net",
        "x.y.cdn.example.net",
        "192.0.2.7",
        "[::1]",
        "::1",
        "192.0.2.7.",
    ];
    let no = [
        "www.example.com",
        "cdn.example.net",
        "acdn.example.net",
        "example.com.evil.test",
        "192.0.2.70",
        "127.0.0.1",
        "",
    ];
    for h in yes {
        assert!(set.matches(h), "{h} should match");
    }
    for h in no {
        assert!(!set.matches(h), "{h} should not match");
    }
    // A name that looks like an address pattern's text is not an address.
    assert!(
        !HostSet::parse(&["192.0.2.7"])
            .unwrap()
            .matches("192.0.2.7.example.com")
    );
}

#[test]
fn a_signed_list_round_trips_and_keeps_its_patterns() {
    let k = key(7);
    let text = sign_list(
        1_767_225_600,
        &["*.example.com", "Login.Example.org", "192.0.2.7"],
        &k,
    )
    .unwrap();
    assert!(text.starts_with("TSZAL1\nt=1767225600\nk="), "{text}");
    let list = verify_list(text.as_bytes(), &trusting(&k)).unwrap();
    assert_eq!(list.issued_at, 1_767_225_600);
    assert_eq!(list.key_id, key_id(&k.verifying_key()));
    let shown: Vec<String> = list
        .hosts
        .patterns()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["*.example.com", "login.example.org", "192.0.2.7"]);
    // Without the final line break it verifies too.
    assert!(verify_list(text.trim_end().as_bytes(), &trusting(&k)).is_ok());
}

#[test]
fn comments_and_empty_lines_are_signed_content() {
    let k = key(3);
    let body = format!(
        "TSZAL1\n# customer list\nt=5\n\nk={}\nexample.com\n",
        key_id(&k.verifying_key())
    );
    let sig = B64.encode(k.sign(body.as_bytes()).to_bytes());
    let text = format!("{body}sig={sig}\n");
    let list = verify_list(text.as_bytes(), &trusting(&k)).unwrap();
    assert_eq!(list.hosts.len(), 1);
    // Changing a comment breaks the signature.
    let altered = text.replace("customer", "kustomer");
    assert!(matches!(
        verify_list(altered.as_bytes(), &trusting(&k)),
        Err(ListError::BadSignature { .. })
    ));
}

#[test]
fn bad_lists_are_refused() {
    let k = key(1);
    let trusted = trusting(&k);
    let good = sign_list(100, &["example.com"], &k).unwrap();

    // Added pattern: the signature no longer matches.
    let added = good.replacen("example.com\n", "example.com\nevil.test\n", 1);
    assert!(matches!(
        verify_list(added.as_bytes(), &trusted),
        Err(ListError::BadSignature { .. })
    ));
    // Signed with a key that is not trusted.
    let other = sign_list(100, &["example.com"], &key(2)).unwrap();
    let e = verify_list(other.as_bytes(), &trusted).unwrap_err();
    assert!(matches!(e, ListError::UnknownKey { .. }), "{e}");
    // Unsigned.
    let unsigned: String = good
        .lines()
        .filter(|l| !l.starts_with("sig="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        verify_list(unsigned.as_bytes(), &trusted),
        Err(ListError::Unsigned)
    );
    // Not our format.
    assert_eq!(
        verify_list(good.replacen("TSZAL1", "TSZAL2", 1).as_bytes(), &trusted),
        Err(ListError::Version)
    );
    // Huge.
    let huge = vec![b'a'; MAX_LIST_BYTES + 1];
    assert!(matches!(
        verify_list(&huge, &trusted),
        Err(ListError::TooLarge { .. })
    ));
    // Not text.
    assert_eq!(
        verify_list(b"TSZAL1\n\xff\nsig=x\n", &trusted),
        Err(ListError::NotText)
    );
    // An invalid pattern, even correctly signed, refuses the whole list and names its line.
    let body = format!(
        "TSZAL1\nt=1\nk={}\nok.example.com\nbad_host!\n",
        key_id(&k.verifying_key())
    );
    let text = format!(
        "{body}sig={}\n",
        B64.encode(k.sign(body.as_bytes()).to_bytes())
    );
    let e = verify_list(text.as_bytes(), &trusted).unwrap_err();
    assert!(e.to_string().contains("line 5"), "{e}");
    // CRLF line ends.
    let crlf = good.replace('\n', "\r\n");
    assert!(verify_list(crlf.as_bytes(), &trusted).is_err());
    // Times and key ids in the wrong form.
    for (from, to) in [("t=100", "t=0100"), ("t=100", "t=-1"), ("t=100", "t=")] {
        let e = verify_list(good.replacen(from, to, 1).as_bytes(), &trusted).unwrap_err();
        assert!(e.to_string().contains("unix seconds"), "{to}: {e}");
    }
    let e = verify_list(good.replacen("k=", "k=zz", 1).as_bytes(), &trusted).unwrap_err();
    assert!(e.to_string().contains("k="), "{e}");
    // A bad signature encoding.
    let i = good.find("sig=").unwrap();
    let bad_sig = format!("{}sig=AAAA\n", &good[..i]);
    let e = verify_list(bad_sig.as_bytes(), &trusted).unwrap_err();
    assert!(e.to_string().contains("64 bytes"), "{e}");
}

#[test]
fn too_many_patterns_are_refused() {
    let k = key(9);
    let many: Vec<String> = (0..=MAX_PATTERNS)
        .map(|i| format!("h{i}.example.com"))
        .collect();
    assert_eq!(sign_list(1, &many, &k), Err(ListError::TooManyPatterns));
    // Built by hand (signed correctly), still refused.
    let mut body = format!("TSZAL1\nt=1\nk={}\n", key_id(&k.verifying_key()));
    for p in &many {
        body.push_str(p);
        body.push('\n');
    }
    let text = format!(
        "{body}sig={}\n",
        B64.encode(k.sign(body.as_bytes()).to_bytes())
    );
    assert_eq!(
        verify_list(text.as_bytes(), &trusting(&k)),
        Err(ListError::TooManyPatterns)
    );
}

#[test]
fn an_older_list_is_a_replay() {
    let k = key(4);
    let old = sign_list(100, &["a.example.com"], &k).unwrap();
    let e = verify_newer(old.as_bytes(), &trusting(&k), Some(200)).unwrap_err();
    assert_eq!(
        e,
        ListError::Replayed {
            issued_at: 100,
            held: 200
        }
    );
    assert!(verify_newer(old.as_bytes(), &trusting(&k), Some(100)).is_ok());
    assert!(verify_newer(old.as_bytes(), &trusting(&k), None).is_ok());
}
