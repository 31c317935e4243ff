//! What the TLS rows share: the servers' rustls configuration (the certificate and key the
//! runner made, from `TLS_CERT` and `TLS_KEY`; the ring provider; tickets for resumption, as
//! the library configures itself), the provider, and a test certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The provider every side of the TLS rows uses: ring, as the library does.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A reference server's configuration: the certificate chain and key in the files named by
/// `TLS_CERT` and `TLS_KEY`, resumption by tickets and a session cache (as the library's).
pub fn server_config() -> Arc<rustls::ServerConfig> {
    let path = |var: &str| {
        std::env::var(var).unwrap_or_else(|_| {
            eprintln!("{var} must name a PEM file");
            std::process::exit(2)
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path("TLS_CERT"))
        .and_then(|i| i.collect())
        .expect("TLS_CERT");
    let key = PrivateKeyDer::from_pem_file(path("TLS_KEY")).expect("TLS_KEY");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a usable certificate");
    config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Arc::new(config)
}

/// A self-signed ECDSA P-256 certificate for `localhost`: (certificate PEM, key PEM).
pub fn localhost_cert() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}
