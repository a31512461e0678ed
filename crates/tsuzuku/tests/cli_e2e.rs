//! End-to-end tests of the real `tsuzuku` binary's admin CLI: quick start, configuration
//! errors, policy validate/apply/diff/history/rollback/test, users, apps, and the audit trail
//! (including tamper detection). Sign-in and proxying are covered by `gateway_e2e.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tsuzuku_testkit::gateway::{TestGateway, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

/// The operator every command runs as: admin changes are attributed to `cli:<user>`.
const OPERATOR: &str = "e2e-operator";
const ACTOR: &str = "cli:e2e-operator";

/// What one run of the binary produced.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Stdout of a run that must have succeeded.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        &self.stdout
    }

    /// The single stderr line of a run that must have failed with exit code 1: what an
    /// operator reads is one line, never a panic or a backtrace.
    #[track_caller]
    fn one_line_error(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit code 1, got {self:#?}");
        no_panic(&self.stderr);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr: {self:#?}");
        assert!(
            lines[0].starts_with("tsuzuku: "),
            "error line should say who is speaking: {self:#?}"
        );
        lines[0]
    }
}

#[track_caller]
fn no_panic(stderr: &str) {
    for marker in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(marker), "panic text on stderr: {stderr}");
    }
}

/// Runs `tsuzuku --data-dir DATA ARGS` as [`OPERATOR`], with `stdin` if given.
fn run_in(data: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    use std::io::Write as _;
    let mut child = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("USER", OPERATOR)
        .env_remove("SUDO_USER")
        .env_remove("TSUZUKU_CONFIG")
        .env_remove("TSUZUKU_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(gw: &TestGateway, args: &[&str]) -> Out {
    run_in(&gw.data(), args, None)
}

fn run_stdin(gw: &TestGateway, args: &[&str], stdin: &str) -> Out {
    run_in(&gw.data(), args, Some(stdin))
}

/// The value printed after `label` on a line of `text` (quickstart's password and TOTP URI).
#[track_caller]
fn printed(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {text}"))
        .trim()
        .to_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The audit events of `kind`, oldest first (`audit tail --json` prints JSON lines).
fn audit_events(data: &Path, kind: &str) -> Vec<Value> {
    let out = run_in(
        data,
        &["--json", "audit", "tail", "-n", "1000", "--kind", kind],
        None,
    );
    out.ok()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

/// `(action, subject)` of admin events, where the subject is the user or app changed.
fn admin_actions(data: &Path) -> Vec<(String, String)> {
    audit_events(data, "admin")
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "admin");
            let d = &e["detail"];
            let subject = d["user"].as_str().or(d["app"].as_str()).unwrap_or("");
            (d["action"].as_str().unwrap().to_owned(), subject.to_owned())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The value of `secret=` in an otpauth:// URI.
fn totp_secret(uri: &str) -> String {
    let q = uri.split_once('?').unwrap().1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned()
}

/// Writes a policy file (the document is named after the file stem) and returns its path.
fn write_file(dir: &Path, name: &str, text: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The IIJ example policies shipped in `examples/iij`, in file-name order.
fn iij_examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iij");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "expected the four IIJ examples in {dir:?}");
    files
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect()
}

/// Opens the data directory's SQLite store directly, as the test's own process, with the
/// data directory's master key (encryption at rest is on by default).
async fn open_store(data: &Path) -> tsuzuku_store::StoreRoot {
    let db = data.join("store.db");
    assert!(db.exists(), "no store at {db:?}");
    let master = tsuzuku_store::keyring::MasterKey::load(data.join("keys/master.key")).unwrap();
    tsuzuku_store::StoreRoot::open_with_master(&format!("sqlite://{}", db.display()), master)
        .await
        .unwrap()
}

async fn stored_user(data: &Path, name: &str) -> tsuzuku_store::User {
    let root = open_store(data).await;
    let u = root
        .tenant(tsuzuku_store::DEFAULT_TENANT)
        .get_user_by_name(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no stored user {name}"));
    root.close().await;
    u
}

fn password_matches(u: &tsuzuku_store::User, pw: &str) -> bool {
    tsuzuku_identity::password::verify(pw, u.password_hash.as_deref().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. quickstart
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn quickstart_shows_credentials_once_and_reuses_the_directory() {
    // TestGateway only lends its temporary directory here: quickstart makes its own data dir.
    let tmp = TestGateway::init(BIN).unwrap();
    let data = tmp.data_dir().join("qs");
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");

    let first = run_in(
        &data,
        &["quickstart", "--no-serve", "--listen", &listen],
        None,
    );
    let text = first.ok();
    no_panic(&first.stderr);
    assert!(text.contains("Created data directory"), "{text}");
    assert_eq!(text.matches("One-time password:").count(), 1, "{text}");
    assert_eq!(text.matches("otpauth://").count(), 1, "{text}");
    let password = printed(text, "One-time password:");
    assert_eq!(password.len(), 20, "generated password: {password:?}");
    let uri = printed(text, "TOTP enrolment:");
    assert!(
        uri.starts_with("otpauth://totp/Tsuzuku:admin?"),
        "TOTP URI: {uri}"
    );
    assert!(
        text.contains(&format!("https://auth.localhost:{port}/")),
        "{text}"
    );
    assert!(
        text.contains(&format!("https://demo.localhost:{port}/")),
        "{text}"
    );
    let ca = data.join("tls").join("ca.pem");
    assert!(ca.exists());
    assert!(text.contains(&ca.display().to_string()), "{text}");

    // What was printed is what was stored: the password verifies, the TOTP secret matches.
    let admin = stored_user(&data, "admin").await;
    assert!(password_matches(&admin, &password));
    assert!(!password_matches(&admin, "not-the-password"));
    assert_eq!(
        admin.totp_secret.as_deref(),
        Some(totp_secret(&uri).as_str())
    );

    // A second run reuses the directory and shows neither secret again.
    let second = run_in(
        &data,
        &["quickstart", "--no-serve", "--listen", &listen],
        None,
    );
    let again = second.ok();
    assert!(again.contains("Reusing data directory"), "{again}");
    assert!(!again.contains("otpauth://"), "{again}");
    assert!(!again.contains("One-time password"), "{again}");
    assert!(!again.contains(&password), "{again}");
    assert!(
        again.contains(&format!("https://demo.localhost:{port}/")),
        "{again}"
    );
    // ... and leaves the admin's credentials as they were.
    let admin_after = stored_user(&data, "admin").await;
    assert_eq!(admin_after.password_hash, admin.password_hash);
    assert_eq!(admin_after.totp_secret, admin.totp_secret);

    // Exactly one admin, in the admins group, with TOTP.
    let users = json(run_in(&data, &["--json", "user", "list"], None).ok());
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["username"], "admin");
    assert_eq!(users[0]["groups"], serde_json::json!(["admins"]));
    assert_eq!(users[0]["totp"], true);
    assert_eq!(users[0]["disabled"], false);

    // The demo app, reachable under the quick-start port, forwarding to a local upstream.
    let apps = json(run_in(&data, &["--json", "app", "list"], None).ok());
    let apps = apps.as_array().unwrap();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0]["name"], "demo");
    assert_eq!(apps[0]["host"], format!("demo.localhost:{port}"));
    assert!(
        apps[0]["upstream"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{apps:?}"
    );

    // Policy version 1, and only that one after both runs.
    let hist = json(run_in(&data, &["--json", "policy", "history"], None).ok());
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 1, "{hist:?}");
    assert_eq!(hist[0]["version"], 1);
    assert_eq!(hist[0]["comment"], "quick start");
    assert_eq!(hist[0]["author"], ACTOR);
    assert_eq!(
        hist[0]["documents"],
        serde_json::json!(["quickstart-admins"])
    );

    // The whole setup is in the audit trail and the chain is intact.
    let admin_events = admin_actions(&data);
    assert_eq!(admin_events[0], ("user.add".to_owned(), "admin".to_owned()));
    assert!(
        admin_events
            .iter()
            .any(|(a, s)| a == "app.add" && s == "demo")
    );
    assert_eq!(audit_events(&data, "policy").len(), 1);
    let verify = run_in(&data, &["audit", "verify"], None);
    assert!(verify.ok().starts_with("audit trail intact:"), "{verify:?}");
}

/// Review issue 7: quickstart on a directory made by `init` said "Reusing…" and created
/// neither the admin user nor a policy, so nobody could sign in. It completes what is missing,
/// says what it reused and what it created, and a second run changes nothing.
#[tokio::test]
async fn quickstart_completes_a_directory_made_by_init() {
    let tmp = TestGateway::init(BIN).unwrap();
    let data = tmp.data_dir().join("made-by-init");
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    run_in(&data, &["init", "--listen", &listen], None).ok();

    let first = run_in(
        &data,
        &["quickstart", "--no-serve", "--listen", &listen],
        None,
    );
    let text = first.ok();
    assert!(text.contains("Reusing data directory"), "{text}");
    assert!(
        text.contains("Created: the admin user, the quick-start policy (version 1), the demo app"),
        "{text}"
    );
    assert_eq!(text.matches("One-time password:").count(), 1, "{text}");
    let password = printed(text, "One-time password:");
    let uri = printed(text, "TOTP enrolment:");
    let admin = stored_user(&data, "admin").await;
    assert!(password_matches(&admin, &password));
    assert_eq!(
        admin.totp_secret.as_deref(),
        Some(totp_secret(&uri).as_str())
    );
    assert_eq!(admin.groups, vec!["admins".to_owned()]);
    let hist = json(run_in(&data, &["--json", "policy", "history"], None).ok());
    assert_eq!(
        hist[0]["documents"],
        serde_json::json!(["quickstart-admins"]),
        "{hist}"
    );
    let apps = json(run_in(&data, &["--json", "app", "list"], None).ok());
    assert_eq!(apps[0]["name"], "demo", "{apps}");
    assert_eq!(apps[0]["data_class"], "internal", "{apps}");

    // Again: everything is reused, no secret is shown, nothing new is stored.
    let second = run_in(
        &data,
        &["quickstart", "--no-serve", "--listen", &listen],
        None,
    );
    let again = second.ok();
    assert!(
        again.contains("Reused:  the admin user, policy version 1"),
        "{again}"
    );
    assert!(!again.contains("Created:"), "{again}");
    assert!(!again.contains("One-time password"), "{again}");
    let admin_after = stored_user(&data, "admin").await;
    assert_eq!(admin_after.password_hash, admin.password_hash);
    assert_eq!(
        json(run_in(&data, &["--json", "policy", "history"], None).ok())
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 2. configuration errors
// ---------------------------------------------------------------------------------------------

/// Runs `tsuzuku serve`, which must exit by itself (not serve) within 20 s.
async fn serve_must_exit(data: &Path) -> Out {
    let child = tokio::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .arg("serve")
        .env_remove("TSUZUKU_CONFIG")
        .env_remove("TSUZUKU_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("`tsuzuku serve` kept running with an invalid configuration")
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn invalid_configuration_is_one_line_naming_file_key_and_expectation() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();
    let cfg = data.join("tsuzuku.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let cfg_shown = cfg.display().to_string();
    // Where `listen = ...` is in the generated file: errors name the line.
    let listen_line = good
        .lines()
        .position(|l| l.starts_with("listen ="))
        .map(|i| format!("line {}", i + 1))
        .unwrap();

    let replace = |key: &str, line: &str| -> String {
        let mut done = false;
        let out: Vec<String> = good
            .lines()
            .map(|l| {
                if !done && l.trim_start().starts_with(&format!("{key} =")) {
                    done = true;
                    line.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(done, "no key {key} in the generated config");
        out.join("\n") + "\n"
    };

    // (what is wrong, the file text, substrings the one error line must contain)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a misspelt key in [gateway]",
            replace("listen", &format!("lisen = \"127.0.0.1:{}\"", gw.port)),
            vec![
                listen_line.as_str(),
                "lisen",
                "unknown field",
                "expected one of",
                "`listen`",
            ],
        ),
        (
            "a string where a number belongs",
            replace(
                "header_read_timeout_secs",
                "header_read_timeout_secs = \"ten\"",
            ),
            vec![
                "header_read_timeout_secs",
                "line ",
                "invalid type",
                "expected u64",
            ],
        ),
        (
            "a number where an address belongs",
            replace("listen", "listen = 8443"),
            vec![
                "listen = 8443",
                listen_line.as_str(),
                "expected socket address",
            ],
        ),
        (
            "an unknown section",
            format!("{good}\n[nosuch]\nx = 1\n"),
            vec![
                "[nosuch]",
                "unknown field `nosuch`",
                "expected one of",
                "`gateway`",
            ],
        ),
        (
            "an unknown time zone (checked after parsing)",
            replace("timezone", "timezone = \"Mars/Olympus\""),
            vec!["gateway.timezone", "Mars/Olympus", "IANA", "Asia/Tokyo"],
        ),
        (
            "a negative number where an unsigned one belongs",
            replace("max_failures", "max_failures = -1"),
            vec!["max_failures = -1", "expected u32"],
        ),
    ];

    for (what, text, expected) in &cases {
        std::fs::write(&cfg, text).unwrap();
        let serve = serve_must_exit(&data).await;
        let line = serve.one_line_error();
        assert!(serve.stdout.is_empty(), "{what}: {serve:?}");
        assert!(line.contains(&cfg_shown), "{what}: {line}");
        for e in expected {
            assert!(line.contains(e), "{what}: expected {e:?} in: {line}");
        }
        // Every other command refuses the same file with the same message.
        for args in [
            &["user", "list"][..],
            &["policy", "list"],
            &["audit", "verify"],
        ] {
            let other = run(&gw, args);
            assert_eq!(other.one_line_error(), line, "{what}: tsuzuku {args:?}");
        }
    }

    // A --config that does not exist is named too.
    std::fs::write(&cfg, &good).unwrap();
    let missing = data.join("missing.toml");
    let out = run(
        &gw,
        &["--config", missing.to_str().unwrap(), "user", "list"],
    );
    assert!(
        out.one_line_error()
            .contains(&missing.display().to_string()),
        "{out:?}"
    );

    // With the file restored, commands work again.
    run(&gw, &["user", "list"]).ok();
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. policy validate / apply / diff / history / audit
// ---------------------------------------------------------------------------------------------

const ALLOW_V1: &str = r#"permit (
  principal in Tsuzuku::Group::"employees",
  action in Tsuzuku::Action::"access",
  resource == Tsuzuku::App::"wiki"
);
"#;
const ALLOW_V2: &str = r#"permit (
  principal in Tsuzuku::Group::"employees",
  action in Tsuzuku::Action::"access",
  resource == Tsuzuku::App::"crm"
);
"#;
const HOURS: &str = r#"forbid (principal, action, resource)
unless { context.local_time >= duration("9h") && context.local_time < duration("18h") };
"#;
const MFA: &str = r#"forbid (principal, action == Tsuzuku::Action::"write", resource)
unless { principal.mfa };
"#;

/// Review issue 4: an error's cause was printed twice, once in its message and once as its
/// source (`--config /tmp`: "…Is a directory (os error 21): Is a directory (os error 21)").
#[test]
fn config_that_is_a_directory_names_the_os_error_once() {
    let gw = TestGateway::init(BIN).unwrap();
    let dir = gw.data_dir().join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&gw, &["--config", dir.to_str().unwrap(), "user", "list"]);
    let line = out.one_line_error();
    assert!(
        line.contains(&format!("cannot read config file {}", dir.display())),
        "{line}"
    );
    assert_eq!(line.matches("os error 21").count(), 1, "{line}");
}

/// Review issue 6: `init --portal-host Auth.Example.com` blamed a config file that did not
/// exist; `site include nosuch` said "is not excluded"; `audit tail -n 0` printed one event.
#[test]
fn errors_name_the_flag_or_the_missing_thing() {
    let gw = TestGateway::init(BIN).unwrap();
    let fresh = gw.data_dir().join("fresh");
    let out = run_in(&fresh, &["init", "--portal-host", "Auth.Example.com"], None);
    let line = out.one_line_error();
    assert!(
        line.contains("--portal-host \"Auth.Example.com\" is not valid"),
        "{line}"
    );
    assert!(!line.contains("config file"), "{line}");
    assert!(!fresh.join("tsuzuku.toml").exists());

    let out = run(&gw, &["site", "include", "nosuch"]);
    let line = out.one_line_error();
    assert!(line.contains("no gateway site named \"nosuch\""), "{line}");

    let out = run(&gw, &["audit", "tail", "-n", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("--lines"), "{out:?}");
    assert!(out.stderr.contains("1..=100000"), "{out:?}");
}

/// CLI review: `site list --json` left out `dr` and `capacity_rps`, so a script could not tell
/// the DR gateway site; `site add` took `--dr --capacity-rps` (a DR site takes no part in load
/// shedding) and the same `--endpoint` twice; `site exclude` took an empty `--reason`.
#[test]
fn site_list_json_has_every_field_and_site_commands_refuse_meaningless_input() {
    let gw = TestGateway::init(BIN).unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec!["site", "add"];
        args.extend_from_slice(extra);
        run(&gw, &args)
    };
    add(&[
        "tokyo",
        "--host",
        "gw.example.com",
        "--endpoint",
        "192.0.2.10:443",
        "--capacity-rps",
        "5000",
        "--preference",
        "1",
    ])
    .ok();
    add(&[
        "dr",
        "--host",
        "dr.example.com",
        "--endpoint",
        "198.51.100.7:443",
        "--dr",
    ])
    .ok();

    let out = add(&[
        "dr2",
        "--host",
        "dr.example.com",
        "--endpoint",
        "198.51.100.8:443",
        "--dr",
        "--capacity-rps",
        "100",
    ]);
    let line = out.one_line_error();
    assert!(line.contains("--capacity-rps 100 with --dr"), "{line}");
    for (dup, twice) in [
        (
            ["192.0.2.20:443", "192.0.2.20:443"],
            "\"192.0.2.20:443\" is given twice",
        ),
        (
            ["[2001:db8::1]:443", "[2001:db8:0::1]:443"],
            "\"[2001:db8:0::1]:443\" is the same address as --endpoint \"[2001:db8::1]:443\"",
        ),
    ] {
        let out = add(&[
            "osaka",
            "--host",
            "gw.example.com",
            "--endpoint",
            dup[0],
            "--endpoint",
            "192.0.2.21:443",
            "--endpoint",
            dup[1],
        ]);
        let line = out.one_line_error();
        assert!(line.contains(&format!("--endpoint {twice}")), "{line}");
    }
    for reason in ["", "  \t "] {
        let out = run(
            &gw,
            &[
                "site", "exclude", "tokyo", "--for", "1h", "--reason", reason,
            ],
        );
        let line = out.one_line_error();
        assert!(
            line.contains(&format!("--reason {reason:?} is empty")),
            "{line}"
        );
    }

    let list = json(run(&gw, &["--json", "site", "list"]).ok());
    assert_eq!(
        list,
        serde_json::json!([
            {"name": "tokyo", "preference": 1, "host": "gw.example.com",
             "endpoints": ["192.0.2.10:443"], "capacity_rps": 5000, "dr": false,
             "excluded_until_ms": null, "exclusion_reason": null},
            {"name": "dr", "preference": 100, "host": "dr.example.com",
             "endpoints": ["198.51.100.7:443"], "capacity_rps": null, "dr": true,
             "excluded_until_ms": null, "exclusion_reason": null},
        ]),
        "only the two good sites, with every field"
    );
    let actions: Vec<String> = audit_events(&gw.data(), "admin")
        .iter()
        .map(|e| e["detail"]["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["site.add", "site.add"], "refusals change nothing");
}

/// CLI review: `device token --valid-for 99999d` made a one-time enrolment token good for 270
/// years. At most 30 days (docs/DEVICES.md).
#[test]
fn enrolment_tokens_are_valid_for_at_most_30_days() {
    let gw = TestGateway::init(BIN).unwrap();
    for long in ["99999d", "31d", "721h"] {
        let out = run(&gw, &["device", "token", "--valid-for", long]);
        let line = out.one_line_error();
        assert!(
            line.contains(&format!(
                "--valid-for {long:?} is longer than the 30-day maximum"
            )),
            "{line}"
        );
        assert!(out.stdout.is_empty(), "no token printed: {out:?}");
    }
    let v = json(run(&gw, &["--json", "device", "token", "--valid-for", "30d"]).ok());
    let expires = v["expires_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 30 * 86_400).abs() < 60, "{v}");
    let tokens = audit_events(&gw.data(), "admin")
        .iter()
        .filter(|e| e["detail"]["action"] == "device.token")
        .count();
    assert_eq!(tokens, 1, "only the 30-day token was made");
}

/// CLI review: `user add --password-stdin` took a 5-character password. A chosen password
/// needs 12 characters and at most 1024 bytes; generated ones (20 characters) always pass.
#[tokio::test]
async fn chosen_passwords_need_12_characters_and_at_most_1024_bytes() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();
    let too_long = "x".repeat(1025);
    for (pw, says) in [
        (
            "abcde\n",
            "password is 5 characters long, fewer than the 12 required",
        ),
        ("abcdefghijk", "password is 11 characters long"),
        (too_long.as_str(), "password is 1025 bytes long"),
    ] {
        let out = run_stdin(&gw, &["user", "add", "carol", "--password-stdin"], pw);
        let line = out.one_line_error();
        assert!(
            line.contains(&format!("--password-stdin: {says}")),
            "{line}"
        );
    }
    run(&gw, &["user", "add", "dave"]).ok();
    let out = run_stdin(
        &gw,
        &["user", "passwd", "dave", "--password-stdin"],
        "short\n",
    );
    assert!(
        out.one_line_error()
            .contains("--password-stdin: password is 5 characters long"),
        "{out:?}"
    );
    // Exactly 12 characters (two bytes each for some) is enough.
    run_stdin(
        &gw,
        &["user", "add", "carol", "--password-stdin"],
        "ééé-abcd-xyz\n",
    )
    .ok();
    assert!(password_matches(
        &stored_user(&data, "carol").await,
        "ééé-abcd-xyz"
    ));
    assert_eq!(
        admin_actions(&data),
        pairs(&[("user.add", "dave"), ("user.add", "carol")]),
        "refused passwords change nothing"
    );
}

#[test]
fn policy_validate_reports_the_cedar_validator_message_for_the_document() {
    let gw = TestGateway::init(BIN).unwrap();
    let dir = gw.data_dir().join("validate");

    // An attribute the schema does not have.
    let f = write_file(
        &dir,
        "bad-attr.cedar",
        "permit (principal, action, resource) when { principal.nosuch };\n",
    );
    let out = run(&gw, &["policy", "validate", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    no_panic(&out.stderr);
    assert!(
        out.stderr.contains("policy document \"bad-attr\""),
        "{out:?}"
    );
    assert!(out.stderr.contains("line 1"), "{out:?}");
    assert!(
        out.stderr
            .contains("attribute `nosuch` on entity type `Tsuzuku::User` not found"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("valid"), "{out:?}");

    // An entity type the schema does not have.
    let f = write_file(
        &dir,
        "bad-type.cedar",
        "permit (principal == Tsuzuku::Robot::\"r2\", action, resource);\n",
    );
    let out = run(&gw, &["policy", "validate", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    no_panic(&out.stderr);
    assert!(
        out.stderr.contains("policy document \"bad-type\""),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("unrecognized entity type `Tsuzuku::Robot`"),
        "{out:?}"
    );

    // A syntax error, reported with its position.
    let f = write_file(
        &dir,
        "syntax.cedar",
        "permit (principal, action, resource) when { principal.mfa ;\n",
    );
    let out = run(&gw, &["policy", "validate", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    no_panic(&out.stderr);
    assert!(out.stderr.contains("policy document \"syntax\""), "{out:?}");
    assert!(out.stderr.contains("line 1, column"), "{out:?}");
    assert!(out.stderr.contains("unexpected token"), "{out:?}");

    // One bad document among good ones: only the bad one is named.
    let good = write_file(&dir, "good.cedar", ALLOW_V1);
    let bad = dir.join("bad-attr.cedar");
    let out = run(&gw, &["policy", "validate", &good, bad.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"bad-attr\""), "{out:?}");
    assert!(!out.stderr.contains("\"good\""), "{out:?}");

    // A file that does not exist is named by its path.
    let missing = dir.join("missing.cedar");
    let out = run(&gw, &["policy", "validate", missing.to_str().unwrap()]);
    assert!(
        out.one_line_error()
            .contains(&missing.display().to_string()),
        "{out:?}"
    );

    // Valid files say so, and validating stores nothing.
    let hours = write_file(&dir, "hours.cedar", HOURS);
    let out = run(&gw, &["policy", "validate", &good, &hours]);
    assert!(
        out.ok().starts_with("valid: 2 document(s), 2 policies"),
        "{out:?}"
    );
    let out = run(&gw, &["policy", "validate"][..]);
    assert_ne!(out.code, 0, "validate without files: {out:?}");
    let iij = iij_examples();
    let mut args = vec!["policy", "validate"];
    args.extend(iij.iter().map(String::as_str));
    assert!(run(&gw, &args).ok().starts_with("valid: 4 document(s)"));
    let hist = json(run(&gw, &["--json", "policy", "history"]).ok());
    assert_eq!(hist, serde_json::json!([]));
}

#[test]
fn audit_tail_shows_the_newest_events_of_the_kind_asked_for() {
    let gw = TestGateway::init(BIN).unwrap();
    run(&gw, &["user", "add", "erin"]).ok();
    let policy = write_file(&gw.data_dir().join("p"), "allow.cedar", ALLOW_V1);
    // Newer events of another kind than the admin event asked for.
    for i in 0..3 {
        run(
            &gw,
            &["policy", "apply", &policy, "-m", &format!("round {i}")],
        );
    }
    let out = run(
        &gw,
        &["--json", "audit", "tail", "-n", "1", "--kind", "admin"],
    );
    let lines: Vec<Value> = out.ok().lines().map(json).collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(lines[0]["kind"], "admin");
    assert_eq!(lines[0]["detail"]["user"], "erin", "{out:?}");
    // Without a kind: the newest events of any kind.
    let out = run(&gw, &["--json", "audit", "tail", "-n", "1"]);
    let lines: Vec<Value> = out.ok().lines().map(json).collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(lines[0]["kind"], "policy", "{out:?}");
}

/// Review issue 1: `tsuzuku audit tail -n 50 | head -1` panicked ("failed printing to stdout:
/// Broken pipe", exit 101). A reader that goes away is a quiet success, for tables and JSON.
#[test]
fn output_to_a_closed_pipe_is_a_quiet_success() {
    let gw = TestGateway::init(BIN).unwrap();
    for i in 0..3 {
        run(&gw, &["user", "add", &format!("pipe{i}")]).ok();
    }
    let commands: [&[&str]; 5] = [
        &["audit", "tail", "-n", "50"],
        &["--json", "audit", "tail", "-n", "50"],
        &["user", "list"],
        &["--json", "user", "list"],
        &["user", "passwd", "pipe0"],
    ];
    for args in commands {
        let mut child = std::process::Command::new(BIN)
            .arg("--data-dir")
            .arg(gw.data())
            .args(args)
            .env("USER", OPERATOR)
            .env_remove("TSUZUKU_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        no_panic(&stderr);
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// Review: `--json` was ignored by the commands that change something; each prints one JSON
/// object on stdout, keyed like the audit event it records (`user`, `app`, `site`, `version`).
#[tokio::test]
async fn changing_commands_print_one_json_object_under_json() {
    let gw = TestGateway::init(BIN).unwrap();
    let j = |args: &[&str]| {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = run(&gw, &full);
        let v = json(out.ok());
        assert!(v.is_object(), "{args:?}: {v}");
        v
    };
    run(&gw, &["user", "add", "alice"]).ok();
    let v = j(&["user", "passwd", "alice"]);
    assert_eq!(v["user"], "alice");
    assert_eq!(v["password"].as_str().unwrap().len(), 20, "{v}");
    assert!(password_matches(
        &stored_user(&gw.data(), "alice").await,
        v["password"].as_str().unwrap()
    ));
    assert_eq!(j(&["user", "disable", "alice"])["disabled"], true);
    assert_eq!(j(&["user", "enable", "alice"])["disabled"], false);

    let v = j(&[
        "app",
        "add",
        "wiki",
        "--host",
        "wiki.example.com",
        "--upstream",
        "http://10.0.0.5:8080",
        "--data-class",
        "restricted",
    ]);
    assert_eq!(v["app"], "wiki");
    assert_eq!(v["data_class"], "restricted");
    assert_eq!(j(&["app", "remove", "wiki"])["removed"], true);

    let policy = write_file(&gw.data_dir().join("p"), "allow.cedar", ALLOW_V1);
    let v = j(&["policy", "validate", &policy]);
    assert_eq!(v["valid"], true);
    assert_eq!(v["documents"], serde_json::json!(["allow"]));
    let v = j(&["policy", "apply", &policy]);
    assert_eq!(v["version"], 1);
    assert_eq!(v["previous"], 0);
    assert!(v["diff"].as_str().unwrap().contains("+++ b/allow"), "{v}");
    let v = j(&["policy", "diff", &policy]);
    assert_eq!(v["against"], 1);
    assert_eq!(v["changed"], false);
    let v = j(&["policy", "diff", "--from", "0", "--to", "1"]);
    assert_eq!(v["changed"], true);
    let other = write_file(&gw.data_dir().join("p"), "other.cedar", ALLOW_V1);
    assert_eq!(j(&["policy", "apply", &other])["version"], 2);
    let v = j(&["policy", "rollback", "1"]);
    assert_eq!(v["version"], 3);
    assert_eq!(v["restored"], 1);

    let v = j(&[
        "site",
        "add",
        "tokyo",
        "--host",
        "gw.example.com",
        "--endpoint",
        "192.0.2.10:443",
    ]);
    assert_eq!(v["site"], "tokyo");
    assert_eq!(v["endpoints"], serde_json::json!(["192.0.2.10:443"]));
    let v = j(&[
        "site",
        "exclude",
        "tokyo",
        "--for",
        "1h",
        "--reason",
        "maintenance",
    ]);
    assert!(v["excluded_until_ms"].as_i64().unwrap() > 0, "{v}");
    assert!(j(&["site", "include", "tokyo"])["excluded_until_ms"].is_null());
    assert_eq!(j(&["site", "remove", "tokyo"])["removed"], true);

    let v = j(&["keys", "assertion-rotate"]);
    assert!(v["key"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    let v = j(&["keys", "snapshot-rotate"]);
    assert_eq!(v["created"], true, "{v}");
}

#[test]
fn policy_apply_versions_history_diff_and_audit() {
    let gw = TestGateway::init(BIN).unwrap();
    let d1 = gw.data_dir().join("v1");
    let d2 = gw.data_dir().join("v2");
    let v1 = [
        write_file(&d1, "allow.cedar", ALLOW_V1),
        write_file(&d1, "hours.cedar", HOURS),
    ];
    // v2: `allow` changes, `hours` goes, `mfa` comes.
    let v2 = [
        write_file(&d2, "allow.cedar", ALLOW_V2),
        write_file(&d2, "mfa.cedar", MFA),
    ];

    // A set that does not validate is not applied.
    let bad = write_file(
        &gw.data_dir().join("bad"),
        "allow.cedar",
        "permit (principal, action, resource) when { principal.nosuch };\n",
    );
    let out = run(&gw, &["policy", "apply", &bad, "-m", "broken"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nosuch"), "{out:?}");
    assert_eq!(
        json(run(&gw, &["--json", "policy", "history"]).ok()),
        serde_json::json!([])
    );

    // Version 1.
    let out = run(
        &gw,
        &["policy", "apply", &v1[0], &v1[1], "-m", "working hours"],
    );
    let applied1 = out.ok();
    assert!(applied1.contains("+++ b/allow"), "{applied1}");
    assert!(applied1.contains("+++ b/hours"), "{applied1}");
    assert!(
        applied1
            .trim_end()
            .ends_with("applied as version 1 (was 0)"),
        "{applied1}"
    );

    // The same files again: refused, nothing recorded.
    let out = run(&gw, &["policy", "apply", &v1[0], &v1[1], "-m", "again"]);
    let line = out.one_line_error();
    assert!(line.contains("nothing to change"), "{line}");
    assert!(line.contains("version 1"), "{line}");

    // `policy diff FILES` shows what applying them would change, without changing anything.
    let preview = run(&gw, &["policy", "diff", &v2[0], &v2[1]]);
    let preview = preview.ok().to_owned();
    assert!(
        preview.contains("--- a/allow\n+++ b/allow\n@@ "),
        "{preview}"
    );
    assert!(
        preview.contains("-  resource == Tsuzuku::App::\"wiki\"\n"),
        "{preview}"
    );
    assert!(
        preview.contains("+  resource == Tsuzuku::App::\"crm\"\n"),
        "{preview}"
    );
    assert!(
        preview.contains("--- a/hours\n+++ /dev/null\n"),
        "{preview}"
    );
    assert!(preview.contains("--- /dev/null\n+++ b/mfa\n"), "{preview}");
    // Unchanged lines are context, not changes.
    assert!(
        preview.contains("\n   principal in Tsuzuku::Group::\"employees\",\n"),
        "{preview}"
    );
    // Files identical to the active set: no diff, and it says so (review issue 5: it printed
    // nothing at all).
    assert_eq!(
        run(&gw, &["policy", "diff", &v1[0], &v1[1]]).ok(),
        "no changes against version 1\n"
    );
    assert_eq!(
        json(run(&gw, &["--json", "policy", "history"]).ok())
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Version 2.
    let applied2 = run(
        &gw,
        &[
            "policy",
            "apply",
            &v2[0],
            &v2[1],
            "--message",
            "crm for employees",
        ],
    );
    let applied2 = applied2.ok();
    assert!(applied2.starts_with(&preview), "{applied2}");
    assert!(
        applied2.contains("applied as version 2 (was 1)"),
        "{applied2}"
    );

    // History, newest first, with author and comment.
    let hist = json(run(&gw, &["--json", "policy", "history"]).ok());
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 2, "{hist:?}");
    assert_eq!(hist[0]["version"], 2);
    assert_eq!(hist[0]["author"], ACTOR);
    assert_eq!(hist[0]["comment"], "crm for employees");
    assert_eq!(hist[0]["documents"], serde_json::json!(["allow", "mfa"]));
    assert_eq!(hist[1]["version"], 1);
    assert_eq!(hist[1]["author"], ACTOR);
    assert_eq!(hist[1]["comment"], "working hours");
    assert_eq!(hist[1]["documents"], serde_json::json!(["allow", "hours"]));
    let table = run(&gw, &["policy", "history"]);
    let table = table.ok();
    for col in ["version", "who", "why"] {
        assert!(table.contains(col), "{table}");
    }
    let pos2 = table.find("crm for employees").unwrap();
    let pos1 = table.find("working hours").unwrap();
    assert!(pos2 < pos1, "newest first: {table}");
    assert!(table.contains(ACTOR), "{table}");

    // The change between two versions is the same diff as the preview was.
    assert_eq!(
        run(&gw, &["policy", "diff", "--from", "1", "--to", "2"]).ok(),
        preview
    );
    assert_eq!(run(&gw, &["policy", "diff", "--from", "1"]).ok(), preview);
    let back = run(&gw, &["policy", "diff", "--from", "2", "--to", "1"]);
    let back = back.ok();
    assert!(back.contains("--- /dev/null\n+++ b/hours\n"), "{back}");
    assert!(back.contains("--- a/mfa\n+++ /dev/null\n"), "{back}");
    let line = run(&gw, &["policy", "diff", "--from", "9"]);
    assert!(line.one_line_error().contains("no policy version 9"));
    let line = run(&gw, &["policy", "diff"]);
    assert!(line.one_line_error().contains("--from"));
    let line = run(&gw, &["policy", "diff", &v1[0], "--from", "1"]);
    assert!(line.one_line_error().contains("not both"));
    // Review issue 5: `--to` alone named the wrong mistake ("not both"); it names --from.
    let line = run(&gw, &["policy", "diff", "--to", "1"]);
    let line = line.one_line_error();
    assert!(line.contains("--to 1 needs --from"), "{line}");
    assert!(!line.contains("not both"), "{line}");
    assert_eq!(
        run(&gw, &["policy", "diff", "--from", "2", "--to", "2"]).ok(),
        "no changes between version 2 and version 2\n"
    );

    // The active documents.
    let list = json(run(&gw, &["--json", "policy", "list"]).ok());
    assert_eq!(list["version"], 2);
    assert_eq!(
        list["documents"],
        serde_json::json!([{"id": "allow", "text": ALLOW_V2}, {"id": "mfa", "text": MFA}])
    );
    let table = run(&gw, &["policy", "list"]);
    assert!(table.ok().starts_with("active version: 2\n"), "{table:?}");

    // Each apply is one audit event of kind policy, carrying its diff; the refused and
    // invalid applies left none.
    let events = audit_events(&gw.data(), "policy");
    assert_eq!(events.len(), 2, "{events:?}");
    let d = &events[0]["detail"];
    assert_eq!(events[0]["actor"], ACTOR);
    assert_eq!(d["action"], "policy.apply");
    assert_eq!(d["version"], 1);
    assert_eq!(d["previous"], 0);
    assert_eq!(d["comment"], "working hours");
    assert_eq!(d["documents"], serde_json::json!(["allow", "hours"]));
    assert!(
        applied1.starts_with(d["diff"].as_str().unwrap()),
        "{d:?} vs {applied1}"
    );
    let d = &events[1]["detail"];
    assert_eq!(d["action"], "policy.apply");
    assert_eq!(d["version"], 2);
    assert_eq!(d["previous"], 1);
    assert_eq!(d["comment"], "crm for employees");
    assert_eq!(d["diff"].as_str().unwrap(), preview);
    assert!(
        run(&gw, &["audit", "verify"])
            .ok()
            .starts_with("audit trail intact: 2 events")
    );
}

#[test]
fn policy_rollback_reactivates_an_earlier_version_as_a_new_one() {
    let gw = TestGateway::init(BIN).unwrap();
    let d1 = gw.data_dir().join("v1");
    let d2 = gw.data_dir().join("v2");
    let v1 = [
        write_file(&d1, "allow.cedar", ALLOW_V1),
        write_file(&d1, "hours.cedar", HOURS),
    ];
    let v2 = [
        write_file(&d2, "allow.cedar", ALLOW_V2),
        write_file(&d2, "mfa.cedar", MFA),
    ];
    run(&gw, &["policy", "apply", &v1[0], &v1[1], "-m", "one"]).ok();
    run(&gw, &["policy", "apply", &v2[0], &v2[1], "-m", "two"]).ok();
    let two_to_one = run(&gw, &["policy", "diff", "--from", "2", "--to", "1"])
        .ok()
        .to_owned();
    assert!(!two_to_one.is_empty());

    let out = run(&gw, &["policy", "rollback", "1", "-m", "crm broke"]);
    assert!(
        out.ok().contains("version 1 is active again, as version 3"),
        "{out:?}"
    );

    // The first version's documents are active again, as version 3.
    let list = json(run(&gw, &["--json", "policy", "list"]).ok());
    assert_eq!(list["version"], 3);
    assert_eq!(
        list["documents"],
        serde_json::json!([{"id": "allow", "text": ALLOW_V1}, {"id": "hours", "text": HOURS}])
    );
    let hist = json(run(&gw, &["--json", "policy", "history"]).ok());
    let versions: Vec<i64> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    assert_eq!(hist[0]["author"], ACTOR);
    assert_eq!(hist[0]["comment"], "rollback to version 1: crm broke");
    assert_eq!(hist[0]["documents"], serde_json::json!(["allow", "hours"]));
    assert_eq!(
        run(&gw, &["policy", "diff", "--from", "1", "--to", "3"]).ok(),
        "no changes between version 1 and version 3\n"
    );

    // Rolling back to what is already active, or to a version that never was, is refused.
    let line = run(&gw, &["policy", "rollback", "1"]);
    assert!(line.one_line_error().contains("nothing to change"));
    let line = run(&gw, &["policy", "rollback", "7"]);
    assert!(line.one_line_error().contains("no policy version 7"));

    // The rollback is an audit event of kind policy with its diff.
    let events = audit_events(&gw.data(), "policy");
    assert_eq!(events.len(), 3, "{events:?}");
    let d = &events[2]["detail"];
    assert_eq!(events[2]["actor"], ACTOR);
    assert_eq!(d["action"], "policy.rollback");
    assert_eq!(d["version"], 3);
    assert_eq!(d["previous"], 2);
    assert_eq!(d["comment"], "rollback to version 1: crm broke");
    assert_eq!(d["diff"].as_str().unwrap(), two_to_one);
}

// ---------------------------------------------------------------------------------------------
// 5. policy test with the IIJ examples
// ---------------------------------------------------------------------------------------------

/// `policy test` for `user` to `app` at `at`; returns (exit code, parsed --json output).
fn decide(gw: &TestGateway, user: &str, app: &str, at: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "--json", "policy", "test", "--user", user, "--app", app, "--method", "GET", "--path", "/",
        "--ip", "10.0.0.1", "--at", at,
    ];
    args.extend_from_slice(extra);
    let out = run(gw, &args);
    assert!(
        out.code == 0 || out.code == 3,
        "policy test exits 0 (allow) or 3 (deny): {out:?}"
    );
    let v = json(&out.stdout);
    assert_eq!(v["allowed"], out.code == 0, "{out:?}");
    (out.code, v)
}

/// Status of policy `id` in a `policy test --json` output.
fn status(v: &Value, id: &str) -> String {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("policy {id} not in {v:#}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn determining(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["determining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn policy_test_explains_iij_example_decisions() {
    let gw = TestGateway::init(BIN).unwrap();
    gw.set_config("timezone", "\"Asia/Tokyo\"").unwrap();
    let iij = iij_examples();
    let mut args = vec!["policy", "apply", "-m", "IIJ examples"];
    args.extend(iij.iter().map(String::as_str));
    run(&gw, &args).ok();
    run(&gw, &["user", "add", "emp", "--group", "employees"]).ok();
    run(&gw, &["user", "add", "guest", "--group", "visitors"]).ok();
    for (name, isolated) in [("attendance", false), ("browser", true), ("wiki", true)] {
        let host = format!("{name}.example.com");
        let mut a = vec![
            "app",
            "add",
            name,
            "--host",
            &host,
            "--upstream",
            "http://10.0.0.5:8080",
        ];
        if isolated {
            a.push("--isolated");
        }
        run(&gw, &a).ok();
    }

    // Monday 2026-11-23, 10:00 in Tokyo. Policy documents are named after their files (the
    // `@id` annotations in the examples are kept but not used as ids).
    let monday_10 = "2026-11-23T10:00:00+09:00";

    // An employee to the attendance app in working hours is DENIED. Example 1 permits it and
    // example 2 (working hours) does not object, but examples 3 and 4 both need device
    // posture: 3 forbids non-isolated apps unless the device is a company-issued PC with a
    // current antivirus, 4 forbids everything unless the device is company-issued or the app
    // is isolated and the login used MFA. Without the device flags `policy test` gives no device
    // (a browser without a device certificate), so `context has device` is false and both
    // forbids apply — with MFA too.
    let out = run(
        &gw,
        &[
            "policy",
            "test",
            "--user",
            "emp",
            "--app",
            "attendance",
            "--method",
            "GET",
            "--path",
            "/",
            "--ip",
            "10.0.0.1",
            "--at",
            monday_10,
        ],
    );
    assert_eq!(out.code, 3, "denied exits 3: {out:?}");
    let text = &out.stdout;
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("decision: DENY"), "{text}");
    assert!(first.contains("3-managed-pc"), "{text}");
    assert!(first.contains("4-unmanaged-isolated-mfa"), "{text}");
    assert!(text.contains("device:   unknown"), "{text}");
    assert!(
        text.contains("Mon 2026-11-23 10:00:00 in Asia/Tokyo"),
        "{text}"
    );
    assert!(text.contains("permit 1-allowed-apps"), "{text}");
    let (code, v) = decide(&gw, "emp", "attendance", monday_10, &[]);
    assert_eq!(code, 3);
    assert_eq!(
        determining(&v),
        ["3-managed-pc", "4-unmanaged-isolated-mfa"]
    );
    assert_eq!(status(&v, "1-allowed-apps"), "matched");
    assert_eq!(status(&v, "2-working-hours"), "not_matched");
    assert_eq!(status(&v, "3-managed-pc"), "matched");
    assert_eq!(status(&v, "4-unmanaged-isolated-mfa"), "matched");
    assert_eq!(v["context"]["context"]["weekday"], "Mon");
    assert_eq!(v["context"]["context"]["local_time"], "10:00:00");
    assert_eq!(v["context"]["context"]["device"], Value::Null);
    let (code, v) = decide(&gw, "emp", "attendance", monday_10, &["--mfa"]);
    assert_eq!(code, 3);
    assert_eq!(
        determining(&v),
        ["3-managed-pc", "4-unmanaged-isolated-mfa"]
    );

    // What the examples do allow without a device: an isolated app after a two-factor login.
    let (code, v) = decide(&gw, "emp", "browser", monday_10, &["--mfa"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(determining(&v), ["1-allowed-apps"]);
    assert_eq!(status(&v, "3-managed-pc"), "not_matched");
    assert_eq!(status(&v, "4-unmanaged-isolated-mfa"), "not_matched");
    assert_eq!(v["context"]["principal"]["auth_method"], "password+totp");
    // ... but not after a password-only login (example 4).
    let (code, v) = decide(&gw, "emp", "browser", monday_10, &[]);
    assert_eq!(code, 3);
    assert_eq!(determining(&v), ["4-unmanaged-isolated-mfa"]);

    // With a device (the device flags): a company PC with the current antivirus reaches the
    // non-isolated app; one version older, example 3 forbids it; a personal device reaches
    // the isolated app after a two-factor login and nothing else.
    let pc = |av: &'static str| {
        [
            "--company-issued",
            "--os",
            "windows",
            "10.0.22631",
            "--disk-encrypted",
            "--antivirus",
            av,
        ]
    };
    let (code, v) = decide(&gw, "emp", "attendance", monday_10, &pc("4.18.24030.9"));
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(determining(&v), ["1-allowed-apps"]);
    let device = &v["context"]["context"]["device"];
    assert_eq!(device["company_issued"], true, "{v:#}");
    assert_eq!(device["antivirus_version"], 400182403000009_i64, "{v:#}");
    assert_eq!(device["os"], "windows", "{v:#}");
    let (code, v) = decide(&gw, "emp", "attendance", monday_10, &pc("4.18.24030.8"));
    assert_eq!(code, 3);
    assert_eq!(determining(&v), ["3-managed-pc"]);
    let (code, v) = decide(&gw, "emp", "attendance", monday_10, &["--device", "--mfa"]);
    assert_eq!(code, 3);
    assert_eq!(
        determining(&v),
        ["3-managed-pc", "4-unmanaged-isolated-mfa"]
    );
    let (code, v) = decide(&gw, "emp", "browser", monday_10, &["--device", "--mfa"]);
    assert_eq!(code, 0, "{v:#}");
    // A second factor is MFA, as the gateway records it, and the sign-in's age is given.
    let (_, v) = decide(
        &gw,
        "emp",
        "browser",
        monday_10,
        &["--auth-method", "password+totp", "--auth-age", "600"],
    );
    assert_eq!(v["context"]["principal"]["mfa"], true, "{v:#}");
    assert_eq!(v["context"]["principal"]["auth_age_secs"], 600, "{v:#}");
    // Inputs the gateway never produces are refused, naming the flag.
    for (flag, bad) in [
        ("--auth-method", "bogus"),
        ("--method", "G E T"),
        ("--path", "noslash"),
        ("--path", "/a/../b"),
        ("--antivirus", "x.y"),
    ] {
        let out = run(
            &gw,
            &[
                "policy", "test", "--user", "emp", "--app", "browser", flag, bad,
            ],
        );
        assert_eq!(out.code, 1, "{flag} {bad}: {out:?}");
        assert!(out.stderr.contains(flag), "{flag} {bad}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    }

    // Outside working hours: 18:00 in Tokyo is denied by the working-hours policy alone.
    let (code, v) = decide(
        &gw,
        "emp",
        "browser",
        "2026-11-23T18:00:00+09:00",
        &["--mfa"],
    );
    assert_eq!(code, 3);
    assert_eq!(determining(&v), ["2-working-hours"]);
    assert_eq!(status(&v, "2-working-hours"), "matched");
    let out = run(
        &gw,
        &[
            "policy",
            "test",
            "--user",
            "emp",
            "--app",
            "browser",
            "--mfa",
            "--at",
            "2026-11-23T18:00:00+09:00",
        ],
    );
    assert_eq!(out.code, 3);
    assert!(
        out.stdout
            .starts_with("decision: DENY (denied by forbid policy 2-working-hours)"),
        "{out:?}"
    );
    // The organisation's time zone decides, not the offset written in --at: 00:30 UTC is
    // 09:30 in Tokyo (inside the window), 08:30 UTC is 17:30 in Tokyo (outside).
    let (code, v) = decide(&gw, "emp", "browser", "2026-11-23T00:30:00Z", &["--mfa"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["context"]["context"]["local_time"], "09:30:00");
    let (code, v) = decide(&gw, "emp", "browser", "2026-11-23T08:30:00Z", &["--mfa"]);
    assert_eq!(code, 3);
    assert_eq!(determining(&v), ["2-working-hours"]);
    // Saturday morning.
    let (code, v) = decide(
        &gw,
        "emp",
        "browser",
        "2026-11-28T10:00:00+09:00",
        &["--mfa"],
    );
    assert_eq!(code, 3);
    assert_eq!(v["context"]["context"]["weekday"], "Sat");
    assert_eq!(determining(&v), ["2-working-hours"]);

    // Not on the allow-list: no permit applies (deny by default).
    let (code, v) = decide(&gw, "emp", "wiki", monday_10, &["--mfa"]);
    assert_eq!(code, 3);
    assert_eq!(status(&v, "1-allowed-apps"), "not_matched");
    let (code, v) = decide(&gw, "guest", "browser", monday_10, &["--mfa"]);
    assert_eq!(code, 3);
    assert_eq!(status(&v, "1-allowed-apps"), "not_matched");

    // Unknown user, unknown app, bad time: one line and exit 1 (not 3, which means "denied").
    let out = run(
        &gw,
        &["policy", "test", "--user", "nobody", "--app", "browser"],
    );
    let line = out.one_line_error();
    assert!(line.contains("no user named \"nobody\""), "{line}");
    assert!(out.stdout.is_empty());
    let out = run(&gw, &["policy", "test", "--user", "emp", "--app", "nosuch"]);
    assert!(out.one_line_error().contains("no app named \"nosuch\""));
    let out = run(
        &gw,
        &[
            "policy", "test", "--user", "emp", "--app", "browser", "--at", "monday",
        ],
    );
    assert!(out.one_line_error().contains("--at \"monday\""));

    // Testing does not change the policy set or record decisions.
    let hist = json(run(&gw, &["--json", "policy", "history"]).ok());
    assert_eq!(hist.as_array().unwrap().len(), 1);
    assert!(audit_events(&gw.data(), "decision").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. users and apps
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_commands_validate_input_and_record_every_change() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();

    // A generated password, shown once, that is the stored one.
    let out = run(
        &gw,
        &[
            "user",
            "add",
            "alice",
            "--group",
            "sales",
            "--group",
            "staff",
            "--name",
            "Alice Example",
            "--email",
            "alice@example.com",
        ],
    );
    let text = out.ok();
    assert!(text.starts_with("Added user alice\n"), "{text}");
    assert!(!text.contains("otpauth://"), "{text}");
    let alice_pw = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap()
        .to_owned();
    assert_eq!(alice_pw.len(), 20);
    let alice = stored_user(&data, "alice").await;
    assert!(password_matches(&alice, &alice_pw));
    assert_eq!(alice.display_name, "Alice Example");
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.totp_secret, None);

    // --password-stdin: the password is read (without its newline) and not printed.
    let out = run_stdin(
        &gw,
        &["--json", "user", "add", "bob", "--password-stdin", "--totp"],
        "bob-Secret-1\n",
    );
    let v = json(out.ok());
    assert_eq!(v["user"], "bob");
    assert_eq!(v["password"], Value::Null);
    let bob_uri = v["totp_uri"].as_str().unwrap().to_owned();
    assert!(
        bob_uri.starts_with("otpauth://totp/Tsuzuku:bob?"),
        "{bob_uri}"
    );
    let bob = stored_user(&data, "bob").await;
    assert!(password_matches(&bob, "bob-Secret-1"));
    assert!(!password_matches(&bob, "bob-Secret-1\n"));
    assert_eq!(
        bob.totp_secret.as_deref(),
        Some(totp_secret(&bob_uri).as_str())
    );

    // Refusals: one line, nothing created.
    let line = run(&gw, &["user", "add", "alice"]);
    let line = line.one_line_error();
    assert!(line.contains("\"alice\""), "{line}");
    assert!(line.contains("already taken"), "{line}");
    let long = "x".repeat(65);
    for bad in ["bad name", "", "a/b", "ünï", "semi;colon", long.as_str()] {
        let out = run(&gw, &["user", "add", bad]);
        let line = out.one_line_error();
        assert!(line.contains("is not valid"), "{bad:?}: {line}");
        assert!(line.contains(&format!("{bad:?}")), "{bad:?}: {line}");
    }
    let out = run(&gw, &["user", "add", "carol", "--group", "no spaces"]);
    assert!(
        out.one_line_error()
            .contains("group \"no spaces\" is not valid")
    );
    let out = run_stdin(&gw, &["user", "add", "carol", "--password-stdin"], "\n");
    assert!(out.one_line_error().contains("empty"));
    for name in ["disable", "enable", "reset-mfa", "passwd"] {
        let out = run(&gw, &["user", name, "nosuch"]);
        assert!(
            out.one_line_error().contains("no user named \"nosuch\""),
            "user {name}: {out:?}"
        );
    }

    // Listing: JSON and table.
    let list = json(run(&gw, &["--json", "user", "list"]).ok());
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"], "carol was never created: {list:#}");
    assert_eq!(list[0]["groups"], serde_json::json!(["sales", "staff"]));
    assert_eq!(list[0]["totp"], false);
    assert_eq!(list[1]["totp"], true);
    assert_eq!(list[1]["disabled"], false);
    assert!(
        !list.to_string().contains("argon2"),
        "no hashes in listings"
    );
    let table = run(&gw, &["user", "list"]);
    let table = table.ok();
    for cell in [
        "user",
        "groups",
        "state",
        "Alice Example",
        "sales,staff",
        "active",
    ] {
        assert!(table.contains(cell), "{cell}: {table}");
    }

    // Disable and enable.
    let out = run(&gw, &["user", "disable", "bob"]);
    assert!(out.ok().contains("Disabled bob"));
    let list = json(run(&gw, &["--json", "user", "list"]).ok());
    assert_eq!(list[1]["disabled"], true);
    let table = run(&gw, &["user", "list"]);
    let bob_row = table.ok().lines().find(|l| l.contains(" bob ")).unwrap();
    assert!(bob_row.contains("disabled"), "{bob_row}");
    run(&gw, &["user", "enable", "bob"]).ok();
    let list = json(run(&gw, &["--json", "user", "list"]).ok());
    assert_eq!(list[1]["disabled"], false);

    // A new TOTP secret replaces the old one.
    let out = run(&gw, &["user", "reset-mfa", "bob"]);
    let text = out.ok();
    let new_uri = text
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://"))
        .unwrap();
    assert!(new_uri.starts_with("otpauth://totp/Tsuzuku:bob?"), "{text}");
    assert_ne!(totp_secret(new_uri), totp_secret(&bob_uri));
    let bob = stored_user(&data, "bob").await;
    assert_eq!(
        bob.totp_secret.as_deref(),
        Some(totp_secret(new_uri).as_str())
    );

    // New passwords: from stdin, and generated.
    let out = run_stdin(
        &gw,
        &["user", "passwd", "alice", "--password-stdin"],
        "alice-New-pw-2\n",
    );
    assert!(!out.ok().contains("alice-New-pw-2"));
    let alice = stored_user(&data, "alice").await;
    assert!(password_matches(&alice, "alice-New-pw-2"));
    assert!(!password_matches(&alice, &alice_pw));
    let out = run(&gw, &["user", "passwd", "alice"]);
    let generated = out
        .ok()
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap()
        .to_owned();
    assert!(password_matches(
        &stored_user(&data, "alice").await,
        &generated
    ));

    // Every change, and only the changes that happened, in order, attributed to the operator;
    // no password or TOTP secret in the audit trail.
    assert_eq!(
        admin_actions(&data),
        pairs(&[
            ("user.add", "alice"),
            ("user.add", "bob"),
            ("user.disable", "bob"),
            ("user.enable", "bob"),
            ("user.reset_mfa", "bob"),
            ("user.passwd", "alice"),
            ("user.passwd", "alice"),
        ])
    );
    let events = audit_events(&data, "admin");
    assert!(events.iter().all(|e| e["actor"] == ACTOR), "{events:?}");
    assert_eq!(
        events[0]["detail"]["groups"],
        serde_json::json!(["sales", "staff"])
    );
    assert_eq!(events[1]["detail"]["totp"], true);
    let all = events
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        alice_pw.as_str(),
        "bob-Secret-1",
        "alice-New-pw-2",
        generated.as_str(),
        &totp_secret(&bob_uri),
        &totp_secret(new_uri),
    ] {
        assert!(
            !all.contains(secret),
            "secret {secret:?} in the audit trail"
        );
    }
}

#[test]
fn app_commands_validate_input_and_record_every_change() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();

    let out = run(
        &gw,
        &[
            "app",
            "add",
            "wiki",
            "--host",
            "wiki.example.com",
            "--upstream",
            "http://10.0.0.5:8080",
            "--data-class",
            "confidential",
            "--critical",
        ],
    );
    assert!(
        out.ok()
            .contains("Added app wiki at https://wiki.example.com/ -> http://10.0.0.5:8080"),
        "{out:?}"
    );
    let portal = gw.host("auth");
    let list_before = run(&gw, &["--json", "app", "list"]).ok().to_owned();

    // (arguments, text the one error line must contain)
    let refused: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["crm", "--host", "crm.example.com", "--upstream", "ftp://x"],
            "upstream \"ftp://x\" must be an http:// URL",
        ),
        (
            vec![
                "crm",
                "--host",
                "crm.example.com",
                "--upstream",
                "https://x",
            ],
            "must be an http:// URL",
        ),
        (
            vec![
                "crm",
                "--host",
                "crm.example.com",
                "--upstream",
                "http://x/path",
            ],
            "upstream \"http://x/path\" must be scheme, host and port only",
        ),
        (
            vec![
                "crm",
                "--host",
                "crm.example.com",
                "--upstream",
                "http://u@x:80",
            ],
            "must be scheme, host and port only",
        ),
        (
            vec!["crm", "--host", "crm.example.com", "--upstream", "http://"],
            "must be scheme, host and port only",
        ),
        (
            vec!["crm", "--host", "UPPER.example", "--upstream", "http://x"],
            "host \"UPPER.example\" is not valid",
        ),
        (
            vec![
                "crm",
                "--host",
                "crm.example.com:0",
                "--upstream",
                "http://x",
            ],
            "host \"crm.example.com:0\" is not valid",
        ),
        (
            vec!["crm", "--host=-crm.example.com", "--upstream", "http://x"],
            "is not valid",
        ),
        (
            vec!["crm", "--host", &portal, "--upstream", "http://x"],
            "sign-in portal",
        ),
        (
            vec![
                "crm",
                "--host",
                "wiki.example.com",
                "--upstream",
                "http://x",
            ],
            "host \"wiki.example.com\" is already used by app \"wiki\"",
        ),
        (
            vec![
                "wiki",
                "--host",
                "wiki2.example.com",
                "--upstream",
                "http://x",
            ],
            "\"wiki\" already exists",
        ),
        (
            vec![
                "bad name",
                "--host",
                "crm.example.com",
                "--upstream",
                "http://x",
            ],
            "app name \"bad name\" is not valid",
        ),
        (
            vec![
                "crm",
                "--host",
                "crm.example.com",
                "--upstream",
                "http://x",
                "--data-class",
                "top secret",
            ],
            "data class \"top secret\" is not one of public, internal, confidential, restricted",
        ),
    ];
    for (args, expected) in &refused {
        let mut full = vec!["app", "add"];
        full.extend_from_slice(args);
        let out = run(&gw, &full);
        let line = out.one_line_error();
        assert!(
            line.contains(expected),
            "{args:?}: expected {expected:?} in {line}"
        );
    }
    assert_eq!(
        run(&gw, &["--json", "app", "list"]).ok(),
        list_before,
        "refused adds changed nothing"
    );

    // Listing.
    let list = json(&list_before);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "wiki");
    assert_eq!(list[0]["host"], "wiki.example.com");
    assert_eq!(list[0]["upstream"], "http://10.0.0.5:8080");
    assert_eq!(list[0]["data_class"], "confidential");
    assert_eq!(list[0]["critical"], true);
    assert_eq!(list[0]["isolated"], false);
    let table = run(&gw, &["app", "list"]);
    let table = table.ok();
    for cell in [
        "app",
        "host",
        "upstream",
        "wiki.example.com",
        "confidential",
    ] {
        assert!(table.contains(cell), "{cell}: {table}");
    }

    // Removal frees the name and the host.
    assert!(
        run(&gw, &["app", "remove", "wiki"])
            .ok()
            .contains("Removed app wiki")
    );
    let out = run(&gw, &["app", "remove", "wiki"]);
    assert!(out.one_line_error().contains("no app named \"wiki\""));
    assert_eq!(
        json(run(&gw, &["--json", "app", "list"]).ok()),
        serde_json::json!([])
    );
    run(
        &gw,
        &[
            "app",
            "add",
            "wiki2",
            "--host",
            "wiki.example.com",
            "--upstream",
            "http://[::1]:9000",
            "--isolated",
        ],
    )
    .ok();

    assert_eq!(
        admin_actions(&data),
        pairs(&[
            ("app.add", "wiki"),
            ("app.remove", "wiki"),
            ("app.add", "wiki2")
        ])
    );
    let events = audit_events(&data, "admin");
    assert!(events.iter().all(|e| e["actor"] == ACTOR), "{events:?}");
    let d = &events[0]["detail"];
    assert_eq!(d["host"], "wiki.example.com");
    assert_eq!(d["upstream"], "http://10.0.0.5:8080");
    assert_eq!(d["data_class"], "confidential");
    assert_eq!(d["critical"], true);
    assert_eq!(events[2]["detail"]["isolated"], true);
}

// ---------------------------------------------------------------------------------------------
// 7. tamper detection
// ---------------------------------------------------------------------------------------------

/// Review issues 2 and 3: `app add` took a misspelt or capitalised data class (a policy on
/// `data_class == "confidential"` then never applied), an upstream with a port out of range
/// or without a host, and a host with `:443`, which no Host header ever matches.
#[test]
fn app_add_refuses_unknown_data_classes_bad_upstreams_and_hosts_no_request_matches() {
    let gw = TestGateway::init(BIN).unwrap();
    let refused: [(&[&str], &str); 7] = [
        (
            &["--data-class", "confidental"],
            "data class \"confidental\" is not one of public, internal, confidential, restricted",
        ),
        (
            &["--data-class", "Confidential"],
            "data class \"Confidential\" is not one of public, internal, confidential, restricted",
        ),
        (
            &["--upstream", "http://10.0.0.5:99999"],
            "upstream \"http://10.0.0.5:99999\" has port \"99999\": use a port from 1 to 65535",
        ),
        (
            &["--upstream", "http://:80"],
            "upstream \"http://:80\" has no host",
        ),
        (
            &["--upstream", "http://10.0.0.5:"],
            "has port \"\": use a port from 1 to 65535",
        ),
        (
            &["--upstream", "http://bad_name:80"],
            "\"bad_name\" is not a host name or IP address",
        ),
        (
            &["--host", "crm.example.com:443"],
            "host \"crm.example.com:443\": browsers leave the default port 443 out",
        ),
    ];
    for (change, expected) in refused {
        let mut args = vec!["app", "add", "crm"];
        args.extend_from_slice(change);
        if !change.contains(&"--host") {
            args.extend_from_slice(&["--host", "crm.example.com"]);
        }
        if !change.contains(&"--upstream") {
            args.extend_from_slice(&["--upstream", "http://10.0.0.5:8080"]);
        }
        let out = run(&gw, &args);
        let line = out.one_line_error();
        assert!(
            line.contains(expected),
            "{args:?}: expected {expected:?} in {line}"
        );
    }
    assert_eq!(
        json(run(&gw, &["--json", "app", "list"]).ok()),
        serde_json::json!([]),
        "refused adds changed nothing"
    );
    // Every documented class, a port other than 443 and an IPv6 upstream are fine.
    for (i, class) in ["public", "internal", "confidential", "restricted"]
        .iter()
        .enumerate()
    {
        let name = format!("app{i}");
        let host = format!("app{i}.example.com:8443");
        run(
            &gw,
            &[
                "app",
                "add",
                &name,
                "--host",
                &host,
                "--upstream",
                "http://[2001:db8::5]:8080",
                "--data-class",
                class,
            ],
        )
        .ok();
    }
    let apps = json(run(&gw, &["--json", "app", "list"]).ok());
    assert_eq!(apps.as_array().unwrap().len(), 4, "{apps}");
}

#[tokio::test]
async fn audit_verify_names_the_event_altered_in_the_database() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();
    run(&gw, &["user", "add", "carol", "--group", "staff"]).ok();
    run(&gw, &["user", "add", "dave", "--group", "admins"]).ok();
    run(
        &gw,
        &[
            "app",
            "add",
            "crm",
            "--host",
            "crm.example.com",
            "--upstream",
            "http://10.0.0.7:80",
        ],
    )
    .ok();
    run(&gw, &["user", "disable", "carol"]).ok();

    let out = run(&gw, &["audit", "verify"]);
    assert!(
        out.ok()
            .starts_with("audit trail intact: 4 events, head #4"),
        "{out:?}"
    );
    let v = json(run(&gw, &["--json", "audit", "verify"]).ok());
    assert_eq!(v["intact"], true);
    assert_eq!(v["checked"], 4);

    // Someone with write access to the database hides that dave was made an admin.
    let events = audit_events(&data, "admin");
    let target = events
        .iter()
        .find(|e| e["detail"]["user"] == "dave")
        .unwrap();
    let seq = target["seq"].as_i64().unwrap();
    let root = open_store(&data).await;
    let original: String =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE tenant_id = $1 AND seq = $2")
            .bind(tsuzuku_store::DEFAULT_TENANT)
            .bind(seq)
            .fetch_one(root.raw_pool())
            .await
            .unwrap();
    assert!(original.contains("\"admins\""), "{original}");
    let forged = original.replace("\"admins\"", "\"staff\"");
    let set_detail = |detail: String| {
        let pool = root.raw_pool().clone();
        async move {
            let r = sqlx::query(
                "UPDATE audit_events SET detail = $1 WHERE tenant_id = $2 AND seq = $3",
            )
            .bind(detail)
            .bind(tsuzuku_store::DEFAULT_TENANT)
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(r.rows_affected(), 1);
        }
    };
    set_detail(forged).await;
    let shown = audit_events(&data, "admin");
    assert_eq!(
        shown.iter().find(|e| e["seq"] == seq).unwrap()["detail"]["groups"],
        serde_json::json!(["staff"]),
        "the forgery is what `audit tail` now shows"
    );

    let out = run(&gw, &["audit", "verify"]);
    assert_eq!(out.code, 2, "tampering exits 2: {out:?}");
    no_panic(&out.stderr);
    assert!(
        out.stderr.contains(&format!("event #{seq} was altered")),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains(&format!("#{}", seq + 1)),
        "only the altered event is blamed: {out:?}"
    );
    let out = run(&gw, &["--json", "audit", "verify"]);
    assert_eq!(out.code, 2, "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["intact"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v:#}");
    assert!(
        problems[0]
            .as_str()
            .unwrap()
            .contains(&format!("event #{seq} ")),
        "{v:#}"
    );

    // Putting the original back makes the chain verify again: the check is exact.
    set_detail(original).await;
    root.close().await;
    let out = run(&gw, &["audit", "verify"]);
    assert!(
        out.ok().starts_with("audit trail intact: 4 events"),
        "{out:?}"
    );
}

/// A copy of data directory `src` (no process has it open), for one tampering each.
fn copy_data(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_data(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// Runs raw SQL on the store of `data`, as someone with write access to the database would.
async fn tamper(data: &Path, statements: &[&str]) {
    let root = open_store(data).await;
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(root.raw_pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    root.close().await;
}

/// `audit verify` on `data` must exit 2 and name every expected finding on stderr.
#[track_caller]
fn assert_tampering(data: &Path, expected: &[&str]) {
    let out = run_in(data, &["audit", "verify"], None);
    assert_eq!(out.code, 2, "tampering exits 2: {out:#?}");
    no_panic(&out.stderr);
    for e in expected {
        assert!(out.stderr.contains(e), "expected {e:?} in {out:#?}");
    }
}

/// Review findings: `audit verify` ignored the stored head row and read only events numbered
/// from 1 (tail truncation, a deleted head row, a forged event past the head and a row
/// numbered -5 all exited 0 "intact"), stopped with exit 1 at the first unreadable row, and
/// passed a detail with a duplicate key that SQL reads differently. Each is now a finding
/// naming the event, with exit code 2; `--json` prints the head to keep elsewhere.
#[tokio::test]
async fn audit_verify_checks_the_head_row_every_row_and_the_stored_text() {
    let gw = TestGateway::init(BIN).unwrap();
    for name in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        run(&gw, &["user", "add", name, "--group", "staff"]).ok();
    }
    let out = run(&gw, &["audit", "verify"]);
    let text = out.ok();
    assert!(
        text.starts_with("audit trail intact: 6 events, head #6 "),
        "{out:?}"
    );
    let v = json(run(&gw, &["--json", "audit", "verify"]).ok());
    assert_eq!(v["intact"], true, "{v:#}");
    assert_eq!(v["head"]["seq"], 6, "{v:#}");
    let head_hash = v["head"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(head_hash.len(), 64, "{v:#}");
    assert!(text.trim_end().ends_with(&head_hash), "{text}");

    let scratch = tempfile::tempdir().unwrap();
    let case = |name: &str| {
        let data = scratch.path().join(name);
        copy_data(&gw.data(), &data);
        data
    };
    let t = tsuzuku_store::DEFAULT_TENANT;

    // Tail truncation: events 5 and 6 deleted, the head row still says 6.
    let data = case("truncated");
    tamper(
        &data,
        &[&format!(
            "DELETE FROM audit_events WHERE tenant_id = '{t}' AND seq >= 5"
        )],
    )
    .await;
    assert_tampering(&data, &["recorded head is event #6", "events #5 to #6"]);

    // The head row deleted (the next append would be refused: run an audit verification).
    let data = case("headless");
    tamper(
        &data,
        &[&format!("DELETE FROM audit_head WHERE tenant_id = '{t}'")],
    )
    .await;
    assert_tampering(&data, &["events up to #6 but no recorded head"]);

    // A forged event #7, hashed and linked correctly, behind a head that says 6.
    let data = case("forged");
    let root = open_store(&data).await;
    let mut ev = root
        .tenant(t)
        .audit_events(2, 1)
        .await
        .unwrap()
        .remove(0)
        .event;
    root.close().await;
    ev.detail =
        serde_json::json!({"action": "user.add", "user": "mallory", "groups": ["admins"]}).into();
    let hash = tsuzuku_audit::chain_hash(7, &head_hash, &ev);
    let insert = |seq: i64, hash: &str, prev: &str| {
        format!(
            "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail) \
             VALUES ('{t}', {seq}, '{prev}', '{hash}', {}, 'admin', 'mallory', '{}')",
            ev.time_ms,
            ev.detail.as_str()
        )
    };
    tamper(&data, &[&insert(7, &hash, &head_hash)]).await;
    assert_tampering(&data, &["event #7 past the recorded head, event #6"]);

    // A row numbered -5 (which `audit tail` shows).
    let data = case("negative");
    tamper(&data, &[&insert(-5, &hash, tsuzuku_audit::GENESIS_HASH)]).await;
    assert_tampering(&data, &["a row numbered -5"]);

    // Unreadable rows are findings, and verification goes on to the removal after them.
    let data = case("unreadable");
    tamper(
        &data,
        &[
            &format!("UPDATE audit_events SET kind = 'bogus' WHERE tenant_id = '{t}' AND seq = 2"),
            &format!(
                "UPDATE audit_events SET detail = '{{\"x\":' WHERE tenant_id = '{t}' AND seq = 3"
            ),
            &format!("UPDATE audit_events SET time_ms = 'abc' WHERE tenant_id = '{t}' AND seq = 4"),
            &format!("DELETE FROM audit_events WHERE tenant_id = '{t}' AND seq = 5"),
        ],
    )
    .await;
    assert_tampering(
        &data,
        &[
            "event #2 was altered: its stored row cannot be read",
            "\"bogus\"",
            "event #3 was altered: its stored row cannot be read as an event (its detail is not JSON",
            "event #4 was altered: its stored row cannot be read as an event (its time_ms is not an integer but \"abc\")",
            "event #5 was removed",
        ],
    );
    let out = run_in(&data, &["--json", "audit", "verify"], None);
    assert_eq!(out.code, 2, "{out:#?}");
    assert_eq!(json(&out.stdout)["problems"].as_array().unwrap().len(), 4);

    // A duplicate key: serde keeps the last value, SQL's json_extract reads the first.
    let data = case("duplicate-key");
    let root = open_store(&data).await;
    let original: String =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE tenant_id = $1 AND seq = 3")
            .bind(t)
            .fetch_one(root.raw_pool())
            .await
            .unwrap();
    let forged = format!(
        "{{\"action\":\"FORGED\",{}",
        original.strip_prefix('{').unwrap()
    );
    sqlx::query("UPDATE audit_events SET detail = $1 WHERE tenant_id = $2 AND seq = 3")
        .bind(&forged)
        .bind(t)
        .execute(root.raw_pool())
        .await
        .unwrap();
    let seen: String = sqlx::query_scalar(
        "SELECT json_extract(detail, '$.action') FROM audit_events WHERE tenant_id = $1 AND seq = 3",
    )
    .bind(t)
    .fetch_one(root.raw_pool())
    .await
    .unwrap();
    assert_eq!(seen, "FORGED", "what a SQL query of the database reads");
    root.close().await;
    assert_tampering(
        &data,
        &["event #3 was altered: its stored detail is not the exact text"],
    );
}
