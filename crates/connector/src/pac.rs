//! The organisation's app domains and the PAC file that sends them through the connector.
//!
//! A PAC file is JavaScript that the browser runs. It is generated here from domain names that
//! have been checked to be plain DNS names (letters, digits, hyphens, dots), so nothing from the
//! configuration can change the script's meaning. The same [`AppDomains::matches`] decides in
//! the proxy what the script decides in the browser: a host matches a domain when it is the
//! domain or ends with `.` and the domain.

use std::fmt::Write as _;
use std::net::SocketAddr;
use tsuzuku_dr::allowlist::check_dns_name;

#[cfg(test)]
mod tests;

/// What happens to traffic for hosts outside the app domains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Internet {
    /// The PAC file sends it `DIRECT`; the proxy refuses it (403).
    #[default]
    Direct,
    /// The PAC file sends it through the connector too, which connects to it directly.
    ViaConnector,
}

/// An app domain that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "app domain {domain:?} is not a DNS name ({problem}); give names such as example.com (which also covers its subdomains)"
)]
pub struct InvalidDomain {
    pub domain: String,
    pub problem: &'static str,
}

/// The organisation's app domains, lower-case, each covering itself and its subdomains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppDomains {
    domains: Vec<String>,
}

impl AppDomains {
    /// Parses a configured list. A leading `.` or `*.` is accepted and means the same as the
    /// bare domain; a trailing `.` is dropped.
    pub fn new<S: AsRef<str>>(list: &[S]) -> Result<Self, InvalidDomain> {
        let mut domains = Vec::with_capacity(list.len());
        for raw in list {
            let raw = raw.as_ref();
            let d = raw.trim();
            let d = d
                .strip_prefix("*.")
                .or_else(|| d.strip_prefix('.'))
                .unwrap_or(d);
            let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            check_dns_name(&d).map_err(|problem| InvalidDomain {
                domain: raw.to_owned(),
                problem,
            })?;
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        Ok(Self { domains })
    }

    pub fn as_slice(&self) -> &[String] {
        &self.domains
    }

    /// Whether `host` is an app domain or a subdomain of one. IP literals never match.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.domains.iter().any(|d| {
            host == *d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// The PAC file for a connector listening on `proxy`.
pub fn pac_file(domains: &AppDomains, proxy: SocketAddr, internet: Internet) -> String {
    let mut list = String::new();
    for (i, d) in domains.as_slice().iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        // Checked by AppDomains::new: letters, digits, hyphens and dots only.
        let _ = write!(list, "\"{d}\"");
    }
    let other = match internet {
        Internet::Direct => "DIRECT".to_owned(),
        Internet::ViaConnector => format!("PROXY {proxy}"),
    };
    format!(
        "// Tsuzuku connector: the organisation's apps go through the local connector.\n\
         function FindProxyForURL(url, host) {{\n\
         \x20 host = host.toLowerCase();\n\
         \x20 if (host.charAt(host.length - 1) == \".\") {{ host = host.substring(0, host.length - 1); }}\n\
         \x20 var apps = [{list}];\n\
         \x20 for (var i = 0; i < apps.length; i++) {{\n\
         \x20   if (host == apps[i] || dnsDomainIs(host, \".\" + apps[i])) {{ return \"PROXY {proxy}\"; }}\n\
         \x20 }}\n\
         \x20 return \"{other}\";\n\
         }}\n"
    )
}
