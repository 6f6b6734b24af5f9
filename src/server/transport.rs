//! A socket's byte stream as its connection sees it: plain TCP, or TLS
//! through a rustls session. AMQP and HTTP sockets read and write through
//! the same two calls, so the loop has one read path and one write path
//! whatever the transport (the shape of rustls' mio server example:
//! ciphertext in → `process_new_packets` → plaintext out, and back).

use std::io::{self, IoSlice, Read, Write};

use bytes::BytesMut;
use mio::net::TcpStream;

use crate::sys::read_into;
use crate::tls::{TlsConn, TlsInfo, TlsRead};

/// Plain TCP or TLS.
pub(super) enum Transport {
    Plain,
    Tls(Box<TlsConn>),
}

/// Where the plaintext read goes.
pub(super) enum Dest<'a> {
    /// An AMQP connection's input buffer; `direct`: read exactly this many
    /// bytes straight into it (plain sockets only, see `ReadHint`);
    /// `max`: read at most this much through the scratch buffer.
    Bytes {
        buf: &'a mut BytesMut,
        direct: Option<usize>,
        max: usize,
    },
    /// An HTTP connection's input buffer.
    Vec(&'a mut Vec<u8>),
}

impl Dest<'_> {
    fn append(&mut self, data: &[u8]) {
        match self {
            Dest::Bytes { buf, .. } => buf.extend_from_slice(data),
            Dest::Vec(v) => v.extend_from_slice(data),
        }
    }
}

/// What one read gave.
pub(super) enum Got {
    /// Bytes taken from the socket (for TLS: ciphertext; the plaintext,
    /// if any came out yet, is in the destination).
    Bytes(usize),
    /// The peer closed (end of stream, or TLS close_notify); plaintext
    /// that came before is in the destination.
    Closed,
}

/// What one write did.
#[derive(Default)]
pub(super) struct Wrote {
    /// Plaintext bytes taken from the caller's buffers.
    pub taken: usize,
    /// Bytes the socket took (for TLS: records).
    pub sent: usize,
    /// The socket is full: wait for its WRITABLE event.
    pub blocked: bool,
}

impl Transport {
    /// Read from `stream` once. A TLS error (garbage, plain AMQP on the TLS
    /// port, a failed handshake) is an `InvalidData` error; its alert is
    /// queued ([`Transport::flush`] sends it).
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        scratch: &mut [u8],
        mut dest: Dest<'_>,
    ) -> io::Result<Got> {
        let n = match self {
            Transport::Tls(tls) => {
                return Ok(match tls.read_from(stream, scratch, |d| dest.append(d))? {
                    TlsRead::Read(n) => Got::Bytes(n),
                    TlsRead::Closed => Got::Closed,
                })
            }
            Transport::Plain => match &mut dest {
                Dest::Bytes {
                    buf,
                    direct: Some(n),
                    ..
                } => read_into(&*stream, buf, *n)?,
                _ => {
                    let max = match &dest {
                        Dest::Bytes { max, .. } => *max,
                        Dest::Vec(_) => usize::MAX,
                    };
                    let len = scratch.len().min(max);
                    let into = scratch.get_mut(..len).unwrap_or_default();
                    let n = stream.read(into)?;
                    dest.append(into.get(..n).unwrap_or(&[]));
                    n
                }
            },
        };
        Ok(if n == 0 { Got::Closed } else { Got::Bytes(n) })
    }

    /// Something is waiting to go out besides the caller's buffers (TLS
    /// records: handshake, alerts, close_notify).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.wants_write(),
        }
    }

    /// Write `bufs` (plaintext) to `stream` once: plain sockets take what
    /// the socket takes; TLS takes what rustls takes, then writes records
    /// once. `WouldBlock` with nothing taken is an error, as from the socket.
    pub fn write(&mut self, stream: &mut TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<Wrote> {
        match self {
            Transport::Plain => {
                if bufs.iter().all(|b| b.is_empty()) {
                    return Ok(Wrote::default());
                }
                match stream.write_vectored(bufs)? {
                    0 => Err(io::ErrorKind::WriteZero.into()),
                    k => Ok(Wrote {
                        taken: k,
                        sent: k,
                        blocked: false,
                    }),
                }
            }
            Transport::Tls(tls) => {
                let taken = if bufs.iter().all(|b| b.is_empty()) {
                    0
                } else {
                    tls.write_plain(bufs)?
                };
                let mut w = Wrote {
                    taken,
                    ..Wrote::default()
                };
                if tls.wants_write() {
                    match tls.write_to(stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(k) => w.sent = k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => {
                            w.blocked = true
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(w)
            }
        }
    }

    /// Queue TLS close_notify (once) before our side is shut down.
    pub fn close(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.close();
        }
    }

    /// Write pending TLS records until done (`true`) or the socket is full
    /// (`false`).
    pub fn flush(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        let Transport::Tls(tls) = self else {
            return Ok(true);
        };
        while tls.wants_write() {
            match tls.write_to(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The TLS session's facts, once, as soon as its handshake is done.
    pub fn take_info(&mut self) -> Option<TlsInfo> {
        match self {
            Transport::Plain => None,
            Transport::Tls(tls) => tls.take_info(),
        }
    }

    /// TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}
