//! The cluster's certificates: `tern cluster init` makes a CA and, signed by it, one
//! certificate per node and one for the operator (`ctl`), and the nodes load them.
//!
//! Every certificate (and its key) is in the config's `cert_dir`:
//!
//! | file | what |
//! |------|------|
//! | `ca.pem`, `ca.key` | the cluster CA: self-signed, `CA:true` with path length 0, key usage certificate and CRL signing |
//! | `NAME.pem`, `NAME.key` | node NAME: subject CN and DNS SAN `NAME`, extended key usage serverAuth and clientAuth |
//! | `ctl.pem`, `ctl.key` | the operator (`tern ctl`, `tern repl`): CN and DNS SAN `ctl`, clientAuth only |
//!
//! Keys are ECDSA P-256, in PKCS#8 PEM, and are created with mode 0600 (never readable
//! by others, not even while being written). Certificates are valid from one day before
//! `cluster init` (to tolerate clocks that are a little behind) for ten years
//! ([`VALIDITY_DAYS`]).

use crate::config::{MeshConfig, CTL_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// How long certificates made by `cluster init` are valid: ten years (from one day before).
pub const VALIDITY_DAYS: i64 = 3653;

/// The common name of the cluster CA.
const CA_COMMON_NAME: &str = "Tern cluster CA";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A node: serves and dials other nodes (serverAuth and clientAuth).
    Node,
    /// The operator: only dials nodes (clientAuth).
    Operator,
}

/// What `cluster_init` or `issue` wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub cert_dir: PathBuf,
    /// Every file written, certificates and keys, in the order written.
    pub files: Vec<PathBuf>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A certificate chain (end entity first) and its private key, loaded from `cert_dir`.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// `<cert_dir>/<name>.pem`.
pub fn cert_path(cfg: &MeshConfig, name: &str) -> PathBuf {
    cfg.cert_dir.join(format!("{name}.pem"))
}

/// `<cert_dir>/<name>.key`.
pub fn key_path(cfg: &MeshConfig, name: &str) -> PathBuf {
    cfg.cert_dir.join(format!("{name}.key"))
}

/// Makes the cluster CA, a certificate for every node of `cfg` and the operator's `ctl`
/// certificate, and writes them to `cfg.cert_dir`. Refuses (naming the file) when any of
/// those files exists, unless `force`, which regenerates everything.
pub fn cluster_init(cfg: &MeshConfig, force: bool) -> Result<InitReport, String> {
    let mut names: Vec<(&str, CertKind)> = cfg.nodes.iter().map(|n| (n.name.as_str(), CertKind::Node)).collect();
    names.push((CTL_NAME, CertKind::Operator));

    let mut targets = vec![cert_path(cfg, "ca"), key_path(cfg, "ca")];
    for (name, _) in &names {
        targets.push(cert_path(cfg, name));
        targets.push(key_path(cfg, name));
    }
    if !force {
        refuse_existing(&targets)?;
    }

    let now = OffsetDateTime::now_utc();
    let not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(VALIDITY_DAYS);

    let ca_key = KeyPair::generate().map_err(|e| format!("cannot generate the CA key: {e}"))?;
    let mut ca_params = ca_params();
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = ca_params.self_signed(&ca_key).map_err(|e| format!("cannot make the CA certificate: {e}"))?;

    let mut out: Vec<(PathBuf, String, bool)> =
        vec![(cert_path(cfg, "ca"), ca.pem(), false), (key_path(cfg, "ca"), ca_key.serialize_pem(), true)];
    for (name, kind) in names {
        let (cert, key) = make_leaf(name, kind, not_before, not_after, &ca, &ca_key)?;
        out.push((cert_path(cfg, name), cert, false));
        out.push((key_path(cfg, name), key, true));
    }
    let files = write_all(&cfg.cert_dir, out)?;
    Ok(InitReport { cert_dir: cfg.cert_dir.clone(), files, not_before, not_after })
}

/// Issues one more certificate, `<name>.pem` and `<name>.key`, signed by the existing
/// cluster CA in `cfg.cert_dir` (e.g. for a node added to the config after `cluster init`).
/// Refuses to overwrite either file unless `force`.
pub fn issue(cfg: &MeshConfig, name: &str, kind: CertKind, force: bool) -> Result<InitReport, String> {
    let now = OffsetDateTime::now_utc();
    issue_valid(cfg, name, kind, force, now - time::Duration::days(1), now + time::Duration::days(VALIDITY_DAYS))
}

/// [`issue`] valid from `not_before` to `not_after` (tests: an expired certificate).
#[doc(hidden)]
pub fn issue_valid(
    cfg: &MeshConfig,
    name: &str,
    kind: CertKind,
    force: bool,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<InitReport, String> {
    if name == "ca" {
        return Err("\"ca\" is the cluster CA's file name; it cannot name a certificate".into());
    }
    if rustls::pki_types::DnsName::try_from(name).is_err() {
        return Err(format!("{name:?} cannot be a certificate name"));
    }
    let targets = [cert_path(cfg, name), key_path(cfg, name)];
    if !force {
        refuse_existing(&targets)?;
    }
    let (ca, ca_key) = load_ca_for_signing(cfg)?;
    let (cert, key) = make_leaf(name, kind, not_before, not_after, &ca, &ca_key)?;
    let [c, k] = targets;
    let files = write_all(&cfg.cert_dir, vec![(c, cert, false), (k, key, true)])?;
    Ok(InitReport { cert_dir: cfg.cert_dir.clone(), files, not_before, not_after })
}

/// The cluster CA's certificate (`<cert_dir>/ca.pem`).
pub fn load_ca(cfg: &MeshConfig) -> Result<CertificateDer<'static>, String> {
    let path = cert_path(cfg, "ca");
    let mut chain = load_certs(&path)?;
    if chain.len() != 1 {
        return Err(format!("{}: holds {} certificates; expected only the cluster CA's", path.display(), chain.len()));
    }
    Ok(chain.remove(0))
}

/// `name`'s certificate chain and key (`<cert_dir>/<name>.pem`, `<cert_dir>/<name>.key`).
pub fn load_identity(cfg: &MeshConfig, name: &str) -> Result<Identity, String> {
    let chain = load_certs(&cert_path(cfg, name))?;
    let key = load_key(&key_path(cfg, name))?;
    Ok(Identity { chain, key })
}

/// Every certificate in a PEM file; an error naming the file when it cannot be read,
/// is not PEM, or holds none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file; an error naming the file when it cannot be read or
/// holds no key. Warns when the file is readable by others.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!("{}: private key is readable by others (mode {mode:o}); it should be 0600", path.display());
        }
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("{}: holds no private key", path.display()),
        e => format!("{}: not a PEM private key file: {e}", path.display()),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (has `tern cluster init` been run?)" } else { "" };
        format!("{}: cannot read: {e}{hint}", path.display())
    })
}

fn refuse_existing(targets: &[PathBuf]) -> Result<(), String> {
    // Keys first: they are what an accidental re-run would destroy.
    let existing = targets
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .chain(targets.iter().filter(|p| p.extension().is_none_or(|x| x != "key")))
        .find(|p| p.symlink_metadata().is_ok());
    match existing {
        Some(p) => Err(format!("{} already exists; not overwriting it (use --force to regenerate every certificate and key)", p.display())),
        None => Ok(()),
    }
}

/// The CA's parameters, except validity. `issue` rebuilds the CA certificate from these
/// and `ca.key` to sign with, so they must not change between versions.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tern");
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn make_leaf(
    name: &str,
    kind: CertKind,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key for {name}: {e}"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tern");
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let san = Ia5String::try_from(name).map_err(|e| format!("{name:?} cannot be a certificate name: {e}"))?;
    p.subject_alt_names = vec![SanType::DnsName(san)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match kind {
        CertKind::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        CertKind::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    let cert = p.signed_by(&key, ca, ca_key).map_err(|e| format!("cannot make the certificate of {name}: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA certificate and key to sign with, rebuilt from `ca.key` and checked against `ca.pem`.
fn load_ca_for_signing(cfg: &MeshConfig) -> Result<(rcgen::Certificate, KeyPair), String> {
    let ca_pem = load_ca(cfg)?;
    let key_file = key_path(cfg, "ca");
    let key_text = String::from_utf8(read(&key_file)?).map_err(|_| format!("{}: not a PEM private key file", key_file.display()))?;
    let key = KeyPair::from_pem(&key_text).map_err(|e| format!("{}: not a usable private key: {e}", key_file.display()))?;
    let rebuilt = ca_params().self_signed(&key).map_err(|e| format!("cannot rebuild the CA certificate: {e}"))?;
    let on_disk =
        webpki::EndEntityCert::try_from(&ca_pem).map_err(|e| format!("{}: not a certificate: {e:?}", cert_path(cfg, "ca").display()))?;
    let rebuilt_der = rebuilt.der().clone();
    let ours = webpki::EndEntityCert::try_from(&rebuilt_der).map_err(|e| format!("cannot parse the rebuilt CA certificate: {e:?}"))?;
    if on_disk.subject_public_key_info().as_ref() != ours.subject_public_key_info().as_ref() {
        return Err(format!("{} does not belong to {}", key_file.display(), cert_path(cfg, "ca").display()));
    }
    if on_disk.subject() != ours.subject() {
        return Err(format!("{}: not a CA made by `tern cluster init` (its subject differs)", cert_path(cfg, "ca").display()));
    }
    Ok((rebuilt, key))
}

/// Writes every file, each through a temporary file renamed into place, keys created
/// with mode 0600 from the start.
fn write_all(dir: &Path, files: Vec<(PathBuf, String, bool)>) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    let mut written = Vec::with_capacity(files.len());
    for (path, text, secret) in files {
        write_file(&path, text.as_bytes(), secret)?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), String> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: cannot remove a stale temporary file: {e}", tmp.display())),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let result = opts
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> MeshConfig {
        let text = "[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n[[node]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\n";
        MeshConfig::parse(text, dir).unwrap()
    }

    #[test]
    fn init_writes_every_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let r = cluster_init(&cfg, false).unwrap();
        let names: Vec<String> = r.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["ca.pem", "ca.key", "a.pem", "a.key", "b.pem", "b.key", "ctl.pem", "ctl.key"]);
        assert!(r.not_after - r.not_before >= time::Duration::days(3653));
        #[cfg(unix)]
        for f in &r.files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            if f.extension().unwrap() == "key" {
                assert_eq!(mode, 0o600, "{}", f.display());
            }
        }
        let e = cluster_init(&cfg, false).unwrap_err();
        assert!(e.starts_with(&format!("{} already exists", key_path(&cfg, "ca").display())), "{e}");
        let old = std::fs::read(key_path(&cfg, "a")).unwrap();
        cluster_init(&cfg, true).unwrap();
        assert_ne!(old, std::fs::read(key_path(&cfg, "a")).unwrap());
        let id = load_identity(&cfg, "ctl").unwrap();
        assert_eq!(id.chain.len(), 1);
        load_ca(&cfg).unwrap();
    }

    #[test]
    fn issue_signs_with_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        cluster_init(&cfg, false).unwrap();
        let r = issue(&cfg, "zed", CertKind::Node, false).unwrap();
        assert_eq!(r.files, [cert_path(&cfg, "zed"), key_path(&cfg, "zed")]);
        assert!(issue(&cfg, "zed", CertKind::Node, false).unwrap_err().contains("zed.key already exists"));
        assert!(issue(&cfg, "ca", CertKind::Node, true).is_err());
        // The chain verifies against ca.pem.
        let ca = load_ca(&cfg).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let zed = load_identity(&cfg, "zed").unwrap();
        let ee = webpki::EndEntityCert::try_from(&zed.chain[0]).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        ee.verify_for_usage(
            rustls::crypto::ring::default_provider().signature_verification_algorithms.all,
            &roots.roots,
            &[],
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(ee.valid_dns_names().collect::<Vec<_>>(), ["zed"]);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let e = load_identity(&cfg, "a").unwrap_err();
        assert!(e.starts_with(&format!("{}: cannot read", cert_path(&cfg, "a").display())), "{e}");
        std::fs::create_dir_all(&cfg.cert_dir).unwrap();
        std::fs::write(cert_path(&cfg, "a"), "hello\n").unwrap();
        let e = load_identity(&cfg, "a").unwrap_err();
        assert_eq!(e, format!("{}: holds no certificate", cert_path(&cfg, "a").display()));
        std::fs::write(cert_path(&cfg, "a"), "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let e = load_identity(&cfg, "a").unwrap_err();
        assert!(e.starts_with(&format!("{}: not a PEM certificate file", cert_path(&cfg, "a").display())), "{e}");
        cluster_init(&cfg, true).unwrap();
        std::fs::write(key_path(&cfg, "a"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = load_identity(&cfg, "a").unwrap_err();
        assert!(e.starts_with(&format!("{}: ", key_path(&cfg, "a").display())), "{e}");
        // A ca.key that does not match ca.pem.
        std::fs::copy(key_path(&cfg, "b"), key_path(&cfg, "ca")).unwrap();
        let e = issue(&cfg, "zed", CertKind::Node, false).unwrap_err();
        assert!(e.contains("does not belong to"), "{e}");
    }
}
