//! End-to-end tests of encryption at rest through the real `tsuzuku` binary: a new data
//! directory encrypts from the start, the raw database holds no TOTP secret or e-mail address,
//! `tsuzuku keys status` and `keys rotate` work, and a missing master key is a clear one-line
//! error naming the key file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use serde_json::Value;
use sqlx::Row;
use tsuzuku_store::keyring::Keyring;
use tsuzuku_testkit::gateway::TestGateway;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const EMAIL: &str = "carol.private@example.org";
const NAME: &str = "Carol Confidential";

/// Every value of the users table's encrypted columns, and the signing keys' secrets, raw.
async fn raw_values(data: &Path) -> Vec<String> {
    let root =
        tsuzuku_store::StoreRoot::open(&format!("sqlite://{}", data.join("store.db").display()))
            .await
            .unwrap();
    let mut out = Vec::new();
    for row in sqlx::query("SELECT email, display_name, totp_secret FROM users")
        .fetch_all(root.raw_pool())
        .await
        .unwrap()
    {
        for col in ["email", "display_name", "totp_secret"] {
            if let Some(v) = row.try_get::<Option<String>, _>(col).unwrap() {
                out.push(v);
            }
        }
    }
    for row in sqlx::query("SELECT secret_key FROM signing_keys")
        .fetch_all(root.raw_pool())
        .await
        .unwrap()
    {
        out.push(row.try_get("secret_key").unwrap());
    }
    root.close().await;
    out
}

/// The base32 secret of an otpauth:// URI.
fn totp_secret(uri: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("tsuzuku: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_the_master_key_rotates() {
    let gw = TestGateway::init(BIN).unwrap();
    let data = gw.data();
    let key_file = data.join("keys").join("master.key");
    assert!(key_file.exists(), "init creates the master key file");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file mode {mode:o}");
    }

    let out = gw
        .cli_ok(&[
            "--json", "user", "add", "carol", "--name", NAME, "--email", EMAIL, "--totp",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let secret = totp_secret(v["totp_uri"].as_str().unwrap());
    assert!(secret.len() >= 16, "{secret}");

    // keys status: master key id and source, a data key, everything sealed.
    let status: Value =
        serde_json::from_str(&gw.cli_ok(&["--json", "keys", "status"]).unwrap()).unwrap();
    let old_id = status["master_key_id"].as_str().unwrap().to_owned();
    assert_eq!(old_id.len(), 16, "{status}");
    assert!(
        status["master_key_source"]
            .as_str()
            .unwrap()
            .contains("keys/master.key"),
        "{status}"
    );
    let tenant = &status["tenants"][0];
    assert_eq!(tenant["tenant"], "default", "{status}");
    assert_eq!(tenant["plaintext"], 0, "{status}");
    assert!(tenant["sealed"].as_u64().unwrap() >= 3, "{status}");
    assert_eq!(tenant["data_keys"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(tenant["data_keys"][0]["master_id"], old_id.as_str());
    let text = gw.cli_ok(&["keys", "status"]).unwrap();
    assert!(text.contains(&format!("master key: {old_id}")), "{text}");

    // The raw database holds none of the plaintexts; every value is sealed.
    let raw = raw_values(&data).await;
    assert!(raw.len() >= 3, "{raw:?}");
    for v in &raw {
        assert!(Keyring::is_sealed(v), "not sealed: {v}");
        assert!(!v.contains(&secret), "TOTP secret in the clear: {v}");
        assert!(!v.contains(EMAIL) && !v.contains("carol.private"), "{v}");
        assert!(!v.contains(NAME), "{v}");
    }
    let db = std::fs::read(data.join("store.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains(&secret) && !db.contains(EMAIL));

    // Rotation to a new key file, created by the command.
    let new_key = gw.data_dir().join("new-master.key");
    let out = gw
        .cli_ok(&[
            "keys",
            "rotate",
            "--new-key-file",
            new_key.to_str().unwrap(),
        ])
        .unwrap();
    assert!(new_key.exists());
    assert!(out.contains("master_key_file"), "{out}");
    assert!(out.contains(new_key.to_str().unwrap()), "{out}");
    // The old key no longer opens the store.
    let line = one_line_error(&gw.cli(&["user", "list"]).unwrap());
    assert!(line.contains("does not unwrap data key"), "{line}");
    assert!(line.contains(&old_id), "{line}");

    // Point [keys] (written by init) at the new key, as the command said.
    let cfg = data.join("tsuzuku.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("[keys]\n"), "{text}");
    let text = text.replace(
        "[keys]\n",
        &format!(
            "[keys]\nmaster_key_file = {:?}\n",
            new_key.to_str().unwrap()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let users: Value =
        serde_json::from_str(&gw.cli_ok(&["--json", "user", "list"]).unwrap()).unwrap();
    let carol = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "carol" || u["username"] == "carol")
        .unwrap_or_else(|| panic!("no carol in {users}"));
    assert_eq!(carol["email"], EMAIL, "{carol}");
    assert_eq!(carol["display_name"], NAME, "{carol}");
    assert_eq!(carol["totp"], true, "{carol}");
    let status: Value =
        serde_json::from_str(&gw.cli_ok(&["--json", "keys", "status"]).unwrap()).unwrap();
    assert_ne!(status["master_key_id"], old_id.as_str());
    assert_eq!(
        status["tenants"][0]["data_keys"][0]["master_id"],
        status["master_key_id"]
    );
    // The rotation is in the audit trail.
    let audit = gw.cli_ok(&["audit", "tail", "--kind", "admin"]).unwrap();
    assert!(audit.contains("keys.rotate"), "{audit}");
    gw.cli_ok(&["audit", "verify"]).unwrap();

    // Without the key file, commands refuse with one line naming it; no new key is made.
    std::fs::remove_file(&new_key).unwrap();
    let line = one_line_error(&gw.cli(&["user", "list"]).unwrap());
    assert!(line.contains("no master key file at"), "{line}");
    assert!(line.contains(new_key.to_str().unwrap()), "{line}");
    assert!(
        !new_key.exists(),
        "a missing key is never replaced by a new one"
    );
}
