//! A minimal MQTT 3.1.1 client for `warren-perf mqtt`: packet encoders for
//! CONNECT, PUBLISH (QoS 0 and 1), PUBACK, SUBSCRIBE, PINGREQ and
//! DISCONNECT, a packet splitter, and a blocking connection over a
//! `std::net::TcpStream` with one large read buffer. Writing is left to the
//! callers, who batch many packets into one buffer and write it at once.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use super::super::client::{PerfError, Result};

/// Control packet types (the high nibble of the first byte).
pub const CONNACK: u8 = 2;
/// PUBLISH.
pub const PUBLISH: u8 = 3;
/// PUBACK.
pub const PUBACK: u8 = 4;
/// SUBACK.
pub const SUBACK: u8 = 9;
/// PINGRESP.
pub const PINGRESP: u8 = 13;

/// An encoded PINGREQ.
pub const PINGREQ_PACKET: [u8; 2] = [0xC0, 0];
/// An encoded DISCONNECT.
pub const DISCONNECT_PACKET: [u8; 2] = [0xE0, 0];

/// The largest remaining length MQTT can encode (four length bytes).
const MAX_REMAINING: usize = 268_435_455;

fn protocol(s: impl Into<String>) -> PerfError {
    PerfError::Protocol(s.into())
}

/// Append a remaining length (1 to 4 bytes, 7 bits each, low first).
pub fn put_len(out: &mut Vec<u8>, mut n: usize) -> Result<()> {
    if n > MAX_REMAINING {
        return Err(protocol(format!("packet too large ({n} bytes)")));
    }
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return Ok(());
        }
        out.push(byte | 0x80);
    }
}

/// Append a length-prefixed string.
fn put_str(out: &mut Vec<u8>, s: &[u8]) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| protocol(format!("string too long ({} bytes)", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

/// What a CONNECT carries.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Client identifier.
    pub client_id: String,
    /// Keep-alive in seconds (0: none).
    pub keepalive: u16,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
}

/// An encoded CONNECT (protocol level 4, clean session).
pub fn connect_packet(o: &ConnectOptions) -> Result<Vec<u8>> {
    let mut flags = 0x02; // clean session
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT")?;
    body.push(4);
    if o.credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&o.keepalive.to_be_bytes());
    put_str(&mut body, o.client_id.as_bytes())?;
    if let Some((user, pass)) = &o.credentials {
        put_str(&mut body, user.as_bytes())?;
        put_str(&mut body, pass.as_bytes())?;
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0x10);
    put_len(&mut out, body.len())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Append a PUBLISH of `payload` to `topic` (QoS 0 or 1; `id` is only
/// written for QoS 1); returns the offset of the payload in `out`.
pub fn put_publish(
    out: &mut Vec<u8>,
    topic: &[u8],
    qos: u8,
    id: u16,
    payload: &[u8],
) -> Result<usize> {
    let id_len = if qos > 0 { 2 } else { 0 };
    out.push(0x30 | (qos.min(2) << 1));
    put_len(out, 2 + topic.len() + id_len + payload.len())?;
    put_str(out, topic)?;
    if qos > 0 {
        out.extend_from_slice(&id.to_be_bytes());
    }
    let at = out.len();
    out.extend_from_slice(payload);
    Ok(at)
}

/// Append a PUBACK.
pub fn put_puback(out: &mut Vec<u8>, id: u16) {
    let [hi, lo] = id.to_be_bytes();
    out.extend_from_slice(&[0x40, 2, hi, lo]);
}

/// An encoded SUBSCRIBE of one topic filter.
pub fn subscribe_packet(id: u16, filter: &str, qos: u8) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(filter.len() + 5);
    body.extend_from_slice(&id.to_be_bytes());
    put_str(&mut body, filter.as_bytes())?;
    body.push(qos);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0x82);
    put_len(&mut out, body.len())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The fixed header at the start of `buf`: (first byte, header length,
/// remaining length), or `None` while it is incomplete.
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, 2 + i, len)));
        }
    }
    Err(protocol("malformed remaining length"))
}

/// A received PUBLISH's QoS and packet identifier (0 for QoS 0) and
/// payload.
pub fn publish_parts(first: u8, body: &[u8]) -> Result<(u8, u16, &[u8])> {
    let qos = (first >> 1) & 3;
    let bad = || protocol("malformed PUBLISH");
    let u16_at = |at: usize| match body.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(bad()),
    };
    let mut at = 2 + usize::from(u16_at(0)?);
    let mut id = 0;
    if qos > 0 {
        id = u16_at(at)?;
        at += 2;
    }
    Ok((qos, id, body.get(at..).ok_or_else(bad)?))
}

/// A packet identifier at the start of a body (PUBACK, SUBACK).
pub fn packet_id(body: &[u8]) -> Result<u16> {
    match body.get(..2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(protocol("packet without an identifier")),
    }
}

/// Connect a TCP socket to `dest` from the IPv4 address `source` (any
/// port), so that more connections can be opened than one address has
/// ephemeral ports. IP_BIND_ADDRESS_NO_PORT leaves the choice of the port
/// to connect(), which may then reuse it towards other destinations.
fn connect_from(source: Ipv4Addr, dest: SocketAddrV4) -> io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    fn check(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
    // SAFETY: socket(2) has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: `fd` is a socket just created and owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let len = |n: usize| n as libc::socklen_t;
    // SAFETY: the option value points to a live c_int of the given size.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            len(std::mem::size_of::<libc::c_int>()),
        )
    })?;
    let local = sockaddr(SocketAddrV4::new(source, 0));
    // SAFETY: `local` is a live sockaddr_in of the given size.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&local as *const libc::sockaddr_in).cast(),
            len(std::mem::size_of::<libc::sockaddr_in>()),
        )
    })?;
    let remote = sockaddr(dest);
    // SAFETY: `remote` is a live sockaddr_in of the given size.
    check(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&remote as *const libc::sockaddr_in).cast(),
            len(std::mem::size_of::<libc::sockaddr_in>()),
        )
    })?;
    Ok(TcpStream::from(sock))
}

/// Read buffer size of a connection that receives a stream of messages.
pub const BIG_BUFFER: usize = 1 << 20;

/// A connected, accepted MQTT session.
pub struct Conn {
    /// The socket (blocking; read timeouts as the caller sets them).
    pub sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connect to `addr` (from `source` if given), send CONNECT and wait up
    /// to `wait` for an accepting CONNACK. `bufsize`: the read buffer (it
    /// grows for a larger packet).
    pub fn open(
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        o: &ConnectOptions,
        bufsize: usize,
        wait: Duration,
    ) -> Result<Conn> {
        let sock = match (source, addr) {
            (Some(src), SocketAddr::V4(dest)) => connect_from(src, dest),
            _ => TcpStream::connect_timeout(&addr, wait),
        }
        .map_err(|e| PerfError::Io(io::Error::new(e.kind(), format!("connect {addr}: {e}"))))?;
        sock.set_nodelay(true)?;
        let mut c = Conn {
            sock,
            buf: vec![0; bufsize.max(64)],
            start: 0,
            end: 0,
        };
        c.sock.write_all(&connect_packet(o)?)?;
        c.sock.set_read_timeout(Some(wait))?;
        let (first, body) = c.wait_for(CONNACK, wait)?;
        let code = body.get(1).copied().unwrap_or(0xff);
        if first >> 4 != CONNACK || code != 0 {
            let why = match code {
                1 => "unacceptable protocol version",
                2 => "client identifier rejected",
                3 => "server unavailable",
                4 => "bad user name or password",
                5 => "not authorized",
                _ => "malformed CONNACK",
            };
            return Err(protocol(format!("connection refused: {why} ({code})")));
        }
        c.sock.set_read_timeout(None)?;
        Ok(c)
    }

    /// Read once more from the socket into the buffer; returns the number
    /// of bytes (EOF is an error; a read timeout is `Ok(0)`).
    pub fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // One packet larger than the buffer.
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let room = self.buf.get_mut(self.end..).unwrap_or_default();
        match self.sock.read(room) {
            Ok(0) => Err(PerfError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ))),
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Hand every complete packet in the buffer to `f` (first byte, body);
    /// returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(u8, &[u8]) -> Result<()>) -> Result<u64> {
        let mut n = 0;
        loop {
            let rest = self.buf.get(self.start..self.end).unwrap_or_default();
            let Some((first, hlen, len)) = header(rest)? else {
                return Ok(n);
            };
            let Some(body) = rest.get(hlen..hlen + len) else {
                return Ok(n);
            };
            f(first, body)?;
            self.start += hlen + len;
            n += 1;
        }
    }

    /// Read until a packet of type `kind` arrives (others are skipped), for
    /// at most `wait`; returns its first byte and a copy of its body.
    pub fn wait_for(&mut self, kind: u8, wait: Duration) -> Result<(u8, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        loop {
            let mut found = None;
            // Stop at the first match: later packets stay buffered.
            loop {
                let rest = self.buf.get(self.start..self.end).unwrap_or_default();
                let Some((first, hlen, len)) = header(rest)? else {
                    break;
                };
                let Some(body) = rest.get(hlen..hlen + len) else {
                    break;
                };
                self.start += hlen + len;
                if first >> 4 == kind {
                    found = Some((first, body.to_vec()));
                    break;
                }
            }
            if let Some(f) = found {
                return Ok(f);
            }
            if Instant::now() >= deadline {
                return Err(PerfError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no packet of type {kind} from the broker within {wait:?}"),
                )));
            }
            self.fill()?;
        }
    }

    /// SUBSCRIBE to `filter` and wait for the SUBACK; returns the granted
    /// QoS.
    pub fn subscribe(&mut self, filter: &str, qos: u8, wait: Duration) -> Result<u8> {
        self.sock.write_all(&subscribe_packet(1, filter, qos)?)?;
        self.sock.set_read_timeout(Some(wait))?;
        let (_, body) = self.wait_for(SUBACK, wait)?;
        self.sock.set_read_timeout(None)?;
        match body.get(2) {
            Some(&g) if g <= 2 => Ok(g),
            Some(&g) => Err(protocol(format!(
                "the broker refused the subscription to {filter} (return code {g:#x})"
            ))),
            None => Err(protocol("malformed SUBACK")),
        }
    }

    /// The socket alone, without the buffer (to hold many idle
    /// connections cheaply).
    pub fn into_socket(self) -> TcpStream {
        self.sock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_round_trips() {
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING,
        ] {
            let mut b = vec![0x30];
            put_len(&mut b, n).unwrap();
            b.resize(b.len() + 1, 0);
            let (first, hlen, len) = header(&b).unwrap().unwrap();
            assert_eq!((first, len), (0x30, n));
            assert_eq!(hlen, b.len() - 1);
        }
        assert!(put_len(&mut Vec::new(), MAX_REMAINING + 1).is_err());
        assert!(header(&[0x30, 0x80, 0x80, 0x80, 0x80, 1]).is_err());
        assert_eq!(header(&[0x30, 0x80]).unwrap(), None);
        assert_eq!(header(&[]).unwrap(), None);
    }

    #[test]
    fn connect_encoding() {
        let p = connect_packet(&ConnectOptions {
            client_id: "c1".into(),
            keepalive: 600,
            credentials: Some(("u".into(), "pw".into())),
        })
        .unwrap();
        assert_eq!(
            p,
            [
                0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 2, 88, 0, 2, b'c', b'1', 0, 1,
                b'u', 0, 2, b'p', b'w'
            ]
        );
    }

    #[test]
    fn publish_and_puback() {
        let mut b = Vec::new();
        let at = put_publish(&mut b, b"a/b", 1, 0x1234, b"hello").unwrap();
        assert_eq!(b.get(at..).unwrap(), b"hello");
        let (first, hlen, len) = header(&b).unwrap().unwrap();
        assert_eq!(first, 0x32);
        let (qos, id, payload) = publish_parts(first, &b[hlen..hlen + len]).unwrap();
        assert_eq!((qos, id, payload), (1, 0x1234, &b"hello"[..]));

        let mut b = Vec::new();
        put_publish(&mut b, b"t", 0, 7, b"xy").unwrap();
        assert_eq!(b, [0x30, 5, 0, 1, b't', b'x', b'y']);
        assert_eq!(publish_parts(0x30, &b[2..]).unwrap(), (0, 0, &b"xy"[..]));
        assert!(publish_parts(0x32, &[0, 1, b't', 0]).is_err());

        let mut b = Vec::new();
        put_puback(&mut b, 0x0102);
        assert_eq!(b, [0x40, 2, 1, 2]);
        assert_eq!(packet_id(&b[2..]).unwrap(), 0x0102);
    }

    #[test]
    fn subscribe_encoding() {
        assert_eq!(
            subscribe_packet(1, "b/#", 1).unwrap(),
            [0x82, 8, 0, 1, 0, 3, b'b', b'/', b'#', 1]
        );
    }
}
