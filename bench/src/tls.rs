//! What the TLS rows share: the servers' rustls configuration (the certificate and key the
//! runner made, from `TLS_CERT` and `TLS_KEY`; the ring provider; tickets for resumption, as
//! the library configures itself), the provider, and a test certificate.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The provider every side of the TLS rows uses: ring, as the library does, with X25519
/// the only key exchange (ring's provider offers P-384 first, and a client sends a share of
/// its first group only: every handshake measured was P-384's, five times X25519's work).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..rustls::crypto::ring::default_provider()
    })
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

/// A verifier that takes any certificate: the clients' cost is not the server's.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client configuration that verifies nothing, with or without resumption.
pub fn client_config(resume: bool) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// A blocking TLS client stream.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to 127.0.0.1:`port` and completes the handshake (nodelay, a 10 s read timeout).
pub fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls
}

/// Starts the server `cmd` runs (the program and its options; this adds the spec
/// `127.0.0.1:0`, the certificate files as `TLS_CERT`/`TLS_KEY` and `RUST_LOG=warn`) and
/// waits for its first listening line: the child and its port.
pub fn start_server(cmd: &mut Command, name: &str, cert: &Path, key: &Path) -> (Child, u16) {
    let mut child = cmd
        .arg("127.0.0.1:0")
        .env("TLS_CERT", cert)
        .env("TLS_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a listening line");
    let port = dualstack_support::parse_listening_line(&line)
        .unwrap_or_else(|| panic!("{name}: {line:?}"))
        .0
        .port();
    (child, port)
}

/// Writes a new `localhost` certificate and key into `dir` (made if missing): their paths.
pub fn write_localhost_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert_pem, key_pem) = localhost_cert();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    (cert, key)
}

/// Adds to `cmd` the program of server `name`, from the directory of this running binary:
/// `echo` is the library's example (with `cert`/`key` as its certificate when `tls`;
/// `echo-threads` the same with one handshake thread), any other name a bench binary.
pub fn server_program(cmd: &mut Command, name: &str, tls: bool, cert: &Path, key: &Path) {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .expect("the directory of this binary");
    if !name.starts_with("echo") {
        cmd.arg(dir.join(name));
        return;
    }
    cmd.arg(dir.join("examples/echo"));
    if tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    if name == "echo-threads" {
        cmd.args(["--tls-handshake-threads", "1"]);
    }
}
