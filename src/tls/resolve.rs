//! Which certificate a handshake gets: the first whose own names (its SAN list, wildcards
//! included, checked as clients check them) cover the name the client asked for; the first
//! of all when the client named none, or a name none covers.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug)]
pub(super) struct BySni {
    /// Never empty (the configuration refuses none).
    pub(super) keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    /// The certificate for `name` (`None`: the client sent none).
    pub(super) fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let (Some(name), true) = (name, self.keys.len() > 1) {
            if let Ok(name) = ServerName::try_from(name) {
                let covers = |key: &&Arc<CertifiedKey>| {
                    key.end_entity_cert()
                        .ok()
                        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                };
                if let Some(key) = self.keys.iter().find(covers) {
                    return Some(Arc::clone(key));
                }
            }
        }
        self.keys.first().cloned()
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
