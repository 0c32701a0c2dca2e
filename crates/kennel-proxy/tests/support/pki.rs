//! A stand-in API's own PKI for the broker's test and benchmark: a CA (what
//! the proxy is told to trust for upstreams) and a server certificate it
//! signs for the given names. Shared with `#[path]` by tests/broker.rs and
//! examples/broker_bench.rs.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[allow(deprecated)] // ring, as in the proxy: see broker.rs
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub struct TestPki {
    pub ca_pem: String,
    pub leaf: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

/// A new CA and a server certificate it signs for `names`.
pub fn test_pki(names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("leaf params")
    .signed_by(&key, &issuer)
    .expect("leaf");
    TestPki {
        ca_pem: ca_cert.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key der"),
    }
}

impl TestPki {
    /// A TLS server (HTTP/1.1 by ALPN) presenting the server certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], self.key.clone_key())
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
