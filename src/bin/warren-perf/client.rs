//! A minimal blocking AMQP 0-9-1 client over a `std::net::TcpStream`
//! (`amqp://`) or TLS on one (`amqps://`, [`super::tls`]), built on
//! warren's sans-IO codec: handshake (PLAIN), synchronous RPCs on a
//! channel, and an orderly close. The hot paths (publishing and consuming)
//! live in `run.rs` and only borrow the stream and buffers from here.

use std::fmt;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use warren::codec::frame::{parse_raw_frame, write_method, FRAME_METHOD, PROTOCOL_HEADER};
use warren::codec::{
    ChannelClose, ChannelCloseOk, ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionOpen,
    ConnectionStartOk, ConnectionTuneOk, FieldTable, FieldValue, Method, RawFrame,
};

use super::msg::{Event, Scanner};
use super::tls::Stream;
use super::uri::Uri;

/// Room reserved in the read buffer before each socket read.
pub const READ_CHUNK: usize = 256 * 1024;

/// What can go wrong talking to the broker.
#[derive(Debug)]
pub enum PerfError {
    /// Socket error.
    Io(io::Error),
    /// The broker closed the connection or a channel.
    Closed {
        /// "connection" or "channel".
        scope: &'static str,
        /// Reply code.
        code: u16,
        /// Reply text.
        text: String,
        /// Class and method that caused it.
        class_method: (u16, u16),
    },
    /// Anything else (bad frames, unexpected replies).
    Protocol(String),
}

impl fmt::Display for PerfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PerfError::Io(e) => write!(f, "I/O error: {e}"),
            PerfError::Closed {
                scope,
                code,
                text,
                class_method: (c, m),
            } => write!(
                f,
                "{scope} closed by the broker: {code} {text} (class {c}, method {m})"
            ),
            PerfError::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

impl From<io::Error> for PerfError {
    fn from(e: io::Error) -> PerfError {
        PerfError::Io(e)
    }
}

impl From<warren::codec::Error> for PerfError {
    fn from(e: warren::codec::Error) -> PerfError {
        PerfError::Protocol(e.to_string())
    }
}

/// Result alias.
pub type Result<T, E = PerfError> = std::result::Result<T, E>;

/// True for the errors a socket read timeout produces.
pub fn is_timeout(e: &PerfError) -> bool {
    matches!(e, PerfError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// An open connection.
pub struct Conn {
    /// The stream (blocking).
    pub stream: Stream,
    /// Bytes read and not yet parsed.
    pub rbuf: BytesMut,
    wbuf: BytesMut,
    /// Negotiated frame_max (0 = unlimited).
    pub frame_max: u32,
    scanner: Scanner,
}

fn longstr(s: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
}

impl Conn {
    /// Connect, authenticate with PLAIN, tune (heartbeats off) and open the
    /// vhost.
    pub fn open(uri: &Uri, name: &str) -> Result<Conn> {
        let sock = TcpStream::connect((uri.host.as_str(), uri.port)).map_err(|e| {
            PerfError::Io(io::Error::new(
                e.kind(),
                format!("cannot connect to {}:{}: {e}", uri.host, uri.port),
            ))
        })?;
        sock.set_nodelay(true)?;
        let stream = match &uri.tls {
            None => Stream::Plain(sock),
            Some(tls) => tls.connect(sock, &uri.host, uri.port)?,
        };
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(4096),
            frame_max: 0,
            scanner: Scanner::default(),
        };
        c.stream.write_all(PROTOCOL_HEADER)?;
        let start = match c.next_method_in_handshake()? {
            (0, Method::ConnectionStart(s)) => s,
            (_, m) => {
                return Err(PerfError::Protocol(format!(
                    "expected connection.start, got {}",
                    m.name()
                )))
            }
        };
        if !start
            .mechanisms
            .split(|&b| b == b' ')
            .any(|m| m == b"PLAIN")
        {
            return Err(PerfError::Protocol(format!(
                "broker does not offer PLAIN (offers {})",
                String::from_utf8_lossy(&start.mechanisms)
            )));
        }
        let mut caps = FieldTable::new();
        for cap in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
        ] {
            caps.insert(cap, FieldValue::Bool(true));
        }
        let mut props = FieldTable::new();
        props.insert("product", longstr("warren-perf"));
        props.insert("version", longstr(env!("CARGO_PKG_VERSION")));
        props.insert("platform", longstr("Rust"));
        props.insert("connection_name", longstr(name));
        props.insert("capabilities", FieldValue::Table(caps));
        let mut response = Vec::with_capacity(uri.user.len() + uri.pass.len() + 2);
        response.push(0);
        response.extend_from_slice(uri.user.as_bytes());
        response.push(0);
        response.extend_from_slice(uri.pass.as_bytes());
        c.send(
            0,
            &Method::ConnectionStartOk(ConnectionStartOk {
                client_properties: props,
                mechanism: Bytes::from_static(b"PLAIN"),
                response: response.into(),
                locale: Bytes::from_static(b"en_US"),
            }),
        )?;
        let tune = match c.next_method_in_handshake()? {
            (0, Method::ConnectionTune(t)) => t,
            (_, m) => {
                return Err(PerfError::Protocol(format!(
                    "expected connection.tune, got {}",
                    m.name()
                )))
            }
        };
        c.send(
            0,
            &Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            }),
        )?;
        c.frame_max = tune.frame_max;
        c.rpc(
            0,
            &Method::ConnectionOpen(ConnectionOpen {
                virtual_host: Bytes::copy_from_slice(uri.vhost.as_bytes()),
                ..Default::default()
            }),
            |m| matches!(m, Method::ConnectionOpenOk(_)),
        )?;
        Ok(c)
    }

    fn next_method_in_handshake(&mut self) -> Result<(u16, Method)> {
        match self.next_method() {
            Err(PerfError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(PerfError::Protocol(
                    "the broker closed the socket during the handshake \
                     (wrong protocol, credentials or vhost?)"
                        .into(),
                ))
            }
            r => r,
        }
    }

    /// Read once from the socket into `rbuf`; EOF is an error.
    pub fn read_more(&mut self) -> Result<usize> {
        let n = self.stream.read_into(&mut self.rbuf, READ_CHUNK)?;
        if n == 0 {
            return Err(PerfError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the socket",
            )));
        }
        Ok(n)
    }

    /// The next frame, reading as needed.
    pub fn next_frame(&mut self) -> Result<RawFrame> {
        loop {
            if let Some(f) = parse_raw_frame(&mut self.rbuf, self.frame_max)? {
                return Ok(f);
            }
            self.read_more()?;
        }
    }

    /// The next method that is not content, a heartbeat or a flow
    /// notification. A connection.close or channel.close from the broker is
    /// acknowledged and returned as [`PerfError::Closed`].
    pub fn next_method(&mut self) -> Result<(u16, Method)> {
        loop {
            let ev = self.scanner.next(&mut self.rbuf, self.frame_max)?;
            let (ch, m) = match ev {
                Some(Event::Method(ch, m)) => (ch, m),
                Some(_) => continue,
                None => {
                    self.read_more()?;
                    continue;
                }
            };
            return match m {
                Method::ConnectionClose(c) => {
                    let _ = self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                    Err(closed("connection", &c))
                }
                Method::ChannelClose(c) => {
                    let _ = self.send(ch, &Method::ChannelCloseOk(ChannelCloseOk {}));
                    Err(channel_closed(&c))
                }
                Method::ConnectionBlocked(b) => {
                    eprintln!(
                        "warren-perf: connection blocked by the broker: {}",
                        String::from_utf8_lossy(&b.reason)
                    );
                    continue;
                }
                Method::ConnectionUnblocked(_) => {
                    eprintln!("warren-perf: connection unblocked");
                    continue;
                }
                m => Ok((ch, m)),
            };
        }
    }

    /// Encode and write one method frame.
    pub fn send(&mut self, channel: u16, m: &Method) -> Result<()> {
        self.wbuf.clear();
        write_method(&mut self.wbuf, channel, m);
        self.stream.write_all(&self.wbuf)?;
        Ok(())
    }

    /// Send `m` and wait for the first method on `channel` that `reply`
    /// accepts (other methods are skipped).
    pub fn rpc(
        &mut self,
        channel: u16,
        m: &Method,
        reply: impl Fn(&Method) -> bool,
    ) -> Result<Method> {
        self.send(channel, m)?;
        loop {
            let (ch, got) = self.next_method()?;
            if ch == channel && reply(&got) {
                return Ok(got);
            }
        }
    }

    /// The stream alone, without the read and write buffers (to hold many
    /// idle connections cheaply).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Open a channel.
    pub fn open_channel(&mut self, channel: u16) -> Result<()> {
        self.rpc(channel, &Method::ChannelOpen(ChannelOpen::default()), |m| {
            matches!(m, Method::ChannelOpenOk(_))
        })?;
        Ok(())
    }

    /// An encoded connection.close (200) frame.
    pub fn close_frame() -> BytesMut {
        let mut b = BytesMut::with_capacity(32);
        write_method(
            &mut b,
            0,
            &Method::ConnectionClose(ConnectionClose {
                reply_code: 200,
                reply_text: Bytes::from_static(b"bye"),
                class_id: 0,
                method_id: 0,
            }),
        );
        b
    }

    /// Send connection.close and wait (at most `wait`) for close-ok,
    /// skipping everything else without decoding it. Errors are ignored:
    /// this is the end of the connection either way.
    pub fn close(mut self, wait: Duration) {
        let _ = self.stream.write_all(&Conn::close_frame());
        let _ = self.stream.set_read_timeout(Some(wait));
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            match self.next_frame() {
                Ok(f) if f.kind == FRAME_METHOD => match f.payload.get(..4) {
                    Some([0, 10, 0, 51]) => break,
                    Some([0, 10, 0, 50]) => {
                        let _ = self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                        break;
                    }
                    _ => {}
                },
                Ok(_) => {}
                Err(_) => return,
            }
        }
        self.stream.close_notify();
    }
}

/// A channel.close turned into an error.
pub fn channel_closed(c: &ChannelClose) -> PerfError {
    PerfError::Closed {
        scope: "channel",
        code: c.reply_code,
        text: String::from_utf8_lossy(&c.reply_text).into_owned(),
        class_method: (c.class_id, c.method_id),
    }
}

/// A connection.close turned into an error.
pub fn closed(scope: &'static str, c: &ConnectionClose) -> PerfError {
    PerfError::Closed {
        scope,
        code: c.reply_code,
        text: String::from_utf8_lossy(&c.reply_text).into_owned(),
        class_method: (c.class_id, c.method_id),
    }
}
