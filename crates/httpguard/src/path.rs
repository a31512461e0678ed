//! Request-target checks: the path a policy sees is byte for byte the path the upstream gets.
//!
//! The gateway never rewrites a path. Instead it refuses (400) every encoding that two HTTP
//! implementations could read differently, because that difference is where authorization
//! bypasses live (Pomerium, oauth2-proxy and Spring advisories): encoded dots or slashes,
//! backslashes, NUL and control bytes, dot segments (also Tomcat's `..;` form), empty segments
//! and percent-encodings that are not valid UTF-8 (overlong forms included).
//!
//! A policy written for a plain prefix such as `/admin/*` cannot be walked around by another
//! spelling an upstream decodes back (`/%61dmin/`): letters, digits, `-` and `_` are never
//! accepted percent-encoded (no encoder writes them so), and bytes outside ASCII arrive
//! percent-encoded. Path parameters (`;` in a segment, which Tomcat, Jetty and Spring cut off
//! before routing: `/admin;x/secret` is their `/admin/secret`) are refused unless
//! [`PathRules::parameters`] allows them. What stays open by design, because real links use it:
//! hex digits in either case (Apache and .NET write lower case) and encoded `~` and reserved
//! characters (`%7E`, `%40`); a policy naming such a character should match both spellings.

#[cfg(test)]
mod tests;

/// Why a request target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a control character or NUL")]
    Control,
    #[error("the path has a malformed percent-encoding at byte {0}")]
    BadPercent(usize),
    #[error("the path encodes '{0}' with percent-encoding, which is ambiguous")]
    EncodedDelimiter(char),
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("the path has an empty segment ('//')")]
    EmptySegment,
    #[error("the path's percent-encoded bytes are not valid UTF-8")]
    NotUtf8,
    #[error("the path is longer than {0} bytes")]
    TooLong(usize),
    #[error(
        "the path percent-encodes '{0}', a letter, digit, '-' or '_' that must be written as itself"
    )]
    NeedlessPercent(char),
    #[error("the path has a byte outside ASCII at byte {0} (it must be percent-encoded)")]
    RawNonAscii(usize),
    #[error(
        "the path has a ';' parameter, which application servers cut off before routing (allowed only with path_parameters)"
    )]
    Parameter,
}

/// What a request path may contain beyond the always-refused forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathRules {
    /// Whether `;` path parameters (`/a;jsessionid=1`) are let through. Off by default: a
    /// policy sees `/admin;x/secret` where Tomcat, Jetty and Spring route `/admin/secret`.
    pub parameters: bool,
}

/// Longest path accepted.
pub const MAX_PATH: usize = 8192;

/// Checks a raw (still percent-encoded) request path with the default [`PathRules`]. On
/// success the same string is what both the policy and the upstream see.
pub fn check_path(path: &str) -> Result<(), PathError> {
    check_path_with(path, PathRules::default())
}

/// Whether `b` is a letter, digit, `-` or `_`: unreserved (RFC 3986 §2.3), so its encoding is
/// by definition the same character (§6.2.2.2), a second spelling every server decodes back,
/// and one no encoder writes (`.` is refused as a delimiter already). `~`, which Java's
/// `URLEncoder` writes as `%7E`, and the reserved characters a path may hold as themselves
/// (`@`, `:`, `+`, `=`, …, which RFC 3986 makes different from their encodings and which
/// JavaScript's `encodeURIComponent` encodes in path segments) are let through encoded.
fn is_never_encoded(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// [`check_path`] with explicit rules.
pub fn check_path_with(path: &str, rules: PathRules) -> Result<(), PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong(MAX_PATH));
    }
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercent(i));
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' => return Err(PathError::EncodedDelimiter('/')),
                    b'\\' => return Err(PathError::EncodedDelimiter('\\')),
                    b'.' => return Err(PathError::EncodedDelimiter('.')),
                    b'%' => return Err(PathError::EncodedDelimiter('%')),
                    b';' => return Err(PathError::EncodedDelimiter(';')),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    v if is_never_encoded(v) => {
                        return Err(PathError::NeedlessPercent(char::from(v)));
                    }
                    _ => {}
                }
                decoded.push(v);
                i += 3;
            }
            b';' if !rules.parameters => return Err(PathError::Parameter),
            0x80.. => return Err(PathError::RawNonAscii(i)),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Rust's UTF-8 validation rejects overlong forms and surrogates.
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    // Segments, skipping the leading '/'. A trailing '/' (empty last segment) is fine.
    let rest = path.get(1..).unwrap_or("");
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (n, seg) in segments.iter().enumerate() {
        let name = seg.split(';').next().unwrap_or("");
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
        if seg.is_empty() && n != last {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
