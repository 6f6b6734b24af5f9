//! The I/O file: one mio `Poll` owns the listeners and every socket; bytes go
//! into the sans-IO [`Core`] and its output comes back out. One loop turn:
//! poll → accept / read (capped per connection, with revisits) → timers →
//! write every connection that has output (vectored, once per turn) → close
//! finished connections. Like Redis's ae.c plus the I/O half of networking.c.
//! Out of file descriptors, accepting is retried on a timer, and one held
//! in reserve lets the management API still answer (its health checks fail).

use std::io::{self, IoSlice, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::amqp::{Core, ReadHint};
use crate::broker::ConnId;
use crate::config::Config;

use crate::tls::TlsConn;

mod http;
mod links;
mod notify;
mod transport;

use http::{Http, HttpKind};
use links::{LinkIo, LINK_BASE, MAX_LINK_SOCKS};
use notify::Notifier;
use transport::{Dest, Got, Transport};

// Tokens: AMQP sockets from 0 (their connection's slab index), management
// HTTP sockets from HTTP_BASE, AMQP listeners in
// LISTENER_BASE..LISTENER_BASE + MAX_LISTENERS, and the fixed tokens above
// them; the ranges do not overlap.
const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1024;
/// Most AMQP listeners (their tokens stay below the fixed ones).
const MAX_LISTENERS: usize = 1000;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per loop turn before others get a go.
const MAX_READS_PER_TURN: usize = 16;
/// Outboxes' worth (`max_outbox`) written to one connection per turn at
/// most (see `Server::write_sock`).
const WRITE_BUDGET: usize = 4;
/// How long shutdown waits for close frames to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a finished connection waits for the peer to close its side
/// (RabbitMQ bounds its closing phase too).
const LINGER: Duration = Duration::from_secs(3);
/// The management HTTP listener.
const MGMT_LISTENER: Token = Token(usize::MAX - 1);
/// The Prometheus metrics listener (RabbitMQ's port 15692).
const PROM_LISTENER: Token = Token(usize::MAX - 2);
/// The management API's HTTPS listener (RabbitMQ's port 15671).
const MGMT_TLS_LISTENER: Token = Token(usize::MAX - 3);
/// Management HTTP sockets have tokens from here up (below the listeners,
/// at most MAX_HTTP_CONNS of them).
const HTTP_BASE: usize = usize::MAX / 2;
/// Most management HTTP connections at once; more are refused.
const MAX_HTTP_CONNS: usize = 256;
/// How often accepting is retried while it fails for want of resources.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// Accepting connections fails, mostly for want of resources (EMFILE: out
/// of file descriptors, ENFILE, ENOBUFS, ENOMEM). The connections already
/// waiting in the listen backlog get no new readiness event (polling is
/// edge-triggered), so accepting is retried on a timer, and as soon as a
/// socket closes, until it works again. Near the limit it may fail and work
/// by turns: the log has at most one line a second about it, with a count.
#[derive(Default)]
struct AcceptTrouble {
    /// Failing since (None: it works).
    since: Option<Instant>,
    /// The last failure.
    error: String,
    /// Failures not reported yet.
    unlogged: u64,
    /// When the last line about it was logged.
    last_log: Option<Instant>,
    /// A failure was reported and its end not yet.
    reported: bool,
}

impl AcceptTrouble {
    fn failing(&self) -> bool {
        self.since.is_some()
    }

    fn may_log(&self, now: Instant) -> bool {
        self.last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY)
    }

    /// Count a failure; log at most once per [`ACCEPT_LOG_EVERY`].
    fn failed(&mut self, what: &str, e: &io::Error, now: Instant) {
        let since = *self.since.get_or_insert(now);
        self.error = e.to_string();
        self.unlogged += 1;
        if self.may_log(now) {
            error!(
                "{what} accept failed: {e} ({} times since the last report, failing for {:.1} s); retrying",
                self.unlogged,
                now.duration_since(since).as_secs_f64()
            );
            self.unlogged = 0;
            self.last_log = Some(now);
            self.reported = true;
        }
    }

    /// Accepting works (again); logged if its failing was.
    fn cleared(&mut self, what: &str, now: Instant) {
        let Some(since) = self.since.take() else {
            return;
        };
        if self.reported {
            info!(
                "{what} accepting connections again after {:.1} s ({})",
                now.duration_since(since).as_secs_f64(),
                self.error
            );
            self.last_log = Some(now);
            self.reported = false;
        }
    }
}

/// Errors of `accept` about one connection (it went away while waiting, a
/// signal): the next may be fine. Any other error (out of file descriptors
/// or memory) lasts a while.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// EMFILE or ENFILE.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// AMQP 0-9-1.
    Amqp,
    /// MQTT.
    Mqtt,
    /// MQTT over WebSocket.
    MqttWs,
}

/// The MQTT listeners' addresses (see [`Running::mqtt_addrs`]).
#[derive(Debug, Clone, Default)]
pub struct MqttAddrs {
    /// MQTT over TCP.
    pub tcp: Vec<SocketAddr>,
    /// MQTT over TLS.
    pub tls: Vec<SocketAddr>,
    /// MQTT over WebSocket.
    pub ws: Vec<SocketAddr>,
}

impl MqttAddrs {
    fn of(list: &[(Door, bool, SocketAddr)]) -> MqttAddrs {
        let mut a = MqttAddrs::default();
        for &(door, tls, addr) in list {
            match (door, tls) {
                (Door::MqttWs, _) => a.ws.push(addr),
                (_, true) => a.tls.push(addr),
                _ => a.tcp.push(addr),
            }
        }
        a
    }
}

/// A socket and the connection it carries.
struct Sock {
    stream: TcpStream,
    id: ConnId,
    /// Reading stopped because of the per-turn cap or backpressure; input
    /// may be pending without a new readiness event.
    read_pending: bool,
    /// Its index is in `Server::pending_reads`.
    listed: bool,
    /// The connection is finished and its last frames are written: our
    /// side is shut down for writing (a FIN after them), and what the peer
    /// still sends is read and dropped until it closes its side or this
    /// time passes. Closing with unread input would send a reset instead,
    /// which can destroy those last frames before the peer reads them.
    linger_until: Option<Instant>,
    /// Plain, or TLS for a socket accepted on a TLS listener (the
    /// connection sees plaintext only).
    transport: Transport,
}

/// A bound broker, ready to run.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Whether each of `listeners` is TLS, and its protocol (same indexes).
    listener_kind: Vec<(bool, Door)>,
    addrs: Vec<SocketAddr>,
    /// The MQTT listeners' addresses.
    mqtt_addrs: Vec<(Door, bool, SocketAddr)>,
    /// The TLS listeners' addresses.
    tls_addrs: Vec<SocketAddr>,
    socks: Vec<Option<Sock>>,
    /// Indexes of sockets that may have input to read: a turn visits these,
    /// not every socket (10,000 idle connections cost nothing per turn).
    pending_reads: Vec<usize>,
    core: Core,
    stop: Arc<AtomicBool>,
    /// Set by [`Handle::reload_certificates`].
    reload: Arc<AtomicBool>,
    waker: Arc<Waker>,
    http: Http,
    /// Accepting AMQP connections fails for want of resources.
    accept_trouble: AcceptTrouble,
    /// When to try the listeners again (while accepting fails).
    accept_retry: Option<Instant>,
    /// Outbound links' sockets and resolver.
    link_io: LinkIo,
    /// systemd's notification socket, when asked for
    /// ([`Server::notify_service_manager`]).
    notify: Option<Notifier>,
}

/// Controls a running broker from another thread.
#[derive(Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Handle {
    /// Ask the broker to read its TLS certificate and key files again
    /// (what SIGHUP does): new connections use them, existing ones keep
    /// theirs, and a bad file is logged and the old certificate stays.
    pub fn reload_certificates(&self) {
        self.reload.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("could not wake the broker loop: {e}");
        }
    }

    /// Ask the broker to close every connection (320) and stop.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("could not wake the broker loop: {e}");
        }
    }
}

/// A broker running on its own thread.
pub struct Running {
    handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    mqtt_addrs: Vec<(Door, bool, SocketAddr)>,
    mgmt_addr: Option<SocketAddr>,
    mgmt_tls_addr: Option<SocketAddr>,
    prom_addr: Option<SocketAddr>,
}

impl Running {
    /// The MQTT listeners' addresses: plain TCP, TLS, WebSocket.
    pub fn mqtt_addrs(&self) -> MqttAddrs {
        MqttAddrs::of(&self.mqtt_addrs)
    }

    /// The addresses it listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The addresses its TLS (AMQPS) listeners listen on.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The management HTTP API's address, if it listens.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.mgmt_addr
    }

    /// The Prometheus metrics listener's address, if it listens.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prom_addr
    }

    /// The management API's HTTPS listener's address, if it listens.
    pub fn management_tls_addr(&self) -> Option<SocketAddr> {
        self.mgmt_tls_addr
    }

    /// A handle to stop it from elsewhere.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stop it and wait for its thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("broker thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

impl Server {
    /// Bind every configured listener (port 0 = an ephemeral port), then
    /// open the data directory. All listeners come first: a port in use
    /// stops the start (the error names the address) before the data
    /// directory is created, locked or recovered.
    pub fn bind(config: Config) -> io::Result<Server> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.extend(bind_amqp(*addr)?);
        }
        let mut listener_kind = vec![(false, Door::Amqp); listeners.len()];
        let any_tls = !config.tls_listen.is_empty() || !config.mqtt.tls_listen.is_empty();
        let certs = crate::tls::Certificates::new(
            any_tls.then_some(&config.tls),
            config.management_tls_listen.map(|_| &config.management_tls),
        )?;
        let more = [
            (&config.tls_listen, true, Door::Amqp),
            (&config.mqtt.listen, false, Door::Mqtt),
            (&config.mqtt.tls_listen, true, Door::Mqtt),
            (&config.mqtt.ws_listen, false, Door::MqttWs),
        ];
        for (addrs, tls, door) in more {
            for addr in addrs {
                let bound = bind_amqp(*addr)?;
                listener_kind.extend(std::iter::repeat_n((tls, door), bound.len()));
                listeners.extend(bound);
            }
        }
        let mgmt = config
            .management_listen
            .map(|a| bind_listener(a, "the management API"))
            .transpose()?;
        let mgmt_tls = config
            .management_tls_listen
            .map(|a| bind_listener(a, "the management API over HTTPS"))
            .transpose()?;
        let prom = config
            .prometheus_listen
            .map(|a| bind_listener(a, "Prometheus metrics"))
            .transpose()?;
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} AMQP listeners: at most {MAX_LISTENERS}",
                    listeners.len()
                ),
            ));
        }
        let mut engine = crate::engine::Engine::open(config.clone())?;
        crate::mgmt::definitions::load_file(&mut engine)?;
        let mut core = Core::with_engine(engine);
        core.links.boot(&mut core.engine);
        core.mqtt_load_retained();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let mut mqtt_addrs = Vec::new();
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            let local = l.local_addr()?;
            match listener_kind.get(i).copied().unwrap_or((false, Door::Amqp)) {
                (true, Door::Amqp) => {
                    info!("started TLS (AMQPS) listener on {local}");
                    tls_addrs.push(local);
                }
                (false, Door::Amqp) => {
                    info!("started TCP listener on {local}");
                    addrs.push(local);
                }
                (tls, door) => {
                    info!(
                        "started MQTT {} listener on {local}",
                        match (tls, door) {
                            (true, _) => "TLS",
                            (_, Door::MqttWs) => "WebSocket",
                            _ => "TCP",
                        }
                    );
                    mqtt_addrs.push((door, tls, local));
                }
            }
        }
        let mut http = Http::bind(&poll, mgmt, mgmt_tls, prom, &addrs)?;
        http.mgmt.amqps_addrs = tls_addrs.clone();
        http.mgmt.tls = certs;
        Ok(Server {
            poll,
            listeners,
            listener_kind,
            addrs,
            mqtt_addrs,
            tls_addrs,
            socks: Vec::new(),
            pending_reads: Vec::new(),
            core,
            stop: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            waker,
            http,
            accept_trouble: AcceptTrouble::default(),
            accept_retry: None,
            link_io: LinkIo::default(),
            notify: None,
        })
    }

    /// Tell the service manager how the broker is doing, through the
    /// datagram socket `$NOTIFY_SOCKET` names (systemd's `Type=notify`,
    /// sd_notify(3); a path or an abstract `@name`): `READY=1` when [`run`]
    /// starts (every listener is bound and the data directory recovered by
    /// then: [`bind`] did both), `STOPPING=1` when shutdown begins, each
    /// with a `STATUS=` line. Without `$NOTIFY_SOCKET` it does nothing and
    /// returns `Ok(false)`; a name that is no socket address is an error.
    ///
    /// [`run`]: Server::run
    /// [`bind`]: Server::bind
    pub fn notify_service_manager(&mut self) -> io::Result<bool> {
        self.notify = Notifier::from_env()?;
        Ok(self.notify.is_some())
    }

    /// The `STATUS=` line of `READY=1`: what is served where.
    fn ready_status(&self) -> String {
        let mut parts = Vec::new();
        let list = |l: &[SocketAddr]| {
            l.iter()
                .map(|a| a.to_string())
                .collect::<Vec<String>>()
                .join(" ")
        };
        if !self.addrs.is_empty() {
            parts.push(format!("AMQP {}", list(&self.addrs)));
        }
        if !self.tls_addrs.is_empty() {
            parts.push(format!("AMQPS {}", list(&self.tls_addrs)));
        }
        let mqtt: Vec<SocketAddr> = self.mqtt_addrs.iter().map(|&(_, _, a)| a).collect();
        if !mqtt.is_empty() {
            parts.push(format!("MQTT {}", list(&mqtt)));
        }
        if let Some(a) = self.management_addr() {
            parts.push(format!("management {a}"));
        }
        if parts.is_empty() {
            "running, no listeners".to_string()
        } else {
            format!("serving {}", parts.join(", "))
        }
    }

    /// The management HTTP API's address, if it listens.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.http.mgmt.http_addr
    }

    /// The Prometheus metrics listener's address, if it listens.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.http.mgmt.prometheus_addr
    }

    /// The management API's HTTPS listener's address, if it listens.
    pub fn management_tls_addr(&self) -> Option<SocketAddr> {
        self.http.mgmt.https_addr
    }

    /// The MQTT listeners' addresses: plain TCP, TLS, WebSocket.
    pub fn mqtt_addrs(&self) -> MqttAddrs {
        MqttAddrs::of(&self.mqtt_addrs)
    }

    /// The addresses actually bound (plain AMQP listeners).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS (AMQPS) listeners' addresses actually bound.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// A handle to stop the server from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            stop: self.stop.clone(),
            reload: self.reload.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Run on a new thread.
    pub fn spawn(self) -> io::Result<Running> {
        let handle = self.handle();
        let addrs = self.addrs.clone();
        let tls_addrs = self.tls_addrs.clone();
        let mqtt_addrs = self.mqtt_addrs.clone();
        let mgmt_addr = self.management_addr();
        let mgmt_tls_addr = self.management_tls_addr();
        let prom_addr = self.prometheus_addr();
        let thread = std::thread::Builder::new()
            .name("warren".into())
            .spawn(move || self.run())?;
        Ok(Running {
            handle,
            thread: Some(thread),
            addrs,
            tls_addrs,
            mqtt_addrs,
            mgmt_addr,
            mgmt_tls_addr,
            prom_addr,
        })
    }

    /// Run the event loop on this thread until shut down.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; READ_CHUNK];
        let mut flush = Vec::new();
        let mut next_tick = Instant::now();
        let mut stopping: Option<Instant> = None;
        if let Some(n) = &self.notify {
            n.notify(&format!(
                "READY=1\nMAINPID={}\nSTATUS={}",
                std::process::id(),
                self.ready_status()
            ));
        }
        loop {
            let now = Instant::now();
            let revisit = self.pending_reads.iter().any(|&idx| {
                self.socks
                    .get(idx)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| s.read_pending && self.core.wants_read(s.id))
            }) || self.http.read_pending();
            let wake = self
                .core
                .wake_hint()
                .map_or(next_tick, |h| h.min(next_tick));
            let wake = self.accept_retry.map_or(wake, |r| r.min(wake));
            let wake = self.link_io.deadline.map_or(wake, |l| l.min(wake));
            let revisit =
                revisit || self.core.has_flush() || self.core.has_dispatch() || self.link_io.busy;
            let timeout = if revisit {
                Duration::ZERO
            } else {
                wake.saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    MGMT_LISTENER => self.accept_http(HttpKind::Api, now),
                    MGMT_TLS_LISTENER => self.accept_http(HttpKind::Https, now),
                    PROM_LISTENER => self.accept_http(HttpKind::Metrics, now),
                    Token(t) if (LISTENER_BASE..LISTENER_BASE + MAX_LISTENERS).contains(&t) => {
                        self.accept(t - LISTENER_BASE, now)
                    }
                    Token(t) if (HTTP_BASE..HTTP_BASE + MAX_HTTP_CONNS).contains(&t) => {
                        if let Some(s) = self.http.socks.get_mut(t - HTTP_BASE) {
                            s.read_pending |=
                                ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        }
                        if ev.is_writable() {
                            self.write_http(t - HTTP_BASE, now);
                        }
                    }
                    Token(t) if (LINK_BASE..LINK_BASE + MAX_LINK_SOCKS).contains(&t) => self
                        .link_event(
                            t - LINK_BASE,
                            ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                            ev.is_writable() || ev.is_error(),
                        ),
                    Token(idx) if idx < HTTP_BASE => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.mark_read_pending(idx);
                        }
                        if ev.is_writable() {
                            if let Some(id) = self.sock_id(idx) {
                                self.core.mark_flush(id);
                            }
                        }
                    }
                    Token(_) => {}
                }
            }
            if self.accept_retry.is_some_and(|r| now >= r) {
                self.accept_retry = None;
                if self.accept_trouble.failing() {
                    for i in 0..self.listeners.len() {
                        self.accept(i, now);
                    }
                }
                let recheck = self.http.recheck && self.http.reserve.is_some();
                if self.http.trouble.failing() || recheck {
                    self.http.recheck = false;
                    self.accept_http(HttpKind::Api, now);
                    self.accept_http(HttpKind::Https, now);
                    self.accept_http(HttpKind::Metrics, now);
                }
            }
            if self.reload.swap(false, Ordering::SeqCst) {
                // Errors are logged; the certificates in use stay.
                let _ = self.http.mgmt.tls.reload();
            }
            if self.stop.load(Ordering::SeqCst) && stopping.is_none() {
                info!("shutting down: closing all connections");
                if let Some(n) = &self.notify {
                    n.notify("STOPPING=1\nSTATUS=shutting down: closing all connections");
                }
                self.core.close_all(
                    "broker forced connection closure with reason 'shutdown'",
                    now,
                );
                stopping = Some(now);
            }
            // Read every socket with pending input (fair: capped per turn);
            // those cut off by the cap or by backpressure stay listed.
            for idx in std::mem::take(&mut self.pending_reads) {
                if let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) {
                    s.listed = false;
                }
                self.read_sock(idx, &mut scratch, now);
                if self
                    .socks
                    .get(idx)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| s.read_pending)
                {
                    self.mark_read_pending(idx);
                }
            }
            self.serve_http(&mut scratch, now);
            if std::mem::take(&mut self.http.mgmt.shutdown_requested) {
                // `POST /api/shutdown`, answered above: the next turn stops
                // as on SIGTERM.
                self.stop.store(true, Ordering::SeqCst);
                if let Err(e) = self.waker.wake() {
                    error!("could not wake the broker loop: {e}");
                }
            }
            self.links_turn(&mut scratch, now);
            if now >= next_tick || self.core.wake_hint().is_some_and(|h| now >= h) {
                self.core.tick(now);
                next_tick = self.core.next_deadline(now);
                self.http_timers(now);
                // Connections that died without output to flush, and
                // lingering ones whose time is up.
                self.reap(0..self.socks.len(), now);
            }
            self.core.end_turn(now);
            self.core.take_flush_list(&mut flush);
            for &id in &flush {
                self.write_sock(id, now);
            }
            self.reap(flush.iter().map(|id| id.idx as usize), now);
            if self.core.should_trim() {
                trim_heap();
            }
            if let Some(since) = stopping {
                if self.socks.iter().all(|s| s.is_none())
                    || now.duration_since(since) >= SHUTDOWN_GRACE
                {
                    let ids: Vec<ConnId> = self.socks.iter().flatten().map(|s| s.id).collect();
                    for id in ids {
                        self.core.remove(id);
                    }
                    self.core.end_turn(now);
                    self.core.engine.close_store();
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    fn sock_id(&self, idx: usize) -> Option<ConnId> {
        self.socks.get(idx).and_then(|s| s.as_ref()).map(|s| s.id)
    }

    fn accept(&mut self, i: usize, now: Instant) {
        loop {
            let Some(l) = self.listeners.get(i) else {
                return;
            };
            let (is_tls, door) = self
                .listener_kind
                .get(i)
                .copied()
                .unwrap_or((false, Door::Amqp));
            match l.accept() {
                Ok((mut stream, peer)) => {
                    self.accept_trouble.cleared("AMQP", now);
                    self.http.mgmt.accept_error = None;
                    let transport = match (&self.http.mgmt.tls.amqp, is_tls) {
                        (Some(config), true) => match TlsConn::new(config.clone()) {
                            Ok(t) => Transport::Tls(Box::new(t)),
                            Err(e) => {
                                error!("{peer}: TLS session: {e}; closed");
                                continue;
                            }
                        },
                        _ => Transport::Plain,
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        warn!("{peer}: set_nodelay: {e}");
                    }
                    // A dual-stack listener's IPv4 peers as IPv4 (RabbitMQ too).
                    let canonical =
                        |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
                    let peer = canonical(peer);
                    let id = match door {
                        Door::Amqp => self.core.accept(peer, now),
                        Door::Mqtt => self.core.accept_mqtt(peer, now, false),
                        Door::MqttWs => self.core.accept_mqtt(peer, now, true),
                    };
                    if let Some(c) = self.core.conn_mut(id) {
                        c.local = stream.local_addr().ok().map(canonical);
                    }
                    let idx = id.idx as usize;
                    if let Err(e) = register(self.poll.registry(), &mut stream, idx) {
                        error!("{peer}: register: {e}");
                        self.core.remove(id);
                        continue;
                    }
                    if self.socks.len() <= idx {
                        self.socks.resize_with(idx + 1, || None);
                    }
                    if let Some(slot) = self.socks.get_mut(idx) {
                        *slot = Some(Sock {
                            stream,
                            id,
                            read_pending: true,
                            listed: false,
                            linger_until: None,
                            transport,
                        });
                    }
                    self.mark_read_pending(idx);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Linux takes the new descriptor before it looks at the
                    // backlog: an empty backlog means descriptors are there.
                    if self.accept_trouble.failing() {
                        self.accept_trouble.cleared("AMQP", now);
                        self.http.mgmt.accept_error = None;
                    }
                    return;
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    // Out of descriptors (or memory): the connections
                    // waiting in the backlog stay there, and no new event
                    // comes for them; try again soon.
                    self.accept_trouble.failed("AMQP", &e, now);
                    self.http.mgmt.accept_error = Some(e.to_string());
                    self.retry_accept(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Try the listeners again at `at` (or sooner, if asked before).
    fn retry_accept(&mut self, at: Instant) {
        self.accept_retry = Some(self.accept_retry.map_or(at, |r| r.min(at)));
    }

    /// Read a socket with pending input, through its transport, into its
    /// connection, and process what came (at most `MAX_READS_PER_TURN`
    /// reads; backpressure leaves input in the kernel). A TLS error
    /// (garbage, plain AMQP on the TLS port, a failed handshake) closes
    /// this socket alone, after its alert if that can be written at once.
    fn read_sock(&mut self, idx: usize, scratch: &mut [u8], now: Instant) {
        let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) else {
            return;
        };
        if !s.read_pending {
            return;
        }
        let id = s.id;
        if s.linger_until.is_some() {
            self.drain_lingering(idx, scratch);
            return;
        }
        for _ in 0..MAX_READS_PER_TURN {
            if !self.core.wants_read(id) {
                // Backpressure: leave the input in the kernel until our
                // output to this peer drains.
                return;
            }
            let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) else {
                return;
            };
            let (direct, max) = match self.core.read_hint(id) {
                ReadHint::Direct(n) => (Some(n), usize::MAX),
                ReadHint::Scratch(m) => (None, m),
            };
            let Some(buf) = self.core.input_buffer(id) else {
                return;
            };
            let res = s
                .transport
                .read(&mut s.stream, scratch, Dest::Bytes { buf, direct, max });
            if let Some(info) = s.transport.take_info() {
                // Before the plaintext is processed: connection.start
                // offers EXTERNAL by what the handshake verified.
                self.core.set_tls(id, info);
            }
            let wants_write = s.transport.wants_write();
            match res {
                Ok(Got::Bytes(n)) => {
                    self.core.count_io(id, n, 0);
                    self.core.process(id, now);
                    if wants_write {
                        // Handshake records (or a key update) to send.
                        self.core.mark_flush(id);
                    }
                }
                Ok(Got::Closed) => {
                    // What came before the end is still handled.
                    self.core.process(id, now);
                    s.read_pending = false;
                    self.close_sock(idx);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.read_pending = false;
                    self.core.input_idle(id);
                    if wants_write {
                        self.core.mark_flush(id);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if s.transport.is_tls() {
                        let peer = s
                            .stream
                            .peer_addr()
                            .map_or_else(|_| "?".to_string(), |p| p.to_string());
                        warn!("TLS connection from {peer}: {e}; closing it");
                        // Its alert, if the socket takes it now.
                        let _ = s.transport.flush(&mut s.stream);
                    } else {
                        info!("connection {idx}: read error: {e}");
                    }
                    s.read_pending = false;
                    self.close_sock(idx);
                    return;
                }
            }
        }
        // Cap reached: `read_pending` stays set, so the next turn polls with
        // a zero timeout and comes back here.
    }

    /// Write a connection's output through its transport until it is all
    /// out or the socket is full (its WRITABLE event then brings it back
    /// here); for TLS, pending records go out even with no output.
    ///
    /// Written output makes room for more deliveries: they are dispatched
    /// here and written too, up to [`WRITE_BUDGET`] outboxes' worth per
    /// call. Without the cap a consumer that reads as fast as it is written
    /// to would keep this loop busy until its queue is empty, the turn
    /// never ending (its acks unread, its unacknowledged deliveries piling
    /// up unmeasured); without the dispatch it would get one outbox per
    /// turn. What is left goes out next turn, after the reads.
    fn write_sock(&mut self, id: ConnId, now: Instant) {
        let idx = id.idx as usize;
        let mut budget = self
            .core
            .engine
            .config
            .max_outbox
            .saturating_mul(WRITE_BUDGET);
        loop {
            if budget == 0 {
                self.core.mark_flush(id);
                return;
            }
            let Some(s) = self
                .socks
                .get_mut(idx)
                .and_then(|s| s.as_mut())
                .filter(|s| s.id == id)
            else {
                return;
            };
            let Some(out) = self.core.outbox(id) else {
                return;
            };
            if out.is_empty() && !s.transport.wants_write() {
                return;
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let n = out.io_slices(&mut slices);
            let res = s
                .transport
                .write(&mut s.stream, slices.get(..n).unwrap_or(&[]));
            match res {
                Ok(w) => {
                    if w.taken > 0 {
                        out.consume(w.taken);
                        budget = budget.saturating_sub(w.taken);
                    }
                    if w.sent > 0 {
                        self.core.count_io(id, 0, w.sent);
                        self.core.wrote(id, now);
                    }
                    if w.taken > 0 {
                        let was_paused = !self.core.wants_read(id);
                        self.core.output_drained(id);
                        if was_paused && self.core.wants_read(id) {
                            self.mark_read_pending(idx);
                        }
                        if budget > 0 {
                            // Consumers that got room back take more now,
                            // while this connection's budget lasts (it is
                            // read again before the next turn's share).
                            self.core.run_dispatch();
                        }
                    }
                    if w.blocked || (w.taken == 0 && w.sent == 0) {
                        // Full, or nothing more can go before the TLS
                        // handshake progresses.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    info!("connection {idx}: write error: {e}");
                    self.close_sock(idx);
                    return;
                }
            }
        }
    }

    /// Note that socket `idx` may have input, and list it for the next read pass.
    fn mark_read_pending(&mut self, idx: usize) {
        if let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) {
            s.read_pending = true;
            if !s.listed {
                s.listed = true;
                self.pending_reads.push(idx);
            }
        }
    }

    /// Sockets `idxs` whose connection is finished and whose output is
    /// written start lingering (see [`Sock::linger_until`]); lingering ones
    /// whose time is up are closed.
    fn reap(&mut self, idxs: impl Iterator<Item = usize>, now: Instant) {
        for idx in idxs {
            let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) else {
                continue;
            };
            let id = s.id;
            if let Some(until) = s.linger_until {
                if now >= until {
                    self.close_sock(idx);
                }
                continue;
            }
            let done = self.core.is_dead(id) && self.core.outbox(id).is_none_or(|o| o.is_empty());
            if !done {
                continue;
            }
            // A TLS session ends with close_notify; once it is written
            // (a WRITABLE event brings the rest), the socket lingers.
            s.transport.close();
            match s.transport.flush(&mut s.stream) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => {
                    self.close_sock(idx);
                    continue;
                }
            }
            // The peer may close first (after our close-ok), or already has.
            if s.stream.shutdown(std::net::Shutdown::Write).is_err() {
                self.close_sock(idx);
                continue;
            }
            s.linger_until = Some(now + LINGER);
            self.mark_read_pending(idx);
        }
    }

    /// Read and drop what a lingering socket's peer sends; close it when the
    /// peer has closed its side (or on an error). A peer that keeps sending
    /// is read again next turn (`read_pending` stays set), at most until
    /// its lingering time is up.
    fn drain_lingering(&mut self, idx: usize, scratch: &mut [u8]) {
        let Some(s) = self.socks.get_mut(idx).and_then(|s| s.as_mut()) else {
            return;
        };
        for _ in 0..MAX_READS_PER_TURN {
            match s.stream.read(scratch) {
                Ok(0) => {
                    s.read_pending = false;
                    self.close_sock(idx);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.read_pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    s.read_pending = false;
                    self.close_sock(idx);
                    return;
                }
            }
        }
    }

    fn close_sock(&mut self, idx: usize) {
        let Some(mut s) = self.socks.get_mut(idx).and_then(|s| s.take()) else {
            return;
        };
        // Drain unread input so closing does not turn into a reset that
        // destroys our last frames (connection.close / close-ok) in flight.
        let mut sink = [0u8; 4096];
        while matches!(s.stream.read(&mut sink), Ok(n) if n > 0) {}
        let _ = self.poll.registry().deregister(&mut s.stream);
        let _ = s.stream.shutdown(std::net::Shutdown::Both);
        self.core.remove(s.id);
        drop(s);
        // A descriptor is free: a connection waiting to be accepted may
        // have it now.
        if self.accept_trouble.failing() || self.http.trouble.failing() {
            self.retry_accept(Instant::now());
        }
    }
}

fn register(registry: &Registry, stream: &mut TcpStream, idx: usize) -> io::Result<()> {
    registry.register(stream, Token(idx), Interest::READABLE | Interest::WRITABLE)
}

// ---------------------------------------------------------------------------
// Management HTTP API: its own listener and sockets in the same poll; bytes
// go through the sans-IO `mgmt::HttpConn`, which calls into the core.

/// A bind error that names the address and what it was for.
fn named(e: io::Error, addr: SocketAddr, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}"))
}

/// Bind one listener; the error names the address.
fn bind_listener(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| named(e, addr, what))
}

/// Bind an AMQP listener. `[::]` (a port-only listener in the config file)
/// is bound as RabbitMQ binds it: dual-stack, plus `0.0.0.0` where the host
/// keeps IPv6 sockets IPv6-only (`net.ipv6.bindv6only = 1`); on a host
/// without IPv6, `0.0.0.0` alone.
fn bind_amqp(addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
    if addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return Ok(vec![bind_listener(addr, "AMQP")?]);
    }
    let v6 = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
            ) =>
        {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            info!("no IPv6 on this host ({e}): listening on {v4} instead of {addr}");
            return Ok(vec![bind_listener(v4, "AMQP")?]);
        }
        Err(e) => return Err(named(e, addr, "AMQP")),
    };
    let port = v6.local_addr()?.port();
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    match TcpListener::bind(v4) {
        Ok(l) => Ok(vec![v6, l]),
        // The dual-stack socket already takes IPv4 connections.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(vec![v6]),
        Err(e) => Err(named(e, v4, "AMQP")),
    }
}

/// Hand free heap pages back to the system (glibc keeps them otherwise:
/// after a large queue drains, the RSS would stay at its peak).
fn trim_heap() {
    let t = Instant::now();
    crate::sys::trim_heap();
    log::debug!("malloc_trim took {:?}", t.elapsed());
}
