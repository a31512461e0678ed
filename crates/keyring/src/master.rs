//! The master key: 32 bytes that wrap the data keys and never sit in the database.
//!
//! Sources:
//! - a **key file** ([`MasterKey::load`], [`MasterKey::load_or_create`], [`MasterKey::create`]):
//!   the key as text, 64 hex digits or base64 of 32 bytes, surrounding whitespace ignored. A
//!   created file holds 64 lowercase hex digits and a newline, mode 0600. On Unix a file that
//!   others may read or write, or the group may write, is refused.
//! - an **environment variable** ([`MasterKey::from_env`]), same text.
//! - a **command** ([`MasterKey::from_command`]) whose stdout is the same text, for keys held by
//!   a KMS or a secrets manager (`vault kv get -field=key ...`, `aws kms decrypt ...`).
//!
//! The key's id is the first 8 bytes (16 hex digits) of SHA-256 over a label and the key. It
//! names the key in wrapped data keys and error messages without revealing it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aes_gcm::aead::Generate;
use base64::Engine;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{KeyringError, Result};

#[cfg(test)]
mod tests;

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;

/// Largest key file or command output read; a key is 64 characters plus whitespace.
const MAX_KEY_TEXT: u64 = 1024;

/// Domain separation for the key id, so the id is not a bare hash of the key.
const ID_LABEL: &[u8] = b"tsuzuku master key id v1\0";

/// Base64 with the standard alphabet, padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Where a master key came from; shown in errors and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// A key file; `created` when this process created it because it was missing.
    File { path: PathBuf, created: bool },
    /// An environment variable.
    Env { var: String },
    /// The stdout of a command (program and arguments).
    Command { argv: Vec<String> },
    /// Bytes handed over by the caller.
    Bytes,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File {
                path,
                created: false,
            } => write!(f, "key file {}", path.display()),
            KeySource::File {
                path,
                created: true,
            } => write!(
                f,
                "key file {} (created just now because it was missing)",
                path.display()
            ),
            KeySource::Env { var } => write!(f, "environment variable {var}"),
            KeySource::Command { argv } => write!(f, "command `{}`", argv.join(" ")),
            KeySource::Bytes => f.write_str("supplied bytes"),
        }
    }
}

/// The master key. Its bytes are zeroized on drop and never printed.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
    source: KeySource,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from raw bytes (a caller's own key store, tests). `bytes` is zeroized.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self::new(Zeroizing::new(bytes), KeySource::Bytes);
        bytes.zeroize();
        key
    }

    /// A fresh random key, not stored anywhere: write it out yourself or use [`Self::create`].
    pub fn generate() -> Result<Self> {
        Ok(Self::new(random_key()?, KeySource::Bytes))
    }

    /// Loads the key file at `path`; refuses a missing file, loose permissions or a bad format.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_key_file(path)?;
        let source = KeySource::File {
            path: path.to_path_buf(),
            created: false,
        };
        Ok(Self::new(parse_key_text(&text, &source)?, source))
    }

    /// Loads the key file at `path`, or creates it (mode 0600, 64 hex digits) when missing.
    /// The directory must exist. [`Self::was_created`] tells which happened: back a new key up.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(KeyringError::KeyFileMissing { .. }) => match Self::create(path) {
                // Another process created it between our two steps: use theirs.
                Err(KeyringError::KeyFileExists { .. }) => Self::load(path),
                other => other,
            },
            other => other,
        }
    }

    /// Creates a new random key file at `path` (mode 0600); refuses to overwrite an existing
    /// file. The file appears complete or not at all (written aside, then hard-linked).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = random_key()?;
        let mut text = Zeroizing::new(hex::encode(&bytes[..]));
        text.push('\n');
        write_new_key_file(path, text.as_bytes())?;
        Ok(Self::new(
            bytes,
            KeySource::File {
                path: path.to_path_buf(),
                created: true,
            },
        ))
    }

    /// The key from the environment variable `var` (hex or base64 text).
    pub fn from_env(var: &str) -> Result<Self> {
        Self::from_env_value(var, std::env::var(var).ok())
    }

    /// [`Self::from_env`] once the variable has been read (tests cannot set variables: the
    /// workspace forbids `unsafe`, which `std::env::set_var` needs).
    fn from_env_value(var: &str, value: Option<String>) -> Result<Self> {
        let value = value.ok_or_else(|| KeyringError::EnvMissing {
            var: var.to_owned(),
        })?;
        let text = Zeroizing::new(value.into_bytes());
        let source = KeySource::Env {
            var: var.to_owned(),
        };
        Ok(Self::new(parse_key_text(&text, &source)?, source))
    }

    /// Runs `argv` (program and arguments, no shell) and reads the key from its stdout (hex or
    /// base64 text). The command must exit with status 0 by itself; its stdin is empty.
    pub fn from_command(argv: &[String]) -> Result<Self> {
        let source = KeySource::Command {
            argv: argv.to_vec(),
        };
        let command_err = |reason: String| KeyringError::KeyCommand {
            command: format!("`{}`", argv.join(" ")),
            reason,
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(command_err("no command was given".into()));
        };
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| command_err(format!("cannot start it: {e}")))?;
        let stdout = Zeroizing::new(output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr: String = stderr.trim().chars().take(300).collect();
            return Err(command_err(format!(
                "it exited with {}; stderr: {stderr:?}",
                output.status
            )));
        }
        if stdout.len() as u64 > MAX_KEY_TEXT {
            return Err(KeyringError::KeyFormat {
                origin: source.to_string(),
                reason: format!("the command printed {} bytes", stdout.len()),
            });
        }
        Ok(Self::new(parse_key_text(&stdout, &source)?, source))
    }

    fn new(bytes: Zeroizing<[u8; KEY_LEN]>, source: KeySource) -> Self {
        let id = key_id(&bytes);
        Self { bytes, id, source }
    }

    /// The key's fingerprint: 16 hex digits, safe to log and store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// True when [`Self::load_or_create`] or [`Self::create`] made a new key file.
    pub fn was_created(&self) -> bool {
        matches!(self.source, KeySource::File { created: true, .. })
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

/// The fingerprint of a key: SHA-256 over a label and the key, first 8 bytes in hex.
fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(ID_LABEL);
    h.update(bytes);
    let digest = h.finalize();
    hex::encode(digest.get(..8).unwrap_or_default())
}

pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    <[u8; KEY_LEN]>::try_generate()
        .map(Zeroizing::new)
        .map_err(|e| KeyringError::Random {
            reason: e.to_string(),
        })
}

/// Parses key text: surrounding whitespace ignored, then 64 hex digits or base64 of 32 bytes.
/// Error reasons describe lengths only, never content.
fn parse_key_text(text: &[u8], source: &KeySource) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let format_err = |reason: String| KeyringError::KeyFormat {
        origin: source.to_string(),
        reason,
    };
    let text = text.trim_ascii();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if text.is_empty() {
        return Err(format_err("it is empty".into()));
    }
    if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
        hex::decode_to_slice(text, &mut key[..])
            .map_err(|_| format_err("it is not valid hex".into()))?;
        return Ok(key);
    }
    // Large enough for any base64 text the length check lets through.
    let mut buf = Zeroizing::new([0u8; 64]);
    if text.len() > 48 {
        return Err(format_err(format!("it is {} characters long", text.len())));
    }
    let n = B64.decode_slice(text, &mut buf[..]).map_err(|_| {
        format_err(format!(
            "its {} characters are neither 64 hex digits nor valid base64",
            text.len()
        ))
    })?;
    match buf.get(..n) {
        Some(decoded) if n == KEY_LEN => key.copy_from_slice(decoded),
        _ => {
            return Err(format_err(format!(
                "it decodes from base64 to {n} bytes, not {KEY_LEN}"
            )));
        }
    }
    Ok(key)
}

/// Reads a key file after checking that it is a regular file only its owner (and group, for
/// reading) may access.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let read_err = |error: std::io::Error| KeyringError::KeyFileRead {
        path: path.to_path_buf(),
        error,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(KeyringError::KeyFileMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    if !meta.is_file() {
        return Err(KeyringError::KeyFileNotRegular {
            path: path.to_path_buf(),
        });
    }
    check_mode(path, &meta)?;
    let file = File::open(path).map_err(read_err)?;
    // Sized up front so the buffer never reallocates and leaves unzeroized copies behind.
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_TEXT as usize + 1));
    file.take(MAX_KEY_TEXT + 1)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_KEY_TEXT {
        return Err(KeyringError::KeyFormat {
            origin: KeySource::File {
                path: path.to_path_buf(),
                created: false,
            }
            .to_string(),
            reason: format!("the file is larger than {MAX_KEY_TEXT} bytes"),
        });
    }
    Ok(text)
}

/// Refuses files that others may read or write, or that the group may write. Group read is
/// allowed so a key can be shared with a service group (mode 0640).
#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(KeyringError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Writes `contents` to a new file at `path` with mode 0600, all or nothing: the text goes to a
/// temporary file beside it, is synced, and is hard-linked into place (which fails rather than
/// replace an existing file).
fn write_new_key_file(path: &Path, contents: &[u8]) -> Result<()> {
    let create_err = |error: std::io::Error| KeyringError::KeyFileCreate {
        path: path.to_path_buf(),
        error,
    };
    if path.exists() {
        return Err(KeyringError::KeyFileExists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| create_err(std::io::Error::other("the path has no file name")))?;
    let suffix: [u8; 8] = Generate::try_generate().map_err(|e| KeyringError::Random {
        reason: e.to_string(),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    let tmp = dir.join(tmp_name);

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(create_err(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(KeyringError::KeyFileExists {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(create_err(e)),
    }
    // Make the new directory entry durable.
    #[cfg(unix)]
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(create_err)?;
    Ok(())
}
