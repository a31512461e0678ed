//! A local certificate authority for the quick start: a CA certificate the user trusts once,
//! and a server certificate for the gateway's host names signed by it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Where the quick start keeps its TLS files.
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("gateway.pem"),
            key: dir.join("gateway-key.pem"),
        }
    }
}

/// Creates a CA and a server certificate for `names` (DNS names or IP addresses).
pub fn create(files: &TlsFiles, names: &[String]) -> Result<()> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Tsuzuku local CA");
    dn.push(DnType::OrganizationName, "Tsuzuku quick start");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().context("generating the server key")?;
    let mut leaf = CertificateParams::new(names.to_vec()).context("server certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Tsuzuku gateway");
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2035, 12, 1);
    let cert = leaf
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;

    if let Some(dir) = files.cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&files.key, &key.serialize_pem())?;
    std::fs::write(&files.cert, format!("{}{}", cert.pem(), ca_cert.pem()))
        .with_context(|| format!("writing {}", files.cert.display()))?;
    std::fs::write(&files.ca_cert, ca_cert.pem())
        .with_context(|| format!("writing {}", files.ca_cert.display()))?;
    Ok(())
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
