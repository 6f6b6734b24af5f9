//! TLS for outbound links (`amqps://` shovel and federation ends): a
//! `rustls::ClientConfig` from the URI's query parameters, as RabbitMQ's
//! URI spec names them: `cacertfile` (the CAs to trust; without it the
//! system's bundle), `certfile` and `keyfile` (a client certificate),
//! `verify` (`verify_peer`, the default, or `verify_none`) and
//! `server_name_indication` (the name to verify and send; the host by
//! default).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::{certs, invalid, named};

/// Where Debian keeps the system's CA bundle.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration from a link URI's query parameters; and the
/// name to verify the server as.
pub(crate) fn config(
    host: &str,
    query: &[(String, String)],
) -> io::Result<(Arc<ClientConfig>, ServerName<'static>)> {
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = if get("verify") == Some("verify_none") {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let file = get("cacertfile").unwrap_or(SYSTEM_CAS);
        for c in certs(Path::new(file), "CA certificates")? {
            roots
                .add(c)
                .map_err(|e| named(Path::new(file), "CA certificate", e))?;
        }
        builder.with_root_certificates(roots)
    };
    let config = match (get("certfile"), get("keyfile")) {
        (Some(cert), Some(key)) => {
            let chain = certs(Path::new(cert), "certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| named(Path::new(key), "private key", e))?;
            builder.with_client_auth_cert(chain, key).map_err(invalid)?
        }
        _ => builder.with_no_client_auth(),
    };
    let sni = get("server_name_indication").unwrap_or(host);
    let name = ServerName::try_from(sni.to_string()).map_err(invalid)?;
    Ok((Arc::new(config), name))
}

/// `verify=verify_none`: any server certificate (signatures still
/// checked, so the session is encrypted, just not authenticated). The
/// TLS fuzz target's client uses it too (the chain is not what it fuzzes).
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
