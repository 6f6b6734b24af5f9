//! The management API's listeners (HTTP, HTTPS) and the Prometheus one,
//! their sockets in the same poll as AMQP's: bytes go through the socket's
//! transport (plain or TLS, as AMQP's) into the sans-IO `mgmt::HttpConn`,
//! which calls into the core.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Instant;

use log::{error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};

use super::transport::{Dest, Got, Transport};
use super::{
    is_out_of_descriptors, is_transient, AcceptTrouble, Server, ACCEPT_RETRY, HTTP_BASE,
    MAX_HTTP_CONNS, MAX_READS_PER_TURN, MGMT_LISTENER, MGMT_TLS_LISTENER, PROM_LISTENER,
};
use crate::mgmt::{HttpConn, Mgmt};
use crate::tls::TlsConn;

/// Which listener a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpKind {
    /// The management API over HTTP.
    Api,
    /// The management API over HTTPS.
    Https,
    /// Prometheus metrics only.
    Metrics,
}

/// A management HTTP socket and its protocol state.
pub(super) struct HttpSock {
    stream: TcpStream,
    conn: HttpConn,
    pub(super) read_pending: bool,
    /// Plain, or TLS on the HTTPS listener.
    transport: Transport,
}

/// The management API's and the Prometheus listener, their sockets and
/// state.
pub(super) struct Http {
    listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    prom_listener: Option<TcpListener>,
    pub(super) socks: slab::Slab<HttpSock>,
    pub(super) mgmt: Mgmt,
    /// A file descriptor held in reserve: given up when the process is out
    /// of them, so that the management API can still accept a connection
    /// (and its health checks say what is wrong); taken again when an HTTP
    /// socket closes.
    pub(super) reserve: Option<std::fs::File>,
    /// Accepting HTTP connections fails for want of resources.
    pub(super) trouble: AcceptTrouble,
    /// The reserve was used and more may be waiting: accept again once it
    /// is back.
    pub(super) recheck: bool,
}

impl Http {
    /// Register the management (HTTP, HTTPS) and Prometheus listeners
    /// (bound already).
    pub(super) fn bind(
        poll: &Poll,
        mgmt: Option<TcpListener>,
        mgmt_tls: Option<TcpListener>,
        prom: Option<TcpListener>,
        amqp: &[SocketAddr],
    ) -> io::Result<Http> {
        let mut http = Http {
            listener: None,
            tls_listener: None,
            prom_listener: None,
            socks: slab::Slab::new(),
            mgmt: Mgmt::new(amqp.to_vec(), None),
            reserve: None,
            trouble: AcceptTrouble::default(),
            recheck: false,
        };
        if let Some(mut l) = mgmt {
            poll.registry()
                .register(&mut l, MGMT_LISTENER, Interest::READABLE)?;
            let local = l.local_addr()?;
            info!("started management HTTP listener on {local}");
            http.mgmt.http_addr = Some(local);
            http.listener = Some(l);
            http.take_reserve();
        }
        if let Some(mut l) = mgmt_tls {
            poll.registry()
                .register(&mut l, MGMT_TLS_LISTENER, Interest::READABLE)?;
            let local = l.local_addr()?;
            info!("started management HTTPS listener on {local}");
            http.mgmt.https_addr = Some(local);
            http.tls_listener = Some(l);
        }
        if let Some(mut l) = prom {
            poll.registry()
                .register(&mut l, PROM_LISTENER, Interest::READABLE)?;
            let local = l.local_addr()?;
            info!("started Prometheus metrics listener on {local}");
            http.mgmt.prometheus_addr = Some(local);
            http.prom_listener = Some(l);
        }
        Ok(http)
    }

    /// Hold a descriptor in reserve again, if there is none held.
    pub(super) fn take_reserve(&mut self) {
        if self.reserve.is_none() && (self.listener.is_some() || self.tls_listener.is_some()) {
            self.reserve = std::fs::File::open("/dev/null").ok();
        }
    }

    /// A socket has input to read and room to take it.
    pub(super) fn read_pending(&self) -> bool {
        self.socks
            .iter()
            .any(|(_, s)| s.read_pending && s.conn.wants_read())
    }
}

impl Server {
    /// Accept on a management listener (HTTP or HTTPS), or on the
    /// Prometheus one (its connections are served metrics only).
    pub(super) fn accept_http(&mut self, kind: HttpKind, now: Instant) {
        let mut used_reserve = false;
        loop {
            let l = match kind {
                HttpKind::Api => self.http.listener.as_ref(),
                HttpKind::Https => self.http.tls_listener.as_ref(),
                HttpKind::Metrics => self.http.prom_listener.as_ref(),
            };
            let Some(l) = l else {
                return;
            };
            match l.accept() {
                Ok((mut stream, peer)) => {
                    self.http.trouble.cleared("management", now);
                    if self.http.socks.len() >= MAX_HTTP_CONNS {
                        warn!("{peer}: too many management connections; refused");
                        continue;
                    }
                    let transport = match (&self.http.mgmt.tls.mgmt, kind) {
                        (Some(config), HttpKind::Https) => match TlsConn::new(config.clone()) {
                            Ok(t) => Transport::Tls(Box::new(t)),
                            Err(e) => {
                                error!("{peer}: TLS session: {e}; closed");
                                continue;
                            }
                        },
                        _ => Transport::Plain,
                    };
                    let _ = stream.set_nodelay(true);
                    let entry = self.http.socks.vacant_entry();
                    let token = Token(HTTP_BASE + entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                        error!("{peer}: register: {e}");
                        continue;
                    }
                    let mut conn = HttpConn::new(peer, now);
                    conn.metrics_only = kind == HttpKind::Metrics;
                    entry.insert(HttpSock {
                        stream,
                        conn,
                        read_pending: true,
                        transport,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.http.trouble.failing() {
                        self.http.trouble.cleared("management", now);
                    }
                    // Nobody was waiting after all: hold the reserve again
                    // (its descriptor is still free).
                    self.http.take_reserve();
                    return;
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    // Out of descriptors: give up the one held in reserve
                    // so that a health check can still get through.
                    if is_out_of_descriptors(&e) {
                        if self.http.reserve.take().is_some() {
                            used_reserve = true;
                            continue;
                        }
                        if used_reserve {
                            // As expected: one at a time on the reserve.
                            self.http.recheck = true;
                            return;
                        }
                    }
                    self.http.trouble.failed("management", &e, now);
                    self.retry_accept(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Read, handle and answer every management socket with pending input.
    pub(super) fn serve_http(&mut self, scratch: &mut [u8], now: Instant) {
        let keys: Vec<usize> = self
            .http
            .socks
            .iter()
            .filter(|(_, s)| s.read_pending)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let Some(s) = self.http.socks.get_mut(key) else {
                continue;
            };
            let mut closed = false;
            for _ in 0..MAX_READS_PER_TURN {
                if !s.conn.wants_read() {
                    break;
                }
                let HttpSock {
                    stream,
                    conn,
                    transport,
                    ..
                } = s;
                match transport.read(stream, scratch, Dest::Vec(&mut conn.inbuf)) {
                    Ok(Got::Closed) => {
                        closed = true;
                        break;
                    }
                    Ok(Got::Bytes(_)) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        s.read_pending = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if transport.is_tls() {
                            warn!("HTTPS connection from {}: {e}; closing it", conn.peer);
                            let _ = transport.flush(stream);
                        }
                        closed = true;
                        break;
                    }
                }
            }
            s.conn.process(&mut self.core, &mut self.http.mgmt, now);
            if closed {
                // Answer what was complete, then close (a half-closed peer
                // may still read).
                self.write_http(key, now);
                self.close_http(key);
            } else {
                self.write_http(key, now);
            }
        }
    }

    pub(super) fn write_http(&mut self, key: usize, now: Instant) {
        let Some(s) = self.http.socks.get_mut(key) else {
            return;
        };
        while !s.conn.output().is_empty() || s.transport.wants_write() {
            let out = [IoSlice::new(s.conn.output())];
            match s.transport.write(&mut s.stream, &out) {
                Ok(w) => {
                    s.conn.consume(w.taken);
                    if w.taken > 0 || w.sent > 0 {
                        s.conn.last_active = now;
                    }
                    if w.blocked || (w.taken == 0 && w.sent == 0) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_http(key),
            }
        }
        if s.conn.is_done() {
            return self.close_http(key);
        }
        // Pipelined requests held back while the output was full.
        if !s.conn.inbuf.is_empty() {
            s.read_pending = true;
        }
    }

    pub(super) fn close_http(&mut self, key: usize) {
        if let Some(mut s) = self.http.socks.try_remove(key) {
            // A TLS session ends with close_notify, if the socket takes it.
            s.transport.close();
            let _ = s.transport.flush(&mut s.stream);
            let _ = self.poll.registry().deregister(&mut s.stream);
            let _ = s.stream.shutdown(std::net::Shutdown::Both);
            drop(s);
            self.http.take_reserve();
            if self.accept_trouble.failing() || self.http.trouble.failing() || self.http.recheck {
                self.retry_accept(Instant::now());
            }
        }
    }

    /// Rate samples, and closing idle keep-alive connections.
    pub(super) fn http_timers(&mut self, now: Instant) {
        if self.http.listener.is_none()
            && self.http.tls_listener.is_none()
            && self.http.prom_listener.is_none()
        {
            return;
        }
        self.http.mgmt.tick(&self.core, now);
        self.http.take_reserve();
        let idle: Vec<usize> = self
            .http
            .socks
            .iter()
            .filter(|(_, s)| s.conn.is_idle(now))
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.close_http(key);
        }
    }
}
