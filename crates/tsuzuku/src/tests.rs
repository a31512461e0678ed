//! Unit tests of `main.rs`: the one-line error printer.

#[derive(Debug)]
struct Wrapped(std::io::Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config file /tmp: {}", self.0)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn one_line_leaves_out_a_cause_the_message_already_shows() {
    let io = std::io::Error::other("Is a directory (os error 21)");
    let e = anyhow::Error::new(Wrapped(io)).context("loading the configuration");
    assert_eq!(
        super::one_line(&e),
        "loading the configuration: config file /tmp: Is a directory (os error 21)"
    );
}

#[test]
fn one_line_keeps_distinct_causes() {
    let e = anyhow::anyhow!("root cause").context("outer");
    assert_eq!(super::one_line(&e), "outer: root cause");
}
