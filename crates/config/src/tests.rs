#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/tsuzuku.toml"))
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn defaults_round_trip_through_toml() {
    let text = Config::default().to_toml().unwrap();
    assert_eq!(parse(&text).unwrap(), Config::default());
}

#[test]
fn unknown_key_names_file_and_key() {
    let err = parse("[gateway]\nlisen = \"127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/tsuzuku.toml"), "{err}");
    assert!(err.contains("lisen"), "{err}");
    assert!(err.contains("listen"), "expected keys are listed: {err}");
}

#[test]
fn wrong_type_names_key_and_expected_form() {
    let err = parse("[session]\nidle_timeout_secs = \"thirty\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_timeout_secs"), "{err}");
    assert!(err.contains("expected i64"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn bad_listen_address() {
    let err = parse("[gateway]\nlisten = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn unknown_time_zone() {
    let err = parse("[gateway]\ntimezone = \"Mars/Olympus\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("gateway.timezone"), "{err}");
    assert!(err.contains("Mars/Olympus"), "{err}");
}

#[test]
fn bad_portal_host() {
    for bad in [
        "Auth.Example.com",
        "auth..x",
        "a:0",
        "a:99999",
        "evil.com/x",
        "",
    ] {
        let text = format!("[gateway]\nportal_host = {bad:?}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("gateway.portal_host"), "{bad}: {err}");
    }
    assert!(parse("[gateway]\nportal_host = \"auth.example.com:443\"\n").is_ok());
}

#[test]
fn trusted_proxies_parse_as_cidrs() {
    let c = parse("[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\n").unwrap();
    assert_eq!(c.gateway.trusted_proxies.len(), 2);
    let err = parse("[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("trusted_proxies"), "{err}");
}

#[test]
fn path_parameters_are_off_unless_turned_on() {
    assert!(!parse("").unwrap().gateway.path_parameters);
    assert!(
        parse("[gateway]\npath_parameters = true\n")
            .unwrap()
            .gateway
            .path_parameters
    );
    let err = parse("[gateway]\npath_parameters = \"yes\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("path_parameters"), "{err}");
}

#[test]
fn session_timeouts_must_be_ordered() {
    let err = parse("[session]\nidle_timeout_secs = 3600\nabsolute_timeout_secs = 60\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("session.absolute_timeout_secs"), "{err}");
}

#[test]
fn oidc_requires_openid_scope() {
    let err = parse(
        "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"x\"\nscopes = [\"profile\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("oidc.scopes"), "{err}");
    let ok = parse("[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"x\"\n").unwrap();
    assert_eq!(ok.oidc.unwrap().groups_claim, "groups");
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.toml");
    let err = Config::load(&p).unwrap_err().to_string();
    assert!(err.contains("nope.toml"), "{err}");
}

#[test]
fn keys_default_to_encryption_with_the_data_dir_key_file() {
    let c = parse("").unwrap();
    assert!(c.keys.enabled);
    assert_eq!(
        c.keys.source(),
        MasterKeySource::File(PathBuf::from("keys/master.key"))
    );
    let c = parse("[keys]\nmaster_key_env = \"TSUZUKU_MASTER_KEY\"\n").unwrap();
    assert_eq!(
        c.keys.source(),
        MasterKeySource::Env("TSUZUKU_MASTER_KEY".into())
    );
    let c = parse("[keys]\nmaster_key_command = [\"cat\", \"/run/key\"]\n").unwrap();
    assert_eq!(
        c.keys.source(),
        MasterKeySource::Command(vec!["cat".into(), "/run/key".into()])
    );
    let c = parse("[keys]\nenabled = false\nmaster_key_file = \"/etc/k\"\n").unwrap();
    assert!(!c.keys.enabled);
    assert_eq!(
        c.keys.source(),
        MasterKeySource::File(PathBuf::from("/etc/k"))
    );
}

#[test]
fn keys_refuse_two_sources_and_bad_forms() {
    let err = parse("[keys]\nmaster_key_file = \"k\"\nmaster_key_env = \"K\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/tsuzuku.toml"), "{err}");
    assert!(err.contains("key `keys`"), "{err}");
    assert!(err.contains("at most one"), "{err}");
    let err = parse("[keys]\nmaster_key_env = \"1 BAD\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys.master_key_env"), "{err}");
    assert!(err.contains("\"1 BAD\""), "{err}");
    let err = parse("[keys]\nmaster_key_command = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys.master_key_command"), "{err}");
    let err = parse("[keys]\nmaster_key_file = \"\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys.master_key_file"), "{err}");
    let err = parse("[keys]\nmaster_key = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("master_key"), "{err}");
}

#[test]
fn control_snapshot_and_failover_settings_are_checked() {
    for (text, key) in [
        (
            "[store]\nauto_promote_after_ms = 10\n",
            "store.auto_promote_after_ms",
        ),
        (
            "[store]\nfencing_witness = \"nohost\"\n",
            "store.fencing_witness",
        ),
        (
            "[control]\npublish_interval_ms = 5\n",
            "control.publish_interval_ms",
        ),
        (
            "[snapshot]\ncontrol_url = \"http://c:1\"\ntrust = \"t.pem\"\n",
            "snapshot.control_url",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let ok = parse(
        "[store]\nurl = \"postgres://a/b\"\nauto_promote_after_ms = 5000\nfencing_witness = \"w.example:443\"\n\
         [snapshot]\ncontrol_url = \"https://c:9443\"\ntrust = \"t.pem\"\nsite = \"tokyo\"\n",
    )
    .unwrap();
    assert_eq!(ok.store.auto_promote_after_ms, Some(5000));
    assert_eq!(ok.snapshot.unwrap().site.as_deref(), Some("tokyo"));
}
