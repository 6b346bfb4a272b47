//! `kv-cli cert`: the certificates a secure cluster needs, made with `rcgen`.
//!
//! - `create-ca`: the cluster's CA, `ca.crt` and `ca.key`. Every node and client trusts
//!   `ca.crt`; `ca.key` signs the others and belongs somewhere safe once they are made.
//! - `create-node ID`: `node-ID.crt` and `node-ID.key`, naming the node's id (`node-ID`, which
//!   members check) and the hosts clients reach it at (`--host`, each an IP address or a DNS
//!   name; 127.0.0.1 and localhost unless given). Good for serving and for dialling members.
//! - `create-client USER`: `client-USER.crt` and `client-USER.key`, whose common name is the user
//!   it logs in as.
//!
//! Keys are ECDSA P-256, written readable by their owner only. Nothing is overwritten unless
//! `--overwrite` says so.
//!
//! Not done: intermediate CAs, revocation, and keys in hardware.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `kv-cli cert`'s flags.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub action: CertAction,
    /// Where the certificates and keys are written (and the CA read from).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// The CA's private key, if not `ca.key` in the certs dir.
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// How long the certificate is valid, in days [default: 3650 for a CA, 730 otherwise].
    #[arg(long, value_name = "DAYS")]
    pub days: Option<u32>,
    /// Replace files that exist.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertAction {
    /// Make the cluster's CA.
    CreateCa,
    /// Make a node's certificate, signed by the CA.
    CreateNode {
        /// The node's id.
        id: u64,
        /// An IP address or DNS name clients reach the node at; repeat for each.
        #[arg(long = "host", value_name = "HOST", default_values = ["127.0.0.1", "localhost"])]
        hosts: Vec<String>,
    },
    /// Make a client certificate for a user, signed by the CA.
    CreateClient {
        /// The user the certificate logs in as.
        user: String,
    },
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path} exists; give --overwrite to replace it")]
    Exists { path: PathBuf },
    #[error("cannot {action} {path}: {why}")]
    File { action: &'static str, path: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its key, as written.
#[derive(Debug, Clone)]
pub struct Made {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where to write and how.
#[derive(Debug, Clone)]
pub struct Output {
    pub dir: PathBuf,
    pub days: Option<u32>,
    pub overwrite: bool,
}

/// The CA's file names in a certs dir.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Runs `kv-cli cert`; prints what it wrote, or why not.
pub fn run(args: &CertArgs) -> Result<Made, CertError> {
    let output = Output { dir: args.certs_dir.clone(), days: args.days, overwrite: args.overwrite };
    let ca_key = args.ca_key.clone().unwrap_or_else(|| args.certs_dir.join(CA_KEY));
    match &args.action {
        CertAction::CreateCa => create_ca(&output),
        CertAction::CreateNode { id, hosts } => create_node(&output, &ca_key, *id, hosts),
        CertAction::CreateClient { user } => create_client(&output, &ca_key, user),
    }
}

/// Makes `ca.crt` and `ca.key`.
pub fn create_ca(output: &Output) -> Result<Made, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, "kv cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid_for(&mut params, output.days.unwrap_or(3650));
    let key = KeyPair::generate().map_err(invalid)?;
    let cert = params.self_signed(&key).map_err(invalid)?;
    write_pair(output, "ca", &cert.pem(), &key.serialize_pem())
}

/// Makes `node-ID.crt` and `node-ID.key`, signed by the CA in the certs dir.
pub fn create_node(output: &Output, ca_key: &Path, id: u64, hosts: &[String]) -> Result<Made, CertError> {
    if id == 0 {
        return Err(CertError::Invalid("node id must be a positive integer".into()));
    }
    let name = crate::tls::node_name(id);
    let mut names = vec![name.clone()];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, name.clone());
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    sign(output, ca_key, params, &name)
}

/// Makes `client-USER.crt` and `client-USER.key`, signed by the CA in the certs dir.
pub fn create_client(output: &Output, ca_key: &Path, user: &str) -> Result<Made, CertError> {
    let fits = !user.is_empty()
        && user.len() <= 64
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if !fits {
        return Err(CertError::Invalid(format!(
            "'{user}' cannot name a certificate: use 1-64 letters, digits, '.', '_', '-' or '@'"
        )));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(output, ca_key, params, &format!("client-{user}"))
}

fn sign(
    output: &Output,
    ca_key: &Path,
    mut params: CertificateParams,
    name: &str,
) -> Result<Made, CertError> {
    let ca_cert_path = output.dir.join(CA_CERT);
    let ca_cert = read(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read(ca_key)?)
        .map_err(|e| CertError::Invalid(format!("{} is not a private key: {e}", ca_key.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).map_err(|e| {
        CertError::Invalid(format!("{} is not a CA certificate: {e}", ca_cert_path.display()))
    })?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    valid_for(&mut params, output.days.unwrap_or(730));
    let key = KeyPair::generate().map_err(invalid)?;
    let cert = params.signed_by(&key, &issuer).map_err(invalid)?;
    write_pair(output, name, &cert.pem(), &key.serialize_pem())
}

fn valid_for(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag the one that made it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn invalid(e: rcgen::Error) -> CertError {
    CertError::Invalid(e.to_string())
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| CertError::File {
        action: "read",
        path: path.into(),
        why: e.to_string(),
    })
}

/// Writes `NAME.crt` and `NAME.key` (the key readable by its owner only), refusing to replace
/// either unless asked to.
fn write_pair(output: &Output, name: &str, cert: &str, key: &str) -> Result<Made, CertError> {
    let made =
        Made { cert: output.dir.join(format!("{name}.crt")), key: output.dir.join(format!("{name}.key")) };
    std::fs::create_dir_all(&output.dir).map_err(|e| CertError::File {
        action: "create",
        path: output.dir.clone(),
        why: e.to_string(),
    })?;
    if !output.overwrite
        && let Some(path) = [&made.cert, &made.key].into_iter().find(|p| p.exists())
    {
        return Err(CertError::Exists { path: path.clone() });
    }
    write_file(&made.key, key, 0o600)?;
    write_file(&made.cert, cert, 0o644)?;
    Ok(made)
}

/// Writes a file readable as `mode` says, replacing any old one, and syncs it.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed =
        |e: std::io::Error| CertError::File { action: "write", path: path.into(), why: e.to_string() };
    // Replaced, not rewritten in place: an old file's looser mode must not carry over.
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Certified, ClientTls, NodeTls, TlsFiles};

    fn output(dir: &Path) -> Output {
        Output { dir: dir.to_path_buf(), days: None, overwrite: false }
    }

    #[test]
    fn a_ca_signs_nodes_and_clients_that_tls_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let ca = create_ca(&out).unwrap();
        let node = create_node(&out, &ca.key, 3, &["127.0.0.1".into()]).unwrap();
        let client = create_client(&out, &ca.key, "alice").unwrap();
        NodeTls::load(TlsFiles { ca: ca.cert.clone(), cert: node.cert.clone(), key: node.key.clone() })
            .unwrap();
        ClientTls::load(&ca.cert, Some((&client.cert, &client.key))).unwrap();

        let der = |path: &Path| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(path).unwrap()
        };
        assert_eq!(Certified::parse(&der(&node.cert)).unwrap().node, Some(3));
        let alice = Certified::parse(&der(&client.cert)).unwrap();
        assert_eq!((alice.node, alice.common_name.as_deref()), (None, Some("alice")));
        let mode = |path: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
        };
        assert_eq!(mode(&node.key) & 0o777, 0o600);
    }

    #[test]
    fn nothing_is_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca(&output(dir.path())).unwrap();
        let before = std::fs::read(&ca.key).unwrap();
        assert!(matches!(create_ca(&output(dir.path())), Err(CertError::Exists { .. })));
        assert_eq!(std::fs::read(&ca.key).unwrap(), before);
        create_ca(&Output { overwrite: true, ..output(dir.path()) }).unwrap();
        assert_ne!(std::fs::read(&ca.key).unwrap(), before);
    }

    #[test]
    fn bad_names_and_a_missing_ca_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let key = dir.path().join(CA_KEY);
        assert!(matches!(create_node(&out, &key, 1, &[]), Err(CertError::File { .. })));
        create_ca(&out).unwrap();
        assert!(matches!(create_client(&out, &key, "../root"), Err(CertError::Invalid(_))));
        assert!(matches!(create_node(&out, &key, 0, &[]), Err(CertError::Invalid(_))));
    }
}
