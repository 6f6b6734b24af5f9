//! A minimal blocking AMQP 0-9-1 client over a plain TCP socket, built on
//! `warren::codec`: for what a real client library will not do (choosing
//! channel numbers, reading server properties, sending malformed frames) and
//! for asserting the exact reply code of an asynchronous channel or
//! connection close.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::codec::frame::{write_method, FRAME_BODY, FRAME_END, FRAME_HEADER, PROTOCOL_HEADER};
use warren::codec::properties::BASIC_CLASS;
use warren::codec::{
    parse_frame, BasicProperties, ChannelClose, ChannelCloseOk, ChannelOpen, ConnectionClose,
    ConnectionCloseOk, ConnectionOpen, ConnectionStart, ConnectionStartOk, ConnectionTune,
    ConnectionTuneOk, ContentHeader, FieldTable, FieldValue, Frame, Method,
};

/// How long any single read may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A delivered or returned message: the method, its properties and body.
#[derive(Debug, Clone)]
pub struct Content {
    /// basic.deliver / basic.get-ok / basic.return.
    pub method: Method,
    /// Content properties.
    pub properties: BasicProperties,
    /// Body.
    pub body: Bytes,
}

/// What a raw connection runs over: a TCP socket, or TLS on one.
pub trait RawStream: Read + Write + Send {
    /// Block reads at most this long.
    fn set_timeout(&self, d: Duration) -> std::io::Result<()>;
}

impl RawStream for TcpStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl RawStream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.sock.set_read_timeout(Some(d))
    }
}

/// One raw connection.
pub struct Raw {
    sock: Box<dyn RawStream>,
    buf: BytesMut,
    /// From connection.start (after [`Raw::handshake`]).
    pub start: Option<ConnectionStart>,
    /// From connection.tune (after [`Raw::handshake`]).
    pub tune: Option<ConnectionTune>,
    /// Frames read but not yet consumed by an `expect`.
    pending: std::collections::VecDeque<Frame>,
    /// Asynchronous methods read while waiting for an rpc reply.
    pub stash: Vec<(u16, Method, Option<Content>)>,
    /// Heartbeat interval [`Raw::handshake`] asks for (default 0: off).
    pub heartbeat: u16,
}

fn plain(user: &str, pass: &str) -> Bytes {
    Bytes::from(format!("\0{user}\0{pass}"))
}

impl Raw {
    /// A TCP connection and nothing else.
    pub fn tcp(addr: SocketAddr) -> Raw {
        let sock = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("tcp connect");
        sock.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        sock.set_nodelay(true).expect("nodelay");
        Raw::over(sock)
    }

    /// A connection over `sock` (connected, read timeout not yet set).
    pub fn over(sock: impl RawStream + 'static) -> Raw {
        sock.set_timeout(READ_TIMEOUT).expect("timeout");
        Raw {
            sock: Box::new(sock),
            buf: BytesMut::new(),
            start: None,
            tune: None,
            pending: Default::default(),
            stash: Vec::new(),
            heartbeat: 0,
        }
    }

    /// Connect as guest/guest to vhost `/` and open the connection.
    pub fn open(addr: SocketAddr) -> Raw {
        let mut r = Raw::tcp(addr);
        r.handshake("guest", "guest", "/")
            .unwrap_or_else(|c| panic!("handshake refused: {c:?}"));
        r
    }

    /// Protocol header, start-ok (PLAIN), tune-ok echoing the server's
    /// offer, open. `Err` is the server's connection.close.
    pub fn handshake(
        &mut self,
        user: &str,
        pass: &str,
        vhost: &str,
    ) -> Result<(), ConnectionClose> {
        self.handshake_with("PLAIN", plain(user, pass), vhost)
    }

    /// [`Raw::handshake`] with SASL `mechanism` and its `response`.
    pub fn handshake_with(
        &mut self,
        mechanism: &str,
        response: Bytes,
        vhost: &str,
    ) -> Result<(), ConnectionClose> {
        self.send_bytes(PROTOCOL_HEADER);
        let start = match self.recv_method() {
            (0, Method::ConnectionStart(s)) => s,
            other => panic!("expected connection.start, got {other:?}"),
        };
        self.start = Some(start);
        let mut caps = FieldTable::new();
        caps.insert("consumer_cancel_notify", FieldValue::Bool(true));
        caps.insert("authentication_failure_close", FieldValue::Bool(true));
        caps.insert("publisher_confirms", FieldValue::Bool(true));
        caps.insert("basic.nack", FieldValue::Bool(true));
        let mut props = FieldTable::new();
        props.insert("product", FieldValue::LongStr(Bytes::from_static(b"raw")));
        props.insert("capabilities", FieldValue::Table(caps));
        self.send(
            0,
            ConnectionStartOk {
                client_properties: props,
                mechanism: Bytes::from(mechanism.to_string()),
                response,
                locale: Bytes::from_static(b"en_US"),
            },
        );
        let tune = match self.recv_method() {
            (0, Method::ConnectionTune(t)) => t,
            (0, Method::ConnectionClose(c)) => return Err(c),
            other => panic!("expected connection.tune, got {other:?}"),
        };
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: self.heartbeat,
            },
        );
        self.tune = Some(tune);
        self.send(
            0,
            ConnectionOpen {
                virtual_host: Bytes::from(vhost.to_string()),
                capabilities: Bytes::new(),
                insist: false,
            },
        );
        match self.recv_method() {
            (0, Method::ConnectionOpenOk(_)) => Ok(()),
            (0, Method::ConnectionClose(c)) => {
                self.send(0, ConnectionCloseOk {});
                Err(c)
            }
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Write raw bytes.
    pub fn send_bytes(&mut self, b: &[u8]) {
        // A broker that already closed may reset the socket: that is fine
        // for the tests that send garbage, so errors are ignored here and
        // surface on the next read.
        let _ = self.sock.write_all(b);
    }

    /// Write one method frame.
    pub fn send(&mut self, ch: u16, m: impl Into<Method>) {
        let mut out = BytesMut::new();
        write_method(&mut out, ch, &m.into());
        self.send_bytes(&out);
    }

    /// Write a whole frame.
    pub fn send_frame(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        self.send_bytes(&out);
    }

    /// basic.publish + header + one body frame, as one write.
    pub fn publish(
        &mut self,
        ch: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let out = Raw::publish_bytes(ch, exchange, routing_key, mandatory, body, properties);
        self.send_bytes(&out);
    }

    /// Write `b`; unlike [`Raw::send_bytes`], a failure (EPIPE, a reset) is
    /// returned.
    pub fn write_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(b)
    }

    /// The bytes of basic.publish + header + one body frame.
    pub fn publish_bytes(
        ch: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> BytesMut {
        let mut out = BytesMut::new();
        write_method(
            &mut out,
            ch,
            &warren::codec::BasicPublish {
                ticket: 0,
                exchange: Bytes::from(exchange.to_string()),
                routing_key: Bytes::from(routing_key.to_string()),
                mandatory,
                immediate: false,
            }
            .into(),
        );
        Frame::Header(
            ch,
            Box::new(ContentHeader {
                class_id: BASIC_CLASS,
                body_size: body.len() as u64,
                properties,
            }),
        )
        .encode(&mut out);
        if !body.is_empty() {
            Frame::Body(ch, Bytes::copy_from_slice(body)).encode(&mut out);
        }
        out
    }

    /// The next frame, or None when the server closed the socket. Panics
    /// after [`READ_TIMEOUT`] without one.
    pub fn recv(&mut self) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match parse_frame(&mut self.buf, 0) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("server sent a malformed frame: {e:?}"),
            }
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("timed out waiting for a frame")
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // ECONNRESET after the server closed: treat as closed.
                Err(_) => return None,
            }
        }
    }

    /// The next frame if one arrives within `wait` (`Ok(None)` if not);
    /// `Err(())` when the server closed the socket.
    pub fn poll_frame(&mut self, wait: Duration) -> Result<Option<Frame>, ()> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(Some(f));
        }
        loop {
            match parse_frame(&mut self.buf, 0) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => panic!("server sent a malformed frame: {e:?}"),
            }
            self.sock
                .set_timeout(wait.max(Duration::from_millis(1)))
                .expect("timeout");
            let mut chunk = [0u8; 65536];
            let res = self.sock.read(&mut chunk);
            self.sock.set_timeout(READ_TIMEOUT).expect("timeout");
            match res {
                Ok(0) => return Err(()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// Raw bytes until the server closes the socket (for the protocol
    /// header reply).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = self.buf.split().to_vec();
        let mut chunk = [0u8; 4096];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Raw bytes until the server closes the socket cleanly (a FIN); a
    /// reset (or a read timeout) is an error.
    pub fn read_to_eof(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = self.buf.split().to_vec();
        let mut chunk = [0u8; 4096];
        loop {
            match self.sock.read(&mut chunk)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next method frame (heartbeats skipped; content frames are a
    /// test failure).
    pub fn recv_method(&mut self) -> (u16, Method) {
        loop {
            match self.recv() {
                Some(Frame::Method(ch, m)) => return (ch, m),
                Some(Frame::Heartbeat(_)) => {}
                Some(f) => panic!("expected a method frame, got {f:?}"),
                None => panic!("server closed the socket while a method was expected"),
            }
        }
    }

    /// The next method; if it carries content, its header and body too.
    pub fn recv_any(&mut self) -> (u16, Method, Option<Content>) {
        let (ch, m) = self.recv_method();
        let has_content = matches!(
            m,
            Method::BasicDeliver(_) | Method::BasicGetOk(_) | Method::BasicReturn(_)
        );
        if !has_content {
            return (ch, m, None);
        }
        let c = self.read_content(ch, m.clone());
        (ch, m, Some(c))
    }

    fn read_content(&mut self, ch: u16, method: Method) -> Content {
        let h = match self.recv() {
            Some(Frame::Header(c, h)) if c == ch => h,
            other => panic!("expected a content header on channel {ch}, got {other:?}"),
        };
        let mut body = BytesMut::new();
        while (body.len() as u64) < h.body_size {
            match self.recv() {
                Some(Frame::Body(c, b)) if c == ch => body.extend_from_slice(&b),
                other => panic!("expected a body frame on channel {ch}, got {other:?}"),
            }
        }
        Content {
            method,
            properties: h.properties,
            body: body.freeze(),
        }
    }

    /// Send a synchronous method and return the reply on that channel.
    /// Asynchronous traffic read meanwhile (deliveries, returns, confirms,
    /// server-sent cancels, on any channel) is kept in [`Raw::stash`].
    pub fn rpc(&mut self, ch: u16, m: impl Into<Method>) -> Method {
        self.send(ch, m);
        loop {
            let (c, reply, content) = self.recv_any();
            let asynchronous = matches!(
                reply,
                Method::BasicDeliver(_)
                    | Method::BasicReturn(_)
                    | Method::BasicCancel(_)
                    | Method::BasicAck(_)
                    | Method::BasicNack(_)
            );
            if c == ch && !asynchronous {
                return reply;
            }
            assert!(
                asynchronous,
                "unexpected {reply:?} on channel {c} while waiting on {ch}"
            );
            self.stash.push((c, reply, content));
        }
    }

    /// The next asynchronous message: from the stash first, then the socket.
    pub fn next_async(&mut self) -> (u16, Method, Option<Content>) {
        if !self.stash.is_empty() {
            return self.stash.remove(0);
        }
        self.recv_any()
    }

    /// channel.open.
    pub fn open_channel(&mut self, ch: u16) {
        match self.rpc(
            ch,
            ChannelOpen {
                out_of_band: Bytes::new(),
            },
        ) {
            Method::ChannelOpenOk(_) => {}
            other => panic!("channel.open {ch}: got {other:?}"),
        }
    }

    /// channel.close initiated by us.
    pub fn close_channel(&mut self, ch: u16) {
        match self.rpc(
            ch,
            ChannelClose {
                reply_code: 200,
                reply_text: Bytes::from_static(b"bye"),
                class_id: 0,
                method_id: 0,
            },
        ) {
            Method::ChannelCloseOk(_) => {}
            other => panic!("channel.close {ch}: got {other:?}"),
        }
    }

    /// Read until the server's channel.close on `ch` (skipping other traffic),
    /// answer close-ok, and return it.
    pub fn expect_channel_close(&mut self, ch: u16) -> ChannelClose {
        loop {
            let (c, m, _) = self.recv_any();
            match m {
                Method::ChannelClose(cl) if c == ch => {
                    self.send(ch, ChannelCloseOk {});
                    return cl;
                }
                Method::ConnectionClose(cl) => {
                    panic!("expected channel.close on {ch}, got connection.close {cl:?}")
                }
                _ => {}
            }
        }
    }

    /// Read until the server's connection.close (skipping other traffic),
    /// answer close-ok, and return it; then check that the socket closes.
    pub fn expect_connection_close(&mut self) -> ConnectionClose {
        loop {
            let Some(f) = self.recv() else {
                panic!("socket closed without connection.close")
            };
            if let Frame::Method(0, Method::ConnectionClose(cl)) = f {
                self.send(0, ConnectionCloseOk {});
                let _ = self.read_to_close();
                return cl;
            }
        }
    }

    /// The reply code of the server's connection.close.
    pub fn connection_close_code(&mut self) -> u16 {
        self.expect_connection_close().reply_code
    }

    /// Like [`Raw::connection_close_code`], but against an external broker
    /// (`WARREN_TEST_ADDR`) a socket closed without connection.close is
    /// also accepted, as `None`: RabbitMQ 3.10 crashes its reader process
    /// on some malformed input instead of answering. Warren must answer.
    pub fn connection_close_code_or_drop(&mut self) -> Option<u16> {
        loop {
            match self.recv() {
                None => {
                    assert!(
                        std::env::var("WARREN_TEST_ADDR").is_ok(),
                        "socket closed without connection.close"
                    );
                    return None;
                }
                Some(Frame::Method(0, Method::ConnectionClose(cl))) => {
                    self.send(0, ConnectionCloseOk {});
                    let _ = self.read_to_close();
                    return Some(cl.reply_code);
                }
                Some(_) => {}
            }
        }
    }

    /// Body frame helper (payload as given, no checks).
    pub fn body_frame(ch: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![FRAME_BODY];
        v.extend_from_slice(&ch.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v.push(FRAME_END);
        v
    }

    /// Content header frame helper.
    pub fn header_frame(ch: u16, body_size: u64) -> Vec<u8> {
        let mut payload = BytesMut::new();
        ContentHeader {
            class_id: BASIC_CLASS,
            body_size,
            properties: BasicProperties::default(),
        }
        .encode(&mut payload);
        let mut v = vec![FRAME_HEADER];
        v.extend_from_slice(&ch.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(&payload);
        v.push(FRAME_END);
        v
    }
}

/// A name no other test (or earlier run against a shared broker) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "test.{prefix}.{}.{}.{}",
        std::process::id(),
        t % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
