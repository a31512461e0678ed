//! Where a login may send the browser afterwards: only to a configured app, never elsewhere.
//!
//! A `return_to` value is accepted only in one exact form, `https://<app host><path>`, where the
//! host is byte-for-byte one of the configured app hosts (or the portal) and the path passes
//! [`crate::path::check_path`] and does not start with `//`. Everything else — `//evil`,
//! `/\evil`, `https:evil`, `https://app@evil`, encoded or mixed-case variants, whitespace, control
//! characters — is refused instead of being "fixed", so no parser difference can turn it into an
//! open redirect.

use crate::path::{PathRules, check_path_with};

#[cfg(test)]
mod tests;

/// Why a return address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    #[error("the return address must start with https://")]
    Scheme,
    #[error("the return address names host {0:?}, which is not a configured application")]
    UnknownHost(String),
    #[error("the return address has an unsafe path: {0}")]
    Path(String),
    #[error("the return address is longer than 4096 bytes")]
    TooLong,
}

/// A validated return address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo {
    pub host: String,
    /// Path and query, starting with a single '/'.
    pub path: String,
}

impl ReturnTo {
    /// The absolute URL.
    pub fn url(&self) -> String {
        format!("https://{}{}", self.host, self.path)
    }
}

/// Validates an absolute return address against the set of known hosts, its path by the
/// default [`PathRules`].
pub fn parse_return_to(
    raw: &str,
    is_known_host: impl Fn(&str) -> bool,
) -> Result<ReturnTo, RedirectError> {
    parse_return_to_with(raw, PathRules::default(), is_known_host)
}

/// [`parse_return_to`] with the path rules the gateway serves requests by, so that every path
/// a request may have can also be returned to after sign-in.
pub fn parse_return_to_with(
    raw: &str,
    rules: PathRules,
    is_known_host: impl Fn(&str) -> bool,
) -> Result<ReturnTo, RedirectError> {
    if raw.len() > 4096 {
        return Err(RedirectError::TooLong);
    }
    let rest = raw.strip_prefix("https://").ok_or(RedirectError::Scheme)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
        None => (rest, "/"),
    };
    // An exact, case-sensitive match with a configured host: no userinfo, no trailing dot,
    // no backslash or encoding can survive this.
    if !is_known_host(host) {
        return Err(RedirectError::UnknownHost(host.chars().take(100).collect()));
    }
    let path = check_local_path_with(path, rules)?;
    Ok(ReturnTo {
        host: host.to_owned(),
        path,
    })
}

/// Validates a same-origin path (with optional query) to redirect to, by the default
/// [`PathRules`].
pub fn check_local_path(path_and_query: &str) -> Result<String, RedirectError> {
    check_local_path_with(path_and_query, PathRules::default())
}

/// [`check_local_path`] with explicit path rules.
pub fn check_local_path_with(
    path_and_query: &str,
    rules: PathRules,
) -> Result<String, RedirectError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if path.starts_with("//") || path.starts_with("/\\") {
        return Err(RedirectError::Path("it starts with two slashes".into()));
    }
    check_path_with(path, rules).map_err(|e| RedirectError::Path(e.to_string()))?;
    if let Some(q) = query
        && q.bytes()
            .any(|b| b < 0x21 || b == 0x7f || b == b'\\' || b == b'#')
    {
        return Err(RedirectError::Path(
            "the query has spaces, control characters, '#' or backslashes".into(),
        ));
    }
    Ok(path_and_query.to_owned())
}
