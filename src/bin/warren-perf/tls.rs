//! `amqps://`: the TLS side of warren-perf's connections, and the
//! [`Stream`] (plain TCP or TLS) every mode reads and writes through.
//!
//! The broker is verified against a CA file (`--tls-ca` or the URI's
//! `?cacertfile=`); there is no system trust store. The name checked is the
//! URI's host (an IP address is checked against the certificate's IP
//! addresses), or `?server_name_indication=`. `--tls-cert`/`--tls-key`
//! present a client certificate.
//!
//! A TLS stream can be split like a `TcpStream` (`try_clone`): the
//! publisher writes on one thread while another reads the confirms. Both
//! halves share one `rustls::ClientConnection` behind a mutex that is never
//! held across a blocking socket call: a reader reads ciphertext from the
//! socket into its own buffer first and only then takes the lock to decrypt;
//! a writer encrypts under the lock into a shared output buffer and writes
//! that to the socket after releasing it (a second lock, around the output
//! buffer, keeps the records of two writers in order). Steady state, no
//! buffer of ours is allocated per read or write (rustls keeps a vector per
//! TLS record internally).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Ciphertext read from the socket at once by a TLS stream that reads.
const CIPHER_CHUNK: usize = 64 * 1024;

/// How long the TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS settings of an `amqps://` URI.
#[derive(Clone, Default)]
pub struct Tls {
    /// CA certificates (PEM) the broker's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    pub key: Option<PathBuf>,
    /// The name to verify instead of the URI's host.
    pub server_name: Option<String>,
    /// Built once by [`Tls::prepare`] and shared by every connection.
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for Tls {
    fn eq(&self, o: &Tls) -> bool {
        (&self.ca, &self.cert, &self.key, &self.server_name)
            == (&o.ca, &o.cert, &o.key, &o.server_name)
    }
}

impl Eq for Tls {}

fn named(path: &Path, what: &str, e: impl fmt::Display) -> String {
    format!("TLS {what} {}: {e}", path.display())
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| named(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(path, what, e))?;
    if certs.is_empty() {
        return Err(named(path, what, "no certificate in the file"));
    }
    Ok(certs)
}

impl Tls {
    /// Check the settings and build the client configuration (reading the
    /// files) once, before any connection is made.
    pub fn prepare(&mut self) -> Result<(), String> {
        if self.config.is_none() {
            self.config = Some(self.build()?);
        }
        Ok(())
    }

    fn build(&self) -> Result<Arc<ClientConfig>, String> {
        let Some(ca) = &self.ca else {
            return Err(
                "amqps:// needs the CA certificate that signed the broker's \
                 certificate: pass --tls-ca FILE (or ?cacertfile=FILE in the URI); \
                 warren-perf has no system trust store"
                    .into(),
            );
        };
        let mut roots = RootCertStore::empty();
        for c in certs(ca, "CA file")? {
            roots.add(c).map_err(|e| named(ca, "CA file", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "client certificate file")?;
                let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    named(
                        key,
                        "client key file",
                        format!("{e} (an unencrypted PKCS#8, PKCS#1 or SEC1 key is needed)"),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| named(cert, "client certificate file", e))?
            }
            (Some(_), None) => return Err("--tls-cert (certfile) needs --tls-key (keyfile)".into()),
            (None, Some(_)) => return Err("--tls-key (keyfile) needs --tls-cert (certfile)".into()),
        };
        Ok(Arc::new(config))
    }

    /// Connect over `sock` and complete the handshake, verifying the
    /// broker as `host` (or the configured server name).
    pub fn connect(&self, sock: TcpStream, host: &str, port: u16) -> io::Result<Stream> {
        let config = match &self.config {
            Some(c) => Arc::clone(c),
            None => self.build().map_err(io::Error::other)?,
        };
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{name}' cannot be verified as a TLS server name: {e}"),
            )
        })?;
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        // The writers drain everything they encrypt at once.
        conn.set_buffer_limit(None);
        let mut s = &sock;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut handshake = || -> io::Result<()> {
            while conn.is_handshaking() {
                conn.complete_io(&mut s)?;
            }
            while conn.wants_write() {
                conn.write_tls(&mut s)?;
            }
            Ok(())
        };
        handshake().map_err(|e| handshake_error(e, host, port, self))?;
        sock.set_read_timeout(None)?;
        Ok(Stream::Tls(TlsStream {
            sock,
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                with_cert: self.cert.is_some(),
                out: Mutex::new(Vec::new()),
            }),
            cipher: Vec::new(),
            eof: false,
        }))
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

fn handshake_error(e: io::Error, host: &str, port: u16, tls: &Tls) -> io::Error {
    let hint = match rustls_error(&e) {
        Some(rustls::Error::InvalidCertificate(_)) => format!(
            " (is {} the CA that signed the broker's certificate, and is the certificate \
             for '{}'?)",
            tls.ca
                .as_ref()
                .map_or_else(|| "the CA file".to_string(), |p| p.display().to_string()),
            tls.server_name.as_deref().unwrap_or(host)
        ),
        _ if e.kind() == io::ErrorKind::UnexpectedEof => {
            " (the broker closed the socket: is this its TLS port?)".to_string()
        }
        _ => String::new(),
    };
    io::Error::new(
        e.kind(),
        format!("TLS handshake with {host}:{port} failed: {e}{hint}"),
    )
}

/// The state both halves of a split TLS stream share.
struct Shared {
    conn: Mutex<ClientConnection>,
    /// A client certificate is presented.
    with_cert: bool,
    /// Ciphertext on its way to the socket; held by one writer at a time
    /// from encryption to the end of its socket write.
    out: Mutex<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One half (or the whole) of a TLS connection.
pub struct TlsStream {
    sock: TcpStream,
    shared: Arc<Shared>,
    /// Ciphertext read from the socket (allocated on the first read: an
    /// idle or write-only stream has none).
    cipher: Vec<u8>,
    /// The broker ended the stream.
    eof: bool,
}

/// A TLS error as an I/O error; `with_cert`: a client certificate was
/// presented (the hints differ).
fn tls_io_error(e: rustls::Error, with_cert: bool) -> io::Error {
    use rustls::AlertDescription as A;
    let hint = match &e {
        rustls::Error::AlertReceived(A::CertificateRequired) if !with_cert => {
            " (the broker requires a client certificate: --tls-cert and --tls-key)"
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateRequired
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::DecryptError
            | A::AccessDenied,
        ) if with_cert => {
            " (the broker refused the client certificate, it seems: is it signed by a CA \
             the broker trusts?)"
        }
        _ => "",
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}{hint}"))
}

impl TlsStream {
    /// Move the plaintext rustls holds to the end of `rbuf`.
    fn take_plain(conn: &mut ClientConnection, rbuf: &mut BytesMut, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let start = rbuf.len();
        rbuf.resize(start + n, 0);
        let mut filled = 0;
        if let Some(dst) = rbuf.get_mut(start..) {
            while let Some(rest) = dst.get_mut(filled..).filter(|r| !r.is_empty()) {
                match conn.reader().read(rest) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => filled += k,
                }
            }
        }
        rbuf.truncate(start + filled);
        filled
    }

    fn read_into(&mut self, rbuf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let waiting = {
                let mut conn = lock(&self.shared.conn);
                let n = conn
                    .process_new_packets()
                    .map_err(|e| tls_io_error(e, self.shared.with_cert))?;
                Self::take_plain(&mut conn, rbuf, n.plaintext_bytes_to_read())
            };
            if waiting > 0 {
                return Ok(waiting);
            }
            if self.eof {
                return Ok(0);
            }
            if self.cipher.len() < CIPHER_CHUNK {
                self.cipher.resize(CIPHER_CHUNK, 0);
            }
            // The socket read, without the lock (a writer may be encrypting).
            let n = match (&self.sock).read(&mut self.cipher) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            let mut input = self.cipher.get(..n).unwrap_or_default();
            let mut got = 0;
            let mut alert = false;
            {
                let mut conn = lock(&self.shared.conn);
                while !input.is_empty() {
                    conn.read_tls(&mut input)?;
                    let state = match conn.process_new_packets() {
                        Ok(s) => s,
                        Err(e) => {
                            drop(conn);
                            // Send the alert rustls queued, if it can go.
                            let _ = self.write_plain(&[]);
                            return Err(tls_io_error(e, self.shared.with_cert));
                        }
                    };
                    got += Self::take_plain(&mut conn, rbuf, state.plaintext_bytes_to_read());
                    if state.peer_has_closed() {
                        self.eof = true;
                        break;
                    }
                }
                alert |= conn.wants_write();
            }
            if alert {
                // A key update or an alert to answer with.
                self.write_plain(&[])?;
            }
            if got > 0 {
                return Ok(got);
            }
        }
    }

    /// Encrypt `data` and write it (and anything else rustls has queued).
    fn write_plain(&self, data: &[u8]) -> io::Result<()> {
        let mut out = lock(&self.shared.out);
        out.clear();
        {
            let mut conn = lock(&self.shared.conn);
            if !data.is_empty() {
                conn.writer().write_all(data)?;
            }
            while conn.wants_write() {
                conn.write_tls(&mut *out)?;
            }
        }
        let r = (&self.sock).write_all(&out);
        out.clear();
        r
    }
}

/// A connection's byte stream: plain TCP or TLS.
pub enum Stream {
    /// `amqp://`.
    Plain(TcpStream),
    /// `amqps://`.
    Tls(TlsStream),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Read once (at most about `max` bytes of plaintext) to the end of
    /// `rbuf`; 0 at the end of the stream. A read timeout on the socket is a
    /// `WouldBlock`/`TimedOut` error, as with a `TcpStream`.
    pub fn read_into(&mut self, rbuf: &mut BytesMut, max: usize) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => warren::support::read_into(s, rbuf, max),
            Stream::Tls(t) => t.read_into(rbuf),
        }
    }

    /// Another handle to the same connection, for a second thread (a TLS
    /// stream's halves share its session).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(s) => Stream::Plain(s.try_clone()?),
            Stream::Tls(t) => Stream::Tls(TlsStream {
                sock: t.sock.try_clone()?,
                shared: Arc::clone(&t.shared),
                cipher: Vec::new(),
                eof: false,
            }),
        })
    }

    /// The socket's read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(d)
    }

    /// Shut the socket down.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }

    /// Say goodbye at the TLS level (close_notify); nothing for TCP.
    /// Errors are ignored: the connection is ending.
    pub fn close_notify(&self) {
        if let Stream::Tls(t) = self {
            lock(&t.shared.conn).send_close_notify();
            let _ = t.write_plain(&[]);
        }
    }
}

impl Write for Stream {
    /// Writes all of `buf` (a TLS stream cannot write part of a record).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(t) => t.write_plain(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
