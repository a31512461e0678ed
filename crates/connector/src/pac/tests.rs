#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use expect_test::{Expect, expect};

use super::*;

fn domains() -> AppDomains {
    AppDomains::new(&[
        "Example.COM",
        ".corp.example",
        "*.apps.example.org",
        "intra.",
    ])
    .unwrap()
}

const HOSTS: [&str; 12] = [
    "example.com",
    "app.example.com",
    "a.b.example.com",
    "APP.Example.Com",
    "app.example.com.",
    "notexample.com",
    "example.com.evil.net",
    "corp.example",
    "x.apps.example.org",
    "example.org",
    "intra",
    "192.0.2.1",
];

#[test]
fn domains_are_normalised() {
    assert_eq!(
        domains().as_slice(),
        ["example.com", "corp.example", "apps.example.org", "intra"]
    );
}

#[test]
fn invalid_domains_are_explained() {
    let cases: [(&str, Expect); 5] = [
        (
            "",
            expect![[
                r#"app domain "" is not a DNS name (it is empty); give names such as example.com (which also covers its subdomains)"#
            ]],
        ),
        (
            "exa mple.com",
            expect![[
                r#"app domain "exa mple.com" is not a DNS name (only letters, digits, hyphens and dots are allowed); give names such as example.com (which also covers its subdomains)"#
            ]],
        ),
        (
            "a\"+alert(1)+\".com",
            expect![[
                r#"app domain "a\"+alert(1)+\".com" is not a DNS name (only letters, digits, hyphens and dots are allowed); give names such as example.com (which also covers its subdomains)"#
            ]],
        ),
        (
            "-bad.example.com",
            expect![[
                r#"app domain "-bad.example.com" is not a DNS name (a label starts or ends with a hyphen); give names such as example.com (which also covers its subdomains)"#
            ]],
        ),
        (
            "a..example.com",
            expect![[
                r#"app domain "a..example.com" is not a DNS name (it has an empty label); give names such as example.com (which also covers its subdomains)"#
            ]],
        ),
    ];
    for (input, expected) in cases {
        expected.assert_eq(&AppDomains::new(&[input]).unwrap_err().to_string());
    }
}

#[test]
fn hosts_match_their_domain_and_subdomains_only() {
    let d = domains();
    let got: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("{h} {}", d.matches(h)))
        .collect();
    expect![[r#"
        example.com true
        app.example.com true
        a.b.example.com true
        APP.Example.Com true
        app.example.com. true
        notexample.com false
        example.com.evil.net false
        corp.example true
        x.apps.example.org true
        example.org false
        intra true
        192.0.2.1 false"#]]
    .assert_eq(&got.join("\n"));
}

#[test]
fn pac_file_text() {
    let proxy: SocketAddr = "127.0.0.1:3128".parse().unwrap();
    expect![[r#"
        // Tsuzuku connector: the organisation's apps go through the local connector.
        function FindProxyForURL(url, host) {
          host = host.toLowerCase();
          if (host.charAt(host.length - 1) == ".") { host = host.substring(0, host.length - 1); }
          var apps = ["example.com", "corp.example", "apps.example.org", "intra"];
          for (var i = 0; i < apps.length; i++) {
            if (host == apps[i] || dnsDomainIs(host, "." + apps[i])) { return "PROXY 127.0.0.1:3128"; }
          }
          return "DIRECT";
        }
    "#]]
    .assert_eq(&pac_file(&domains(), proxy, Internet::Direct));
    assert!(
        pac_file(&domains(), proxy, Internet::ViaConnector)
            .contains("return \"PROXY 127.0.0.1:3128\";\n}")
    );
}

/// Runs the PAC file in node with the standard `dnsDomainIs` and returns its answer per host.
fn run_pac(pac: &str, hosts: &[&str]) -> Vec<String> {
    let mut script = String::from(
        "function dnsDomainIs(host, domain) { return host.length >= domain.length && host.substring(host.length - domain.length) == domain; }\n",
    );
    script.push_str(pac);
    for h in hosts {
        script.push_str(&format!(
            "console.log(FindProxyForURL(\"https://{h}/\", \"{h}\"));\n"
        ));
    }
    let mut child = Command::new("node")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed to run the PAC file (it is installed with the test tools)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pac_file_in_a_javascript_engine_agrees_with_the_proxy() {
    let proxy: SocketAddr = "127.0.0.1:3128".parse().unwrap();
    let d = domains();
    for internet in [Internet::Direct, Internet::ViaConnector] {
        let answers = run_pac(&pac_file(&d, proxy, internet), &HOSTS);
        assert_eq!(answers.len(), HOSTS.len());
        for (host, answer) in HOSTS.iter().zip(&answers) {
            let expected = if d.matches(host) || internet == Internet::ViaConnector {
                "PROXY 127.0.0.1:3128"
            } else {
                "DIRECT"
            };
            assert_eq!(answer, expected, "host {host} with {internet:?}");
        }
    }
}
