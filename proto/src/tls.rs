//! Certificates and TLS configuration. A cluster has one CA; nodes and clients get leaf
//! certificates signed by it. Every connection is mutually authenticated: a peer without a
//! certificate from the cluster CA is refused during the handshake. A certificate's role (node or
//! client) is carried in its subject alternative name and decides which requests it may send.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// The DNS name every node certificate carries and every connection verifies.
pub const NODE_SERVER_NAME: &str = "node.ringkv";
/// The DNS name client certificates carry.
pub const CLIENT_NAME: &str = "client.ringkv";
/// The ALPN protocol identifier of this wire format.
pub const ALPN: &[u8] = b"ringkv/1";

/// What a certificate allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A cluster node: may send replica-internal requests.
    Node,
    /// A client: may send client requests only.
    Client,
}

/// Why certificates could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading a PEM file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A PEM file held no certificate or key, or an unparsable one.
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: String, reason: String },
    /// Generating a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS verifier error: {0}")]
    Verifier(String),
}

/// A certificate authority: its certificate and private key, PEM encoded.
#[derive(Clone)]
pub struct CaBundle {
    /// The CA certificate.
    pub cert_pem: String,
    /// The CA private key.
    pub key_pem: String,
}

/// What one node or client presents and trusts, PEM encoded.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The cluster CA certificate (the only trust root).
    pub ca_pem: String,
    /// This party's certificate, signed by the CA.
    pub cert_pem: String,
    /// This party's private key.
    pub key_pem: String,
}

fn ca_params(cluster: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("ringkv cluster CA {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Generates a new cluster CA.
pub fn generate_ca(cluster: &str) -> Result<CaBundle, TlsError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(cluster)?.self_signed(&key)?;
    Ok(CaBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a leaf certificate for `role`, signed by the CA of `cluster`. `common_name` names the
/// holder (for example `node-3`) in logs.
pub fn issue(
    ca: &CaBundle,
    cluster: &str,
    role: Role,
    common_name: &str,
) -> Result<TlsMaterial, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    // Re-signing the same CA parameters with the same key reproduces the issuer name and key
    // identifier of the stored CA certificate, so leaves verify against it.
    let issuer = ca_params(cluster)?.self_signed(&ca_key)?;
    let names = match role {
        Role::Node => vec![NODE_SERVER_NAME.to_string()],
        Role::Client => vec![CLIENT_NAME.to_string()],
    };
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    Ok(TlsMaterial {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsMaterial {
    /// Loads the CA certificate, own certificate and key from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let m = TlsMaterial {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        // Parse now so a broken file is reported at start-up, naming the file.
        m.certs().map_err(|e| relabel(e, cert))?;
        m.roots().map_err(|e| relabel(e, ca))?;
        m.key().map_err(|e| relabel(e, key))?;
        Ok(m)
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = pem_certs(&self.cert_pem, "certificate")?;
        Ok(certs)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&self.ca_pem, "CA certificate")? {
            roots.add(c)?;
        }
        Ok(roots)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| TlsError::Pem {
                what: "private key".into(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| TlsError::Pem {
                what: "private key".into(),
                reason: "no private key found".into(),
            })
    }

    /// rustls server configuration: TLS 1.3, client certificates required and verified against
    /// the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs()?, self.key()?)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// rustls client configuration: TLS 1.3, the server verified against the cluster CA, our own
    /// certificate presented.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.certs()?, self.key()?)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

fn relabel(e: TlsError, path: &Path) -> TlsError {
    match e {
        TlsError::Pem { reason, .. } => TlsError::Pem {
            what: path.display().to_string(),
            reason,
        },
        TlsError::Rustls(r) => TlsError::Pem {
            what: path.display().to_string(),
            reason: r.to_string(),
        },
        other => other,
    }
}

fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The role of a verified peer certificate chain (the handshake already checked it against the
/// CA). A chain whose leaf is not valid for the node name is a client.
pub fn role_of(chain: &[CertificateDer<'static>]) -> Role {
    let Some(leaf) = chain.first() else {
        return Role::Client;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return Role::Client;
    };
    let Ok(name) = ServerName::try_from(NODE_SERVER_NAME) else {
        return Role::Client;
    };
    match cert.verify_is_valid_for_subject_name(&name) {
        Ok(()) => Role::Node,
        Err(_) => Role::Client,
    }
}

/// Writes PEM text to `path` with owner-only permissions when it is a private key.
pub fn write_pem(path: &Path, pem: &str, private: bool) -> std::io::Result<()> {
    std::fs::write(path, pem)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_certificates() {
        let ca = generate_ca("t").expect("ca");
        let node = issue(&ca, "t", Role::Node, "node-1").expect("node cert");
        let client = issue(&ca, "t", Role::Client, "cli").expect("client cert");
        assert_eq!(role_of(&node.certs().expect("certs")), Role::Node);
        assert_eq!(role_of(&client.certs().expect("certs")), Role::Client);
        node.server_config().expect("server config");
        client.client_config().expect("client config");
    }

    #[test]
    fn broken_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.pem");
        std::fs::write(&p, "not a pem").expect("write");
        let err = TlsMaterial::load(&p, &p, &p).err().expect("must fail");
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
