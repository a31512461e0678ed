#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn config() -> ConnectorConfig {
    ConnectorConfig::new(
        vec![Site {
            name: "A".to_owned(),
            preference: 1,
            host: "gw.a.example.com".to_owned(),
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
        }],
        vec!["example.com".to_owned()],
    )
}

#[test]
fn defaults_fit_together() {
    config().validate().unwrap();
}

#[test]
fn settings_that_do_not_fit_together_are_explained() {
    let mut c = config();
    c.probe.timeout = Duration::from_secs(1);
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "settings do not fit together: the probe timeout (1 s) must be shorter than the failure budget down_after (1 s), or one slow probe would count as an outage"
    );
    let mut c = config();
    c.select.stale_after = Duration::from_millis(1200);
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "settings do not fit together: stale_after (1.2 s) must be longer than the probe interval plus the probe timeout (1.3 s)"
    );
    let mut c = config();
    c.evaluate_every = Duration::ZERO;
    assert!(matches!(c.validate(), Err(ConnectorError::EvaluateEvery)));
}

#[tokio::test]
async fn start_refuses_a_bad_site_list_before_listening() {
    let mut c = config();
    c.sites.clear();
    c.proxy.listen = "127.0.0.1:0".parse().unwrap();
    let err = Connector::start(c).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "the site list is empty: configure at least one gateway site"
    );
}
