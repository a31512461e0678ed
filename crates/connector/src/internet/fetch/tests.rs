#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

const ID: &str = "AKIAEXAMPLEID1234567";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";

fn creds() -> S3Credentials {
    S3Credentials::new(ID, SECRET, None, "the test")
}

fn object(location: &str, endpoint: &str) -> Result<S3Object, SourceError> {
    S3Object::new(location, endpoint, "eu-west-1", creds())
}

#[test]
fn s3_locations_parse_and_build_urls() {
    let o = object("s3://dr-lists/allow/list v1.txt", "http://127.0.0.1:9000").unwrap();
    assert_eq!(o.bucket(), "dr-lists");
    assert_eq!(o.key(), "allow/list v1.txt");
    assert_eq!(
        o.url(),
        "http://127.0.0.1:9000/dr-lists/allow/list%20v1.txt"
    );
    assert_eq!(
        o.to_string(),
        "s3://dr-lists/allow/list v1.txt at http://127.0.0.1:9000"
    );
    // A path prefix on the endpoint is kept.
    let o = object("s3://b12/k", "https://store.example.com/s3").unwrap();
    assert_eq!(o.url(), "https://store.example.com/s3/b12/k");
    // Virtual-hosted style puts the bucket in the host name.
    let o = object("s3://b12/k+x", "https://s3.eu-west-1.amazonaws.com")
        .unwrap()
        .virtual_hosted(true);
    assert_eq!(o.url(), "https://b12.s3.eu-west-1.amazonaws.com/k%2Bx");
}

#[test]
fn bad_s3_sources_are_refused_with_the_reason() {
    for (loc, problem) in [
        ("https://b12/k", "s3://"),
        ("s3://bucket", "/KEY"),
        ("s3://bucket/", "empty"),
        ("s3://bucket/dir/", "folder"),
        ("s3://Bucket/k", "lower-case"),
        ("s3://ab/k", "3 to 63"),
        ("s3://-ab/k", "3 to 63"),
        ("s3://bucket/a\nb", "control"),
    ] {
        let e = object(loc, "http://127.0.0.1:9000").unwrap_err();
        assert!(e.to_string().contains(problem), "{loc}: {e}");
    }
    for (ep, problem) in [
        ("127.0.0.1:9000", "URL"),
        ("ftp://store", "http"),
        ("http://user:pw@store", "password"),
        ("http://store/?x=1", "query"),
    ] {
        let e = object("s3://bucket/k", ep).unwrap_err();
        assert!(matches!(e, SourceError::Endpoint { .. }), "{ep}: {e}");
        assert!(e.to_string().contains(problem), "{ep}: {e}");
    }
    assert_eq!(
        S3Object::new("s3://bucket/k", "http://s", " ", creds()).unwrap_err(),
        SourceError::Region
    );
    assert!(ListSource::http("https://lists.example.com/a").is_ok());
    for bad in ["s3://b/k", "ftp://x/y", "lists.example.com/a", "http://"] {
        assert!(
            matches!(ListSource::http(bad), Err(SourceError::Url(_))),
            "{bad}"
        );
    }
}

#[test]
fn credentials_come_from_a_file() {
    let text = "# DR list reader\n[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key=s3cr3t/value\nregion = eu-west-1\n";
    let c = S3Credentials::parse_file(text, "f").unwrap();
    assert_eq!(c.inner.access_key_id(), "AKIAFILE");
    assert_eq!(c.inner.secret_access_key(), "s3cr3t/value");
    assert_eq!(c.inner.session_token(), None);
    let with_token = format!("{text}aws_session_token = tok\n");
    let c = S3Credentials::parse_file(&with_token, "f").unwrap();
    assert_eq!(c.inner.session_token(), Some("tok"));

    for (text, problem) in [
        ("aws_secret_access_key = x\n", "no aws_access_key_id"),
        ("aws_access_key_id = x\n", "no aws_secret_access_key"),
        (
            "[a]\naws_access_key_id = x\n[b]\naws_access_key_id = y\n",
            "second profile",
        ),
        (
            "aws_access_key_id = x\naws_access_key_id = y\naws_secret_access_key = z\n",
            "twice",
        ),
        ("aws_access_key_id\n", "KEY = VALUE"),
        ("aws_access_key_id =\n", "no value"),
    ] {
        let e = S3Credentials::parse_file(text, "f").unwrap_err();
        assert!(e.contains(problem), "{text:?}: {e}");
    }
    // A file that cannot be read names the file.
    let e = S3Credentials::from_file(Path::new("/nonexistent/creds")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/creds"), "{e}");
    // Values never appear in the error, even for a malformed line holding a secret.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("creds");
    std::fs::write(&p, "aws_secret_access_key = TOPSECRET\nTOPSECRET2\n").unwrap();
    let e = S3Credentials::from_file(&p).unwrap_err().to_string();
    assert!(!e.contains("TOPSECRET"), "{e}");
    std::fs::write(
        &p,
        "aws_access_key_id = AKIAFILE\naws_secret_access_key = TOPSECRET\n",
    )
    .unwrap();
    let c = S3Credentials::from_file(&p).unwrap();
    assert!(c.origin().contains("creds"), "{}", c.origin());
}

#[test]
fn credentials_come_from_the_environment() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let c = S3Credentials::from_vars(env(&[
        ("AWS_ACCESS_KEY_ID", "AKIAENV"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
    ]))
    .unwrap();
    assert_eq!(c.inner.access_key_id(), "AKIAENV");
    assert!(c.origin().contains("environment"));
    assert_eq!(
        S3Credentials::from_vars(env(&[("AWS_ACCESS_KEY_ID", "AKIAENV")])).unwrap_err(),
        SourceError::CredentialsEnv {
            missing: "AWS_SECRET_ACCESS_KEY"
        }
    );
    assert_eq!(
        S3Credentials::from_vars(env(&[
            ("AWS_ACCESS_KEY_ID", " "),
            ("AWS_SECRET_ACCESS_KEY", "x")
        ]))
        .unwrap_err(),
        SourceError::CredentialsEnv {
            missing: "AWS_ACCESS_KEY_ID"
        }
    );
}

#[test]
fn debug_and_display_never_show_the_credentials() {
    let o = object("s3://dr-lists/a.txt", "http://127.0.0.1:9000").unwrap();
    let src = ListSource::S3(o.clone());
    for shown in [
        format!("{o:?}"),
        format!("{o}"),
        format!("{src:?}"),
        format!("{src}"),
        format!("{:?}", creds()),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(ID), "{shown}");
    }
    // Nor does any explanation of an S3 error.
    for code in [
        "NoSuchKey",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "Other",
    ] {
        let e = o.explain(code, "msg");
        assert!(!e.contains(SECRET) && !e.contains(ID), "{code}: {e}");
    }
}

#[test]
fn s3_errors_are_explained() {
    let o = object("s3://dr-lists/a.txt", "http://127.0.0.1:9000").unwrap();
    for (code, says) in [
        ("NoSuchKey", "no object \"a.txt\" in bucket dr-lists"),
        ("NoSuchBucket", "no bucket dr-lists"),
        ("InvalidAccessKeyId", "does not know the access key id"),
        (
            "SignatureDoesNotMatch",
            "secret access key from the test is wrong",
        ),
        ("AccessDenied", "s3:GetObject"),
        ("RequestTimeTooSkewed", "clock"),
        ("SlowDown", "the server says: msg"),
    ] {
        let e = o.explain(code, "msg");
        assert!(e.contains(says), "{code}: {e}");
    }
    let doc = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
    assert_eq!(xml_value(doc, "Code"), Some("NoSuchKey"));
    assert_eq!(
        xml_value(doc, "Message"),
        Some("The specified key does not exist.")
    );
    assert_eq!(xml_value(doc, "Missing"), None);
    assert_eq!(xml_value("<Code>open", "Code"), None);
}

#[test]
fn a_signed_get_carries_signature_v4_headers() {
    let o = object("s3://dr-lists/a.txt", "http://127.0.0.1:9000").unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let h = o.signed_get_headers(t).unwrap();
    let get = |n: &str| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {n} in {h:?}"))
    };
    let auth = get("authorization");
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={ID}/20260101/eu-west-1/s3/aws4_request, SignedHeaders="
        )),
        "{auth}"
    );
    assert!(!auth.contains(SECRET));
    assert_eq!(get("x-amz-date"), "20260101T000000Z");
    // SHA-256 of the empty body.
    assert_eq!(
        get("x-amz-content-sha256"),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // Deterministic for the same time, different for another secret.
    assert_eq!(o.signed_get_headers(t).unwrap(), h);
    let other = S3Object::new(
        "s3://dr-lists/a.txt",
        "http://127.0.0.1:9000",
        "eu-west-1",
        S3Credentials::new(ID, "another secret", None, "t"),
    )
    .unwrap();
    assert_ne!(other.signed_get_headers(t).unwrap(), h);
    // Temporary credentials send their session token.
    let temp = S3Object::new(
        "s3://dr-lists/a.txt",
        "http://127.0.0.1:9000",
        "eu-west-1",
        S3Credentials::new(ID, SECRET, Some("TOKEN".into()), "t"),
    )
    .unwrap();
    let th = temp.signed_get_headers(t).unwrap();
    assert!(
        th.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-amz-security-token") && v == "TOKEN"),
        "{th:?}"
    );
}
