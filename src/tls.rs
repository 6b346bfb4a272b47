//! TLS for every connection: what a node serves with and dials with, what a client dials with,
//! and who a certificate says the other side is.
//!
//! One CA issues every certificate of a cluster. A node's certificate names its node id as a DNS
//! name, `node-<id>` ([`node_name`]), plus the addresses clients reach it at; it serves with it
//! and presents it when it dials another member, so both ends of a link between members are
//! proven (mutual TLS). A client checks the node against the CA by the address it dialled, and
//! may present a certificate of its own, whose common name is the user it logs in as.
//!
//! Only TLS 1.3, through rustls with the `ring` provider. The node sends no session tickets:
//! nothing unasked ever arrives on a connection, which is how a forwarding link tells a
//! going-away notice or a hang-up from silence (see `server::forward`).
//!
//! A node reads its files again on `SIGHUP` ([`NodeTls::reload`]); connections opened from then on
//! use the new certificates, open ones keep theirs.
//!
//! Not done: certificate revocation lists, OCSP, TLS 1.2, and naming nodes by anything but their
//! id (a node's certificate is bound to its id, not to its address).

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::net::TcpStream;

/// A TLS stream from either end.
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {why}")]
    File { what: &'static str, path: PathBuf, why: String },
    #[error("{0}")]
    Config(String),
}

/// The DNS name a node's certificate carries for its id.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// The files a node's TLS is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA certificate: the only issuer trusted, for nodes and clients alike.
    pub ca: PathBuf,
    /// This side's certificate chain, and its private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A node's TLS: how it serves connections (its client port, and its HTTP port) and how it dials
/// other members. All are replaced together by [`NodeTls::reload`].
pub struct NodeTls {
    files: TlsFiles,
    current: RwLock<Configs>,
}

struct Configs {
    /// The client port: a client certificate is asked for (members must show one).
    server: Arc<ServerConfig>,
    /// The HTTP port: no client certificate is asked for, so that a browser holding
    /// certificates shows no picker; its users log in.
    web: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl NodeTls {
    pub fn load(files: TlsFiles) -> Result<NodeTls, TlsError> {
        let current = RwLock::new(node_configs(&files)?);
        Ok(NodeTls { files, current })
    }

    /// Reads the files again; on failure the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = node_configs(&self.files)?;
        *self.current.write().expect("never poisoned: nothing panics holding it") = fresh;
        Ok(())
    }

    /// Serves one accepted connection's side of the handshake.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream> {
        let config = self.current.read().expect("never poisoned").server.clone();
        Ok(tokio_rustls::TlsAcceptor::from(config).accept(stream).await?.into())
    }

    /// Serves the handshake of a connection to the HTTP port.
    pub async fn accept_web(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let config = self.current.read().expect("never poisoned").web.clone();
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await
    }

    /// Dials member `id` over `stream`, presenting this node's certificate and accepting only a
    /// certificate that names that member.
    pub async fn connect_member(&self, stream: TcpStream, id: u64) -> std::io::Result<TlsStream> {
        let name = ServerName::try_from(node_name(id)).expect("node-<id> is a valid DNS name");
        self.connect(stream, name).await
    }

    /// Dials whatever node answers at `stream`'s address (joining through an address), checking
    /// its certificate against the address.
    pub async fn connect_address(&self, stream: TcpStream) -> std::io::Result<TlsStream> {
        let name = ServerName::IpAddress(stream.peer_addr()?.ip().into());
        self.connect(stream, name).await
    }

    async fn connect(&self, stream: TcpStream, name: ServerName<'static>) -> std::io::Result<TlsStream> {
        let config = self.current.read().expect("never poisoned").client.clone();
        Ok(tokio_rustls::TlsConnector::from(config).connect(name, stream).await?.into())
    }
}

/// A client's TLS: the CA it trusts, and the certificate it presents, if any.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts `ca`; presents `cert` and `key` when given.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(read_roots(ca)?);
        let config = match identity {
            Some((cert, key)) => {
                builder.with_client_auth_cert(read_chain(cert)?, read_key(key)?).map_err(config_error)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config) })
    }

    /// Dials the node at `stream`'s address, checking its certificate against that address.
    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream> {
        let name = ServerName::IpAddress(stream.peer_addr()?.ip().into());
        Ok(tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, stream).await?.into())
    }
}

/// Who the certificate the other side presented says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Certified {
    /// The member whose id the certificate names (`node-<id>`), if exactly one.
    pub node: Option<u64>,
    /// The certificate's subject common name: for a client, the user it logs in as.
    pub common_name: Option<String>,
}

impl Certified {
    /// What the other side's certificate on `stream` says, if it presented one. rustls has
    /// already checked that the CA issued it.
    pub fn of(stream: &TlsStream) -> Option<Certified> {
        let (_, connection) = stream.get_ref();
        let der = connection.peer_certificates()?.first()?;
        Certified::parse(der)
    }

    pub(crate) fn parse(der: &CertificateDer<'_>) -> Option<Certified> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name =
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
        let mut nodes = Vec::new();
        if let Ok(Some(names)) = cert.subject_alternative_name() {
            for name in &names.value.general_names {
                if let GeneralName::DNSName(dns) = name
                    && let Some(id) = dns.strip_prefix("node-").and_then(|id| id.parse::<u64>().ok())
                {
                    nodes.push(id);
                }
            }
        }
        let node = match nodes[..] {
            [id] => Some(id),
            _ => None,
        };
        Some(Certified { node, common_name })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn node_configs(files: &TlsFiles) -> Result<Configs, TlsError> {
    let provider = provider();
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let roots = Arc::new(read_roots(&files.ca)?);
    // Clients may come without a certificate (they log in with a password); members may not,
    // which the hello checks (`server::handler`).
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(config_error)?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            TlsError::Config(format!(
                "{} does not go with {}: {e}",
                files.key.display(),
                files.cert.display()
            ))
        })?;
    server.send_tls13_tickets = 0;
    let mut web = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config_error)?;
    web.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    Ok(Configs { server: Arc::new(server), web: Arc::new(web), client: Arc::new(client) })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { what, path: path.to_path_buf(), why: e.to_string() })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File { what: "certificate", path: path.to_path_buf(), why: e.to_string() })?;
    if chain.is_empty() {
        let why = "no certificate in it".to_string();
        return Err(TlsError::File { what: "certificate", path: path.to_path_buf(), why });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what: "CA certificate",
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}
