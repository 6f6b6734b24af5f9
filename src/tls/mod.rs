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

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

/// Build the server side of TLS from the PEM files `cert` (the chain, leaf
/// first), `key` (unencrypted) and `ca` (given: a client certificate is
/// verified when one is presented, RabbitMQ's `verify_peer` with
/// `fail_if_no_peer_cert = false`). A start-up error names the file and
/// what is wrong with it.
pub fn server_config(cert: &Path, key: &Path, ca: Option<&Path>) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(cert, "certificate file")?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        named(
            key,
            "key file",
            format!("{e} (an unencrypted PKCS#8, PKCS#1 or SEC1 key is needed)"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "CA file")? {
                roots.add(c).map_err(|e| named(ca, "CA file", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| named(ca, "CA file", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| {
        named(
            cert,
            "certificate file",
            format!("{e} (with key {})", key.display()),
        )
    })?;
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// One TLS socket's session.
pub struct TlsConn {
    conn: ServerConnection,
    /// close_notify has been queued.
    closing: bool,
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
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        Ok(TlsConn {
            conn,
            closing: false,
        })
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
        let e = server_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
