//! The one error type of the crate: what went wrong, with which key or value, and what to do.
//! No message ever contains key material or plaintext.

use std::path::PathBuf;

/// Result with [`KeyringError`].
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;

/// Everything that can go wrong loading keys, unwrapping data keys, sealing and opening values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// `MasterKey::load` found no file.
    #[error(
        "no master key file at {path}: restore the key file from backup or point Tsuzuku at the \
         right path (a new key is created only when no data has been encrypted yet)"
    )]
    KeyFileMissing { path: PathBuf },

    /// The key file exists but could not be read.
    #[error(
        "cannot read the master key file {path}: {error}; check that the Tsuzuku user may read it"
    )]
    KeyFileRead {
        path: PathBuf,
        // Part of the message, not a `source`: printed once.
        error: std::io::Error,
    },

    /// The key file is not a regular file.
    #[error("the master key path {path} is not a regular file; point it at the key file itself")]
    KeyFileNotRegular { path: PathBuf },

    /// Other users could read or change the key file.
    #[error(
        "the master key file {path} has mode {mode:04o}, which lets other users read or change it; \
         refusing to use it. Run `chmod 600 {path}` (or 640 for a service group) and consider the \
         key exposed if others could log in to this machine"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    /// Creating a new key file failed.
    #[error(
        "cannot create the master key file {path}: {error}; check that its directory exists and \
         the Tsuzuku user may write to it"
    )]
    KeyFileCreate {
        path: PathBuf,
        // Part of the message, not a `source`: printed once.
        error: std::io::Error,
    },

    /// `MasterKey::create` was asked to create a key file where one exists already.
    #[error(
        "a master key file already exists at {path}; refusing to overwrite it (data may depend on \
         it). Choose a new path for the new key"
    )]
    KeyFileExists { path: PathBuf },

    /// The key text is not 32 bytes in hex or base64.
    #[error(
        "the master key from {origin} is not a 32-byte key written as 64 hex digits or as base64 \
         (44 characters): {reason}. Generate one with `openssl rand -hex 32`"
    )]
    KeyFormat { origin: String, reason: String },

    /// The environment variable naming the key is not set.
    #[error(
        "the environment variable {var} is not set or is not UTF-8; set it to the master key \
         (64 hex digits or base64 of 32 bytes)"
    )]
    EnvMissing { var: String },

    /// The key command failed.
    #[error(
        "the master key command {command} failed: {reason}; run it by hand to check that it \
         prints the key (64 hex digits or base64) on stdout and exits with status 0"
    )]
    KeyCommand { command: String, reason: String },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {reason}; no key or nonce was produced")]
    Random { reason: String },

    /// Data keys in the database were wrapped by another master key than the one supplied.
    #[error(
        "the master key from {origin} (id {master_id}) does not unwrap data key(s) {}, which were \
         wrapped by master key {}; supply that master key (restore the key file from backup or \
         fix the bring-your-own-key setting). Without it the values sealed with those data keys \
         cannot be read",
        data_keys.join(", "),
        wrapped_by.join(", ")
    )]
    WrongMasterKey {
        origin: String,
        master_id: String,
        data_keys: Vec<String>,
        wrapped_by: Vec<String>,
    },

    /// A wrapped data key names the supplied master key but does not decrypt under it.
    #[error(
        "data key {key_id} names master key {master_id} but does not decrypt under it: the stored \
         wrapped key was altered or damaged. Restore the data_keys rows from backup"
    )]
    DataKeyCorrupt { key_id: String, master_id: String },

    /// A wrapped data key row is not in the expected form.
    #[error(
        "the wrapped data key {key_id:?} is malformed: {reason}; restore the data_keys rows from backup"
    )]
    MalformedWrappedKey { key_id: String, reason: String },

    /// Two wrapped data keys share one id.
    #[error(
        "data key id {key_id} appears twice among the wrapped keys; the data_keys table must have one row per id"
    )]
    DuplicateDataKey { key_id: String },

    /// `seal` was called before any data key exists.
    #[error(
        "the keyring holds no data key to seal with; generate one (Keyring::generate_data_key, \
         `tsuzuku keys rotate`) and store its wrapped form"
    )]
    NoActiveDataKey,

    /// AES-GCM refused to encrypt (the plaintext exceeds its size limit).
    #[error("cannot seal a value of {len} bytes for {field}: it exceeds AES-GCM's size limit")]
    TooLarge { field: String, len: usize },

    /// The text is not a sealed value.
    #[error("the value is not a sealed value of the form tz1:<data key id>:<base64>: {reason}")]
    Malformed { reason: String },

    /// The sealed value has a format version this build does not know.
    #[error(
        "the value was sealed in format {version:?}, which this version of Tsuzuku cannot read; \
         upgrade Tsuzuku"
    )]
    UnsupportedVersion { version: String },

    /// The sealed value names a data key the keyring does not hold.
    #[error(
        "the value was sealed with data key {key_id}, which is not among the loaded data keys ({}); \
         the data_keys row for it is missing — restore it from backup",
        known.join(", ")
    )]
    UnknownDataKey { key_id: String, known: Vec<String> },

    /// The AES-GCM tag did not verify: altered, or moved from another field or row.
    #[error(
        "the value sealed for {field} with data key {key_id} does not authenticate: it was altered, \
         or it was copied from another column or row. Do not trust it; restore it from backup"
    )]
    Unauthentic { field: String, key_id: String },
}
