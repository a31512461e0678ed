//! The signed internet allowlist of the `controlled` DR mode (`TSZAL1`, docs/CONTINUITY.md "The
//! signed allowlist") and the host patterns it is made of (also the connectors' critical app
//! hosts).
//!
//! Pure: no IO, no clock (times come in as arguments). A list is accepted only when it is
//! signed by one of the DR keys trusted for the trigger record, is not larger than
//! [`MAX_LIST_BYTES`] or [`MAX_PATTERNS`] entries, and every pattern in it is valid; otherwise
//! the whole list is refused with the reason. The connector fetches, caches and refreshes it.

use std::fmt;
use std::net::IpAddr;

use crate::keys::{KeyId, TrustedKeys, key_id};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey};

#[cfg(test)]
mod tests;

/// The first line of a signed allowlist.
pub const LIST_VERSION: &str = "TSZAL1";
/// A signed allowlist larger than this is refused before it is parsed.
pub const MAX_LIST_BYTES: usize = 1024 * 1024;
/// A signed allowlist with more patterns than this is refused.
pub const MAX_PATTERNS: usize = 10_000;

/// Checks a DNS host name (without a port): 1–253 characters, labels of 1–63 letters, digits
/// and hyphens, not starting or ending with a hyphen. The reason when it is not one.
pub fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, hyphens and dots are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with a hyphen");
        }
    }
    Ok(())
}

/// One host pattern: a host name (matching itself only), `*.` and a domain (matching every
/// name below the domain, not the domain itself), or an IP address literal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    Exact(String),
    /// The domain after `*.`.
    Below(String),
    Ip(IpAddr),
}

/// A pattern that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{pattern:?} is not a host pattern ({problem}); write a host name (www.example.com), a wildcard \
     for every name below a domain (*.example.com) or an IP address (192.0.2.7)"
)]
pub struct InvalidPattern {
    pub pattern: String,
    pub problem: &'static str,
}

impl Pattern {
    /// Parses a pattern. Case does not matter; a trailing `.` is dropped; `[…]` around an IPv6
    /// address is accepted.
    pub fn parse(text: &str) -> Result<Self, InvalidPattern> {
        let bad = |problem| InvalidPattern {
            pattern: text.to_owned(),
            problem,
        };
        let t = text.trim();
        let t = t.strip_suffix('.').unwrap_or(t);
        let bracketed = t.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Ok(ip) = bracketed.unwrap_or(t).parse::<IpAddr>() {
            return Ok(Pattern::Ip(ip));
        }
        if bracketed.is_some() {
            return Err(bad("only IPv6 addresses go between [ and ]"));
        }
        let t = t.to_ascii_lowercase();
        let (below, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, t),
        };
        if name.contains('*') {
            return Err(bad(
                "a wildcard is allowed only as a whole first label, as in *.example.com",
            ));
        }
        check_dns_name(&name).map_err(bad)?;
        if ends_in_a_number(&name) {
            return Err(bad(
                "its last label is a number, so browsers read it as an IPv4 address; write the address as a.b.c.d",
            ));
        }
        if below && !name.contains('.') {
            return Err(bad(
                "a wildcard needs a domain with at least two labels below it, such as *.example.com",
            ));
        }
        Ok(if below {
            Pattern::Below(name)
        } else {
            Pattern::Exact(name)
        })
    }

    /// Whether `host` (a name or an IP literal, as in a URL's host) matches.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Pattern::Ip(p), Host::Ip(h)) => p == h,
            (Pattern::Exact(p), Host::Name(h)) => p == h,
            (Pattern::Below(p), Host::Name(h)) => h
                .strip_suffix(p.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            _ => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Below(n) => write!(f, "*.{n}"),
            Pattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Pattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Whether a host name's last label is all digits. The WHATWG URL standard (which browsers
/// follow) reads such a host as an IPv4 address (`1.2.3` is 1.2.0.3), so as a name pattern it
/// would never match what a browser asks for.
fn ends_in_a_number(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// A destination host, normalised for matching: lower case, no trailing dot, IP literals
/// parsed (with or without `[…]`, with or without a trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub fn new(host: &str) -> Self {
        let h = host.trim();
        let h = h.strip_suffix('.').unwrap_or(h);
        let bare = h
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(h);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(h.to_ascii_lowercase()),
        }
    }
}

/// A set of host patterns: the allowlist of the `controlled` mode, or the critical app hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSet {
    patterns: Vec<Pattern>,
}

impl HostSet {
    /// Parses every pattern; the first invalid one is the error.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, InvalidPattern> {
        let mut set = Self::default();
        for p in list {
            set.insert(Pattern::parse(p.as_ref())?);
        }
        Ok(set)
    }

    pub fn insert(&mut self, p: Pattern) {
        if !self.patterns.contains(&p) {
            self.patterns.push(p);
        }
    }

    /// This set and another one.
    pub fn union(&self, other: &HostSet) -> HostSet {
        let mut out = self.clone();
        for p in &other.patterns {
            out.insert(p.clone());
        }
        out
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = Host::new(host);
        self.patterns.iter().any(|p| p.matches(&host))
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// A signed allowlist whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedList {
    /// `t`: when the list was issued (unix seconds). A list older than the one already held is
    /// refused (a replay).
    pub issued_at: i64,
    pub key_id: KeyId,
    pub hosts: HostSet,
}

/// Why a signed allowlist was refused. A refused list changes nothing: the last good one stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error("the allowlist is {len} bytes, more than the {MAX_LIST_BYTES} allowed")]
    TooLarge { len: usize },
    #[error("the allowlist has more than {MAX_PATTERNS} patterns")]
    TooManyPatterns,
    #[error("the allowlist is not UTF-8 text")]
    NotText,
    #[error("the allowlist does not start with the line {LIST_VERSION}")]
    Version,
    #[error("the allowlist's line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("the allowlist has no `sig=` line as its last line: it is unsigned")]
    Unsigned,
    #[error(
        "the allowlist is signed with key {key_id}, which is not trusted (trusted: {trusted}); \
         sign it with the DR key the connectors trust"
    )]
    UnknownKey { key_id: KeyId, trusted: String },
    #[error(
        "the allowlist's signature does not verify with key {key_id}: it was altered or forged"
    )]
    BadSignature { key_id: KeyId },
    #[error(
        "the allowlist was issued at {issued_at}, before the one already held ({held}): a replayed older list"
    )]
    Replayed { issued_at: i64, held: i64 },
    #[error("the allowlist cannot be signed: {0}")]
    Sign(String),
}

fn line_err(line: usize, problem: impl Into<String>) -> ListError {
    ListError::Line {
        line,
        problem: problem.into(),
    }
}

fn parse_time(text: &str) -> Option<i64> {
    if text.is_empty()
        || text.len() > 12
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Parses and verifies a signed allowlist with the trusted DR keys.
///
/// The format (LF line ends):
///
/// ```text
/// TSZAL1
/// t=1767225600
/// k=48a0a580e42aa061
/// # comments and empty lines are allowed
/// *.example.com
/// 192.0.2.7
/// sig=<base64 Ed25519 signature of every byte before this line>
/// ```
pub fn verify_list(bytes: &[u8], trusted: &TrustedKeys) -> Result<SignedList, ListError> {
    if bytes.len() > MAX_LIST_BYTES {
        return Err(ListError::TooLarge { len: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ListError::NotText)?;
    // The signature line is the last line (one final line break is allowed after it).
    let body_end = text.strip_suffix('\n').unwrap_or(text);
    let (signed, sig_line) = match body_end.rfind('\n') {
        Some(i) => (text.get(..=i), body_end.get(i + 1..)),
        None => (None, None),
    };
    let (Some(signed), Some(sig_line)) = (signed, sig_line) else {
        return Err(ListError::Unsigned);
    };
    let Some(sig_text) = sig_line.strip_prefix("sig=") else {
        return Err(ListError::Unsigned);
    };
    let mut lines = signed.split('\n');
    if lines.next() != Some(LIST_VERSION) {
        return Err(ListError::Version);
    }
    let mut issued_at = None;
    let mut key = None;
    let mut hosts = HostSet::default();
    // The last split piece is the empty string after the final '\n'.
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if line.ends_with('\r') {
            return Err(line_err(n, "line ends with CR; use LF line ends"));
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(t) = l.strip_prefix("t=") {
            if issued_at.is_some() {
                return Err(line_err(n, "a second t= line"));
            }
            issued_at = Some(
                parse_time(t).ok_or_else(|| line_err(n, format!("t={t:?} is not unix seconds")))?,
            );
        } else if let Some(k) = l.strip_prefix("k=") {
            if key.is_some() {
                return Err(line_err(n, "a second k= line"));
            }
            key = Some(
                k.parse::<KeyId>()
                    .map_err(|e| line_err(n, format!("k={k:?}: {e}")))?,
            );
        } else {
            if hosts.len() >= MAX_PATTERNS {
                return Err(ListError::TooManyPatterns);
            }
            let p = Pattern::parse(l).map_err(|e| line_err(n, e.to_string()))?;
            hosts.insert(p);
        }
    }
    let issued_at =
        issued_at.ok_or_else(|| line_err(2, "no t= line (when the list was issued)"))?;
    let key_id = key.ok_or_else(|| line_err(3, "no k= line (the signing key's id)"))?;
    let sig: [u8; 64] = B64
        .decode(sig_text.trim())
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            line_err(
                signed.matches('\n').count() + 1,
                "sig= is not 64 bytes of padded base64",
            )
        })?;
    let Some(vk) = trusted.get(&key_id) else {
        return Err(ListError::UnknownKey {
            key_id,
            trusted: trusted
                .ids()
                .map(KeyId::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    vk.verify_strict(signed.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| ListError::BadSignature { key_id })?;
    Ok(SignedList {
        issued_at,
        key_id,
        hosts,
    })
}

/// Verifies a list and refuses it when it is older than the one held.
pub fn verify_newer(
    bytes: &[u8],
    trusted: &TrustedKeys,
    held: Option<i64>,
) -> Result<SignedList, ListError> {
    let list = verify_list(bytes, trusted)?;
    if let Some(held) = held
        && list.issued_at < held
    {
        return Err(ListError::Replayed {
            issued_at: list.issued_at,
            held,
        });
    }
    Ok(list)
}

/// Produces a signed allowlist (what the customer publishes at the allowlist URL).
pub fn sign_list<S: AsRef<str>>(
    issued_at: i64,
    patterns: &[S],
    key: &SigningKey,
) -> Result<String, ListError> {
    let mut body = format!(
        "{LIST_VERSION}\nt={issued_at}\nk={}\n",
        key_id(&key.verifying_key())
    );
    if patterns.len() > MAX_PATTERNS {
        return Err(ListError::TooManyPatterns);
    }
    for p in patterns {
        let p = Pattern::parse(p.as_ref()).map_err(|e| ListError::Sign(e.to_string()))?;
        body.push_str(&p.to_string());
        body.push('\n');
    }
    let sig = key.sign(body.as_bytes());
    body.push_str("sig=");
    body.push_str(&B64.encode(sig.to_bytes()));
    body.push('\n');
    if body.len() > MAX_LIST_BYTES {
        return Err(ListError::TooLarge { len: body.len() });
    }
    Ok(body)
}
