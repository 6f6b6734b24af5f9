//! Transports for outbound links (`crate::link`): sockets to remote
//! brokers in the same poll as everything else, host names resolved on a
//! helper thread (the loop never blocks on DNS), and connections inside
//! this broker's own [`Core`] for ends with no host, whose bytes are
//! moved both ways here. One call per loop turn, [`Server::links_turn`].

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token, Waker};
use slab::Slab;

use super::Server;
use crate::amqp::Core;
use crate::link::{End, Io, Side};
use crate::tls::TlsConn;

use super::transport::{Dest, Got, Transport};

/// Link sockets have tokens from here up.
pub(super) const LINK_BASE: usize = usize::MAX / 4;
/// Most link sockets at once.
pub(super) const MAX_LINK_SOCKS: usize = 4096;
/// How long connecting (TCP and the AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads per link socket per turn.
const MAX_READS: usize = 16;

/// A socket to a remote broker.
struct LinkSock {
    stream: TcpStream,
    connected: bool,
    readable: bool,
    /// Plain, or TLS for an `amqps://` end: the same read and write
    /// paths as every other socket.
    transport: Transport,
}

/// The resolver thread: requests in, answers out (and a wake-up).
struct Resolver {
    ask: mpsc::Sender<(u64, String, u16)>,
    answers: mpsc::Receiver<(u64, io::Result<Vec<SocketAddr>>)>,
}

impl Resolver {
    fn start(waker: Arc<Waker>) -> io::Result<Resolver> {
        let (ask, requests) = mpsc::channel::<(u64, String, u16)>();
        let (tell, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("warren-dns".into())
            .spawn(move || {
                for (n, host, port) in requests {
                    let r = (host.as_str(), port)
                        .to_socket_addrs()
                        .map(Iterator::collect);
                    if tell.send((n, r)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver { ask, answers })
    }
}

/// The link transports' state.
#[derive(Default)]
pub(super) struct LinkIo {
    socks: Slab<LinkSock>,
    resolver: Option<Resolver>,
    next_request: u64,
    /// Local ends had bytes to move: turn again at once.
    pub busy: bool,
    /// The next time a link needs the loop (reconnect, heartbeat, timeout).
    pub deadline: Option<Instant>,
}

impl Server {
    /// A poll event for link socket `i`.
    pub(super) fn link_event(&mut self, i: usize, readable: bool, writable: bool) {
        if let Some(s) = self.link_io.socks.get_mut(i) {
            s.readable |= readable;
            if writable && !s.connected {
                s.connected = s.stream.peer_addr().is_ok();
                if !s.connected {
                    s.readable = true;
                }
            }
        }
    }

    /// One turn of every link: parameter changes, transports, bytes both
    /// ways, the links' own logic, and closing what is done.
    pub(super) fn links_turn(&mut self, scratch: &mut [u8], now: Instant) {
        let Server {
            core,
            link_io,
            poll,
            waker,
            ..
        } = self;
        core.links.sync(&mut core.engine);
        // Answers from the resolver.
        let mut resolved = Vec::new();
        if let Some(r) = &link_io.resolver {
            while let Ok(a) = r.answers.try_recv() {
                resolved.push(a);
            }
        }
        let mut busy = false;
        let mut deadline: Option<Instant> = None;
        let mut soon = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
            }
        };
        for (idx, side) in core.links.end_keys() {
            let Some(mut end) = core.links.drop_end(idx, side) else {
                continue;
            };
            if let Some(Io::Resolving(n)) = end.io {
                if let Some(pos) = resolved.iter().position(|(m, _)| *m == n) {
                    let (_, r) = resolved.swap_remove(pos);
                    end.io = None;
                    match r {
                        Ok(addrs) if !addrs.is_empty() => {
                            connect(link_io, poll, &mut end, &addrs, now)
                        }
                        Ok(_) => end.client.transport_closed("the host name has no address"),
                        Err(e) => end
                            .client
                            .transport_closed(&format!("cannot resolve the host name: {e}")),
                    }
                }
            }
            if end.io.is_none() && !end.client.is_closed() {
                start(core, link_io, poll, waker, &mut end, now);
            }
            match end.io {
                Some(Io::Local(cid)) => busy |= pump_local(core, &mut end, cid, now),
                Some(Io::Sock(i)) => read_sock(link_io, &mut end, i, scratch, now),
                _ => {}
            }
            if end.client.is_ready() {
                end.connect_by = None;
            }
            soon(end.client.tick(now));
            soon(end.connect_by);
            put_back(core, idx, side, end);
        }
        core.links.step(&mut core.engine, now);
        soon(core.links.deadline());
        // What the links' logic produced goes out now; finished ends close.
        for (idx, side) in core.links.end_keys() {
            let Some(mut end) = core.links.drop_end(idx, side) else {
                continue;
            };
            match end.io {
                Some(Io::Local(cid)) => busy |= pump_local(core, &mut end, cid, now),
                Some(Io::Sock(i)) => write_sock(link_io, &mut end, i, now),
                _ => {}
            }
            if end.client.is_closed() {
                teardown(core, link_io, poll, end, now);
            } else {
                put_back(core, idx, side, end);
            }
        }
        for mut end in std::mem::take(&mut core.links.retired) {
            end.client.close();
            if let Some(Io::Local(cid)) = end.io {
                pump_local(core, &mut end, cid, now);
            }
            if let Some(Io::Sock(i)) = end.io {
                write_sock(link_io, &mut end, i, now);
            }
            teardown(core, link_io, poll, end, now);
        }
        link_io.busy = busy;
        link_io.deadline = deadline;
    }
}

fn put_back(core: &mut Core, idx: usize, side: Side, end: End) {
    if let Some(s) = core.links.shovels.get_mut(idx) {
        match side {
            Side::Src => s.src = Some(end),
            Side::Dest => s.dest = Some(end),
        }
    }
}

/// Give an end a transport: a connection inside this broker, or a socket
/// (after resolving its host name on the resolver thread).
fn start(
    core: &mut Core,
    link_io: &mut LinkIo,
    poll: &mio::Poll,
    waker: &Arc<Waker>,
    end: &mut End,
    now: Instant,
) {
    end.connect_by = Some(now + CONNECT_TIMEOUT);
    let Some(host) = end.uri.host.clone() else {
        let user = end
            .uri
            .user
            .clone()
            .unwrap_or_else(|| core.engine.config.default_user.clone());
        end.io = Some(Io::Local(core.accept_internal(&user, now)));
        return;
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, end.uri.port);
        return connect(link_io, poll, end, &[addr], now);
    }
    if link_io.resolver.is_none() {
        match Resolver::start(waker.clone()) {
            Ok(r) => link_io.resolver = Some(r),
            Err(e) => {
                end.client
                    .transport_closed(&format!("cannot start the resolver thread: {e}"));
                return;
            }
        }
    }
    link_io.next_request += 1;
    let n = link_io.next_request;
    if let Some(r) = &link_io.resolver {
        if r.ask.send((n, host, end.uri.port)).is_err() {
            link_io.resolver = None;
            end.client.transport_closed("the resolver thread is gone");
            return;
        }
    }
    end.io = Some(Io::Resolving(n));
}

/// Connect a socket to the first address (non-blocking).
fn connect(
    link_io: &mut LinkIo,
    poll: &mio::Poll,
    end: &mut End,
    addrs: &[SocketAddr],
    now: Instant,
) {
    let Some(&addr) = addrs.first() else {
        return end.client.transport_closed("no address to connect to");
    };
    if link_io.socks.len() >= MAX_LINK_SOCKS {
        return end.client.transport_closed("too many link sockets");
    }
    let transport = if end.uri.tls {
        let host = end.uri.host.clone().unwrap_or_default();
        match crate::tls::client::config(&host, &end.uri.query)
            .and_then(|(config, name)| TlsConn::client(config, name))
        {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(e) => return end.client.transport_closed(&e.to_string()),
        }
    } else {
        Transport::Plain
    };
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            return end
                .client
                .transport_closed(&format!("connect to {addr}: {e}"))
        }
    };
    let _ = stream.set_nodelay(true);
    let entry = link_io.socks.vacant_entry();
    let i = entry.key();
    if let Err(e) = poll.registry().register(
        &mut stream,
        Token(LINK_BASE + i),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        return end
            .client
            .transport_closed(&format!("register socket: {e}"));
    }
    entry.insert(LinkSock {
        stream,
        connected: false,
        readable: false,
        transport,
    });
    end.io = Some(Io::Sock(i));
    end.connect_by = Some(now + CONNECT_TIMEOUT);
}

/// Move bytes between a local end's client and its connection inside
/// the core; true when any moved.
fn pump_local(core: &mut Core, end: &mut End, cid: crate::broker::ConnId, now: Instant) -> bool {
    let mut moved = false;
    if core.conn(cid).is_none() {
        end.client.transport_closed("the local connection is gone");
        return false;
    }
    if !end.client.output().is_empty() && core.wants_read(cid) {
        let bytes = end.client.output().take_all();
        end.client.wrote(now);
        core.feed(cid, &bytes, now);
        moved = true;
    }
    if let Some(out) = core.outbox(cid) {
        if !out.is_empty() {
            let bytes = out.take_all();
            core.output_drained(cid);
            end.client.input(&bytes, now);
            moved = true;
        }
    }
    if core.is_dead(cid) {
        end.client
            .transport_closed("the local connection was closed");
    }
    moved
}

fn read_sock(link_io: &mut LinkIo, end: &mut End, i: usize, scratch: &mut [u8], now: Instant) {
    let Some(s) = link_io.socks.get_mut(i) else {
        return end.client.transport_closed("socket gone");
    };
    if !s.readable {
        return;
    }
    if !s.connected {
        if let Ok(Some(e)) | Err(e) = s.stream.take_error() {
            s.readable = false;
            return end.client.transport_closed(&format!("connect: {e}"));
        }
        match s.stream.peer_addr() {
            Ok(_) => s.connected = true,
            Err(_) => {
                s.readable = false;
                return;
            }
        }
    }
    for _ in 0..MAX_READS {
        let dest = Dest::Bytes {
            buf: end.client.input_buffer(),
            direct: None,
            max: usize::MAX,
        };
        match s.transport.read(&mut s.stream, scratch, dest) {
            Ok(Got::Bytes(_)) => end.client.process(now),
            Ok(Got::Closed) => {
                end.client.process(now);
                s.readable = false;
                return end
                    .client
                    .transport_closed("the peer closed the connection");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.readable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                s.readable = false;
                let what = if s.transport.is_tls() { "TLS" } else { "read" };
                return end.client.transport_closed(&format!("{what}: {e}"));
            }
        }
    }
}

fn write_sock(link_io: &mut LinkIo, end: &mut End, i: usize, now: Instant) {
    let Some(s) = link_io.socks.get_mut(i) else {
        return;
    };
    if !s.connected {
        return;
    }
    loop {
        let out = end.client.output();
        if out.is_empty() && !s.transport.wants_write() {
            return;
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let n = out.io_slices(&mut slices);
        match s
            .transport
            .write(&mut s.stream, slices.get(..n).unwrap_or(&[]))
        {
            Ok(w) => {
                out.consume(w.taken);
                if w.sent > 0 {
                    end.client.wrote(now);
                }
                if w.blocked || (w.taken == 0 && w.sent == 0) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return end.client.transport_closed(&format!("write: {e}")),
        }
    }
}

/// Close an end's transport (its last output written if it can be).
fn teardown(core: &mut Core, link_io: &mut LinkIo, poll: &mio::Poll, end: End, _now: Instant) {
    match end.io {
        Some(Io::Local(cid)) if core.conn(cid).is_some() => core.remove(cid),
        Some(Io::Sock(i)) if link_io.socks.contains(i) => {
            let mut s = link_io.socks.remove(i);
            let _ = poll.registry().deregister(&mut s.stream);
            let _ = s.stream.shutdown(std::net::Shutdown::Both);
        }
        _ => {}
    }
}
