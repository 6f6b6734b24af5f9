//! TLS for AMQPS listeners: a `rustls::ServerConfig` built from PEM files,
//! and one `rustls::ServerConnection` per TLS socket, driven sans-IO by the
//! server loop (the shape of rustls' mio server example): ciphertext read
//! from the socket goes into [`TlsConn::read_from`], the plaintext comes out
//! into the AMQP connection's input buffer; the AMQP outbox goes into
//! [`TlsConn::write_plain`] and the records out with [`TlsConn::write_to`].
//! No threads, no async. The AMQP front door and the engine never see TLS.
//!
//! Crypto provider: `ring` (it builds with a C compiler alone; aws-lc-rs
//! needs cmake, and OpenSSL is not wanted).

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, Connection, ProtocolVersion, RootCertStore, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertLogin, TlsOptions, TlsVersion};

pub(crate) mod client;
pub(crate) mod x509;

/// Plaintext rustls holds for one connection before `write_plain` takes
/// no more (the AMQP outbox keeps the rest, so backpressure still works).
const PLAINTEXT_LIMIT: usize = 64 * 1024;

fn named(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("TLS {what} {}: {e}", path.display()),
    )
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {e}"))
}

fn certs(path: &Path, what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| named(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(path, what, e))?;
    if certs.is_empty() {
        return Err(named(path, what, "no certificate in the file"));
    }
    Ok(certs)
}

/// A certificate chain and its key, read and checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> io::Result<Arc<CertifiedKey>> {
    let chain = certs(cert, "certificate file")?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        named(
            key,
            "key file",
            format!("{e} (an unencrypted PKCS#8, PKCS#1 or SEC1 key is needed)"),
        )
    })?;
    let ck = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        named(
            cert,
            "certificate file",
            format!("{e} (with key {})", key.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The OpenSSL names of the TLS 1.2 suites rustls implements (RabbitMQ's
/// `ssl_options.ciphers` are usually written this way).
const OPENSSL_NAMES: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// A suite's IANA name (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), as RabbitMQ's management API
/// and OpenSSL's TLS 1.3 names spell it.
pub fn suite_name(suite: CipherSuite) -> String {
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The cipher suite called `name` (IANA or OpenSSL spelling, any case)
/// among those rustls implements; the error lists them.
pub fn cipher_suite(name: &str) -> Result<SupportedCipherSuite, String> {
    let provider = rustls::crypto::ring::default_provider();
    let wanted = name.trim();
    let by_openssl = OPENSSL_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
        .map(|(_, s)| *s);
    provider
        .cipher_suites
        .iter()
        .find(|s| {
            Some(s.suite()) == by_openssl || suite_name(s.suite()).eq_ignore_ascii_case(wanted)
        })
        .copied()
        .ok_or_else(|| {
            let known: Vec<String> = provider
                .cipher_suites
                .iter()
                .map(|s| suite_name(s.suite()))
                .collect();
            format!(
                "cipher suite '{wanted}' is not implemented by warren (rustls); it has {}",
                known.join(", ")
            )
        })
}

/// Chooses the certificate by the server name a client asks for (SNI);
/// any other name, or none, gets the default one.
#[derive(Debug)]
struct SniResolver {
    names: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| {
            self.names
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, ck)| ck.clone())
        });
        Some(chosen.unwrap_or_else(|| self.default.clone()))
    }
}

/// Build the server side of TLS from `o` (see [`TlsOptions`]: files, client
/// verification, versions, cipher suites, SNI certificates). An error
/// names the file or the setting and what is wrong with it; it stops a
/// start, and a reload keeps the configuration in use.
pub fn server_config(o: &TlsOptions) -> io::Result<Arc<ServerConfig>> {
    let (Some(cert), Some(key)) = (&o.cert, &o.key) else {
        return Err(invalid(
            "a TLS listener needs a certificate and its key (certfile and keyfile)",
        ));
    };
    let mut provider = rustls::crypto::ring::default_provider();
    if !o.ciphers.is_empty() {
        provider.cipher_suites = o
            .ciphers
            .iter()
            .map(|c| cipher_suite(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
    }
    let provider = Arc::new(provider);
    let default = certified_key(cert, key, &provider)?;
    let mut names = Vec::new();
    for sni in &o.sni {
        names.push((
            sni.name.clone(),
            certified_key(&sni.cert, &sni.key, &provider)?,
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = if o.versions.is_empty() {
        rustls::DEFAULT_VERSIONS.to_vec()
    } else {
        o.versions
            .iter()
            .map(|v| match v {
                TlsVersion::Tls12 => &rustls::version::TLS12,
                TlsVersion::Tls13 => &rustls::version::TLS13,
            })
            .collect()
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(format!("{e} (versions and ciphers do not fit together)")))?;
    let verify = o.verify_peer.unwrap_or(o.ca.is_some());
    let builder = match (&o.ca, verify) {
        (_, false) if o.fail_if_no_peer_cert => {
            return Err(invalid(
                "fail_if_no_peer_cert = true needs verify = verify_peer and a CA file (cacertfile)",
            ))
        }
        (_, false) => builder.with_no_client_auth(),
        (None, true) => return Err(invalid(
            "verify = verify_peer needs a CA file (cacertfile) to verify client certificates with",
        )),
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "CA file")? {
                roots.add(c).map_err(|e| named(ca, "CA file", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if o.fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| named(ca, "CA file", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { names, default }));
    config.alpn_protocols.clear();
    config.ignore_client_order = o.honor_cipher_order;
    Ok(Arc::new(config))
}

/// The TLS configurations in use: AMQPS and HTTPS management. New
/// sessions take theirs from here; [`Certificates::reload`] reads the
/// files again (SIGHUP, `warren ctl reload_certificates`), and existing
/// sessions keep the configuration they began with.
#[derive(Debug, Default)]
pub struct Certificates {
    amqp_options: Option<TlsOptions>,
    mgmt_options: Option<TlsOptions>,
    /// For AMQPS listeners (when there are any).
    pub amqp: Option<Arc<ServerConfig>>,
    /// For the HTTPS management listener (when there is one).
    pub mgmt: Option<Arc<ServerConfig>>,
}

impl Certificates {
    /// Build the configurations the listeners need: `amqp` for AMQPS
    /// listeners, `mgmt` for HTTPS management (`None`: no such listener).
    pub fn new(amqp: Option<&TlsOptions>, mgmt: Option<&TlsOptions>) -> io::Result<Certificates> {
        let built = |o: Option<&TlsOptions>, what: &str| {
            o.map(|o| {
                server_config(o).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
            })
            .transpose()
        };
        Ok(Certificates {
            amqp: built(amqp, "AMQPS listener")?,
            mgmt: built(mgmt, "HTTPS management listener")?,
            amqp_options: amqp.cloned(),
            mgmt_options: mgmt.cloned(),
        })
    }

    /// Any TLS listener at all.
    pub fn any(&self) -> bool {
        self.amqp.is_some() || self.mgmt.is_some()
    }

    /// Read every certificate and key file again. All or nothing: on any
    /// error (logged, and returned) the configurations in use stay.
    pub fn reload(&mut self) -> Result<(), String> {
        match Certificates::new(self.amqp_options.as_ref(), self.mgmt_options.as_ref()) {
            Ok(new) => {
                *self = new;
                if self.any() {
                    log::info!("TLS certificates reloaded: new connections use them");
                }
                Ok(())
            }
            Err(e) => {
                log::error!("TLS certificates not reloaded (those in use stay): {e}");
                Err(e.to_string())
            }
        }
    }
}

/// What a TLS session was, once its handshake is done: for the AMQP
/// front door (SASL EXTERNAL) and the management API.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `tlsv1.2` or `tlsv1.3`, as RabbitMQ names them.
    pub protocol: &'static str,
    /// The cipher suite's IANA name.
    pub cipher: String,
    /// The name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The client's certificate, verified against the CA (only a verified
    /// one gets this far): its subject, read once when the handshake is
    /// done.
    pub peer: Option<PeerCert>,
}

/// The subject of a verified client certificate.
#[derive(Debug, Clone, Default)]
pub struct PeerCert {
    /// The whole subject as an RFC 4514 distinguished name (empty if the
    /// subject could not be read).
    pub dn: String,
    /// Its common names, joined with `,` if there are several.
    pub cn: Option<String>,
}

impl PeerCert {
    fn of(der: &CertificateDer<'_>) -> PeerCert {
        match x509::subject(der) {
            Ok(s) => PeerCert {
                dn: s.distinguished_name(),
                cn: s.common_name(),
            },
            Err(e) => {
                log::warn!("client certificate: cannot read its subject: {e}");
                PeerCert::default()
            }
        }
    }
}

/// The user name SASL EXTERNAL takes from a session's verified client
/// certificate, as RabbitMQ's `ssl_cert_login_from` takes it: the
/// subject's common names (joined with `,` if there are several), or the
/// whole subject as an RFC 4514 distinguished name. `None` without a
/// verified certificate, or when that gives no name.
pub fn login_name(info: &TlsInfo, from: CertLogin) -> Option<&str> {
    let peer = info.peer.as_ref()?;
    let name = match from {
        CertLogin::CommonName => peer.cn.as_deref()?,
        CertLogin::DistinguishedName => &peer.dn,
    };
    (!name.is_empty()).then_some(name)
}

/// The subject of a session's client certificate as an RFC 4514
/// distinguished name (the management API's `peer_cert_subject`).
pub fn peer_subject(info: &TlsInfo) -> Option<&str> {
    info.peer.as_ref().map(|p| p.dn.as_str())
}

/// One TLS socket's session.
pub struct TlsConn {
    conn: Connection,
    /// close_notify has been queued.
    closing: bool,
    /// [`TlsConn::take_info`] has given the session's facts.
    info_given: bool,
}

/// What reading ciphertext gave.
pub enum TlsRead {
    /// Ciphertext bytes taken from the socket (plaintext may have come out).
    Read(usize),
    /// The peer closed: end of stream, or its close_notify.
    Closed,
}

impl TlsConn {
    /// A new session on `config`.
    pub fn new(config: Arc<ServerConfig>) -> io::Result<TlsConn> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsConn::of(Connection::Server(conn)))
    }

    /// A new client session (an outbound link's `amqps://` end) to the
    /// server `name`, on `config` (see [`client::config`]).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> io::Result<TlsConn> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(TlsConn::of(Connection::Client(conn)))
    }

    fn of(mut conn: Connection) -> TlsConn {
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        TlsConn {
            conn,
            closing: false,
            info_given: false,
        }
    }

    /// Read ciphertext from `sock` once (into the first half of `scratch`:
    /// one system call for up to that much, where rustls reading the socket
    /// itself would take 4 KiB at a time), process it, and append the
    /// plaintext it gave to `plain` (through the other half). A TLS error
    /// is an `InvalidData` error (its alert is queued:
    /// [`TlsConn::write_to`] may still send it).
    pub fn read_from(
        &mut self,
        sock: &mut impl Read,
        scratch: &mut [u8],
        mut plain: impl FnMut(&[u8]),
    ) -> io::Result<TlsRead> {
        let (cipher, clear) = scratch.split_at_mut(scratch.len() / 2);
        let n = sock.read(cipher)?;
        if n == 0 {
            // The end of the stream (all plaintext before it was taken).
            return Ok(TlsRead::Closed);
        }
        let mut input = cipher.get(..n).unwrap_or(&[]);
        let mut closed = false;
        while !input.is_empty() && !closed {
            // From a slice rustls takes up to a record or 4 KiB at a time.
            self.conn.read_tls(&mut input)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            closed |= state.peer_has_closed();
            loop {
                match self.conn.reader().read(clear) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => plain(clear.get(..k).unwrap_or(&[])),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Closed without close_notify (a truncation attack or
                    // a careless peer): the end either way.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        closed = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(if closed {
            TlsRead::Closed
        } else {
            TlsRead::Read(n)
        })
    }

    /// Take plaintext to encrypt; how much was taken (0 when rustls holds
    /// its limit already, or while the handshake is incomplete and full).
    pub fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.conn.writer().write_vectored(bufs)
    }

    /// TLS records are waiting to be written to the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Write pending records to `sock` once.
    pub fn write_to(&mut self, sock: &mut impl Write) -> io::Result<usize> {
        self.conn.write_tls(sock)
    }

    /// The session's facts once the handshake is done (`None` before).
    pub fn info(&self) -> Option<TlsInfo> {
        if self.conn.is_handshaking() {
            return None;
        }
        let protocol = match self.conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "tlsv1.3",
            _ => "tlsv1.2",
        };
        Some(TlsInfo {
            protocol,
            cipher: self
                .conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |s| suite_name(s.suite())),
            server_name: match &self.conn {
                Connection::Server(c) => c.server_name().map(str::to_string),
                Connection::Client(_) => None,
            },
            peer: self
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(PeerCert::of),
        })
    }

    /// [`TlsConn::info`], once: the first call after the handshake.
    pub fn take_info(&mut self) -> Option<TlsInfo> {
        if self.info_given {
            return None;
        }
        let info = self.info()?;
        self.info_given = true;
        Some(info)
    }

    /// Queue close_notify (once) before our side of the socket is shut.
    pub fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = server_config(&TlsOptions {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..TlsOptions::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn cipher_names_in_either_spelling() {
        let a = cipher_suite("ECDHE-RSA-AES128-GCM-SHA256").unwrap();
        let b = cipher_suite("tls_ecdhe_rsa_with_aes_128_gcm_sha256").unwrap();
        assert_eq!(a.suite(), b.suite());
        let c = cipher_suite("TLS_AES_256_GCM_SHA384").unwrap();
        assert_eq!(suite_name(c.suite()), "TLS_AES_256_GCM_SHA384");
        let e = cipher_suite("DES-CBC3-SHA").unwrap_err();
        assert!(
            e.contains("DES-CBC3-SHA") && e.contains("TLS_AES_128_GCM_SHA256"),
            "{e}"
        );
    }
}
