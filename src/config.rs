//! Broker configuration with RabbitMQ's defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Faults;

/// The TLS settings of a listener: AMQPS, or the management API over
/// HTTPS (RabbitMQ's `ssl_options.*` and `management.ssl.*`). Certificate
/// files are read at start and again on a reload (SIGHUP, `warren ctl
/// reload_certificates`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate chain (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1, not encrypted).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against.
    pub ca: Option<PathBuf>,
    /// RabbitMQ's `verify`: `Some(true)` = `verify_peer` (needs `ca`): a
    /// client certificate presented is verified, and a bad one fails the
    /// handshake; `Some(false)` = `verify_none`: none is asked for.
    /// `None`: `verify_peer` exactly when a CA is given.
    pub verify_peer: Option<bool>,
    /// RabbitMQ's `fail_if_no_peer_cert`: under `verify_peer`, a client
    /// without a certificate fails the handshake.
    pub fail_if_no_peer_cert: bool,
    /// Protocol versions allowed (RabbitMQ's `versions.N`); empty: TLS 1.2
    /// and 1.3.
    pub versions: Vec<TlsVersion>,
    /// Cipher suites allowed, by IANA or OpenSSL name (RabbitMQ's
    /// `ciphers.N`); empty: rustls' defaults. A name rustls does not
    /// implement is a start-up error.
    pub ciphers: Vec<String>,
    /// Prefer the server's cipher order to the client's (RabbitMQ's
    /// `honor_cipher_order`).
    pub honor_cipher_order: bool,
    /// More certificates, chosen by the server name (SNI) a client asks
    /// for; a client asking for none or another name gets `cert`.
    pub sni: Vec<SniCert>,
}

/// A certificate served to clients that ask for `name` (SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// The DNS name, as clients send it (case does not matter).
    pub name: String,
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM, not encrypted).
    pub key: PathBuf,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (`tlsv1.2`).
    Tls12,
    /// TLS 1.3 (`tlsv1.3`).
    Tls13,
}

/// A SASL mechanism warren can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// User name and password, RFC 4616.
    Plain,
    /// User name and password in a field table (RabbitMQ's).
    Amqplain,
    /// The verified TLS client certificate names the user (RFC 4422
    /// appendix A; RabbitMQ's `rabbitmq_auth_mechanism_ssl`).
    External,
}

impl AuthMechanism {
    /// Its name in connection.start.
    pub fn name(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Amqplain => "AMQPLAIN",
            AuthMechanism::External => "EXTERNAL",
        }
    }

    /// The mechanism called `name`, if warren has it.
    pub fn from_name(name: &[u8]) -> Option<AuthMechanism> {
        [
            AuthMechanism::Plain,
            AuthMechanism::Amqplain,
            AuthMechanism::External,
        ]
        .into_iter()
        .find(|m| m.name().as_bytes() == name)
    }
}

/// Which part of a client certificate names the user for EXTERNAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertLogin {
    /// The subject's common name (`CN`).
    CommonName,
    /// The whole subject as an RFC 4514 string (`CN=a,O=b,C=c`).
    DistinguishedName,
}

/// The MQTT front door's settings (RabbitMQ's `mqtt.*` and
/// `web_mqtt.*` keys).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// MQTT listeners (RabbitMQ: 1883).
    pub listen: Vec<SocketAddr>,
    /// MQTT over TLS listeners (RabbitMQ: 8883); they use the AMQPS
    /// certificates (`tls`).
    pub tls_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket listeners (RabbitMQ web-mqtt: 15675).
    pub ws_listen: Vec<SocketAddr>,
    /// The WebSocket path (RabbitMQ: `/ws`).
    pub ws_path: String,
    /// The vhost of clients that do not name one (`mqtt.vhost`).
    pub vhost: String,
    /// The vhost of clients that connect to a port, unless they name one
    /// (RabbitMQ's `mqtt_port_to_vhost_mapping`; config keys
    /// `mqtt.port_to_vhost.PORT`).
    pub port_vhosts: Vec<(u16, String)>,
    /// The exchange topics map onto (`mqtt.exchange`).
    pub exchange: String,
    /// Clients without credentials log in as `default_user`
    /// (`mqtt.allow_anonymous`).
    pub allow_anonymous: bool,
    /// The user anonymous clients log in as (`mqtt.default_user`).
    pub default_user: String,
    /// Its password (`mqtt.default_pass`).
    pub default_pass: String,
    /// Unacknowledged deliveries per MQTT 3.1.1 client (`mqtt.prefetch`;
    /// an MQTT 5 client's Receive Maximum replaces it).
    pub prefetch: u16,
    /// Largest packet accepted once logged in
    /// (`mqtt.max_packet_size_authenticated`).
    pub max_packet: usize,
    /// Largest packet accepted before (`mqtt.max_packet_size_unauthenticated`).
    pub max_packet_unauth: usize,
    /// Topic aliases an MQTT 5 client may use towards us.
    pub topic_alias_max: u16,
}

impl Default for MqttConfig {
    fn default() -> MqttConfig {
        MqttConfig {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            ws_listen: Vec::new(),
            ws_path: "/ws".into(),
            vhost: "/".into(),
            port_vhosts: Vec::new(),
            exchange: "amq.topic".into(),
            allow_anonymous: true,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            prefetch: 100,
            max_packet: 268_435_455,
            max_packet_unauth: 65_536,
            topic_alias_max: 64,
        }
    }
}

/// Everything the broker can be told at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// AMQP listeners (port 0 picks a free port; see `Server::local_addrs`).
    /// `[::]` is bound dual-stack (IPv4 clients too), as RabbitMQ binds a
    /// port-only listener; on a host without IPv6 it becomes `0.0.0.0`.
    pub listen: Vec<SocketAddr>,
    /// AMQPS (AMQP over TLS) listeners, bound as `listen` is; they need
    /// `tls.cert` and `tls.key` (without them the start fails).
    pub tls_listen: Vec<SocketAddr>,
    /// The AMQPS listeners' certificates and client verification
    /// (RabbitMQ's `ssl_options.*`).
    pub tls: TlsOptions,
    /// Mechanisms offered in connection.start, in this order (RabbitMQ's
    /// `auth_mechanisms.N`). Each is offered only where it can work:
    /// EXTERNAL only on a TLS connection with a verified client
    /// certificate. Default: PLAIN, AMQPLAIN, EXTERNAL.
    pub auth_mechanisms: Vec<AuthMechanism>,
    /// Where SASL EXTERNAL takes the user name from in the client
    /// certificate (RabbitMQ's `ssl_cert_login_from`; default: the
    /// distinguished name, as RabbitMQ).
    pub ssl_cert_login_from: CertLogin,
    /// MQTT settings and listeners (none by default, as RabbitMQ without
    /// its MQTT plugin).
    pub mqtt: MqttConfig,
    /// Data directory; `None` keeps everything in memory (tests, fuzzing).
    pub data_dir: Option<PathBuf>,
    /// Size at which a message store segment file is closed and a new one begun.
    pub segment_size: u64,
    /// Log bytes written between checkpoints of the store: at most about
    /// this much of the log is replayed after a crash.
    pub checkpoint_bytes: u64,
    /// Memory budget for message contents: beyond half of it new messages
    /// are paged to disk; at it, publishers are blocked.
    pub max_memory: u64,
    /// Publishers are blocked while the data directory's file system has
    /// less free space than this.
    pub min_free_disk: u64,
    /// Largest frame offered in connection.tune (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Most channels per connection offered in connection.tune (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval offered, in seconds (RabbitMQ: 60; 0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ: 128 MiB).
    pub max_message_size: u64,
    /// A peer that has not opened its connection by then is dropped.
    pub handshake_timeout: Duration,
    /// The default user, created at start.
    pub default_user: String,
    /// The default user's password.
    pub default_pass: String,
    /// The default user's tags (RabbitMQ: administrator).
    pub default_user_tags: Vec<String>,
    /// The vhost created at first start, on which the default user gets
    /// `default_permissions` (RabbitMQ: `/`).
    pub default_vhost: String,
    /// The default user's configure, write and read patterns on the
    /// default vhost (RabbitMQ: `.*` each).
    pub default_permissions: [String; 3],
    /// Users that may log in only from loopback addresses (RabbitMQ: guest).
    pub loopback_users: Vec<String>,
    /// Addresses that count as loopback for `loopback_users`; `None`: all
    /// of 127.0.0.0/8 and ::1 (also IPv4-mapped), as RabbitMQ. Like
    /// RabbitMQ's `rabbit_net:is_loopback`, the address judged is the one
    /// the client connected to (the socket's local address).
    pub loopback_addresses: Option<Vec<IpAddr>>,
    /// Most client connections at once (RabbitMQ's `connection_max`);
    /// `None`: no limit. Beyond it connection.open is refused with 530.
    pub max_connections: Option<usize>,
    /// A delivery not acknowledged within this time closes its channel with
    /// 406 and requeues what the channel held (RabbitMQ's
    /// `consumer_timeout`, default 30 minutes); `None` disables it. A
    /// queue's `x-consumer-timeout` argument or `consumer-timeout` policy,
    /// and a consumer's `x-consumer-timeout` argument, override it.
    pub consumer_timeout: Option<Duration>,
    /// Output bytes queued for one connection above which it gets no more
    /// deliveries and its input is not read until it drains.
    pub max_outbox: usize,
    /// A RabbitMQ JSON definitions file imported at every start, after the
    /// durable state is restored (`--definitions`, RabbitMQ's
    /// `load_definitions`); an import error stops the start.
    pub definitions: Option<PathBuf>,
    /// Management HTTP API and `/metrics` listener (RabbitMQ: 15672); `None`
    /// disables it. Port 0 picks a free port (see `Server::management_addr`).
    pub management_listen: Option<SocketAddr>,
    /// The management API over HTTPS (RabbitMQ's `management.ssl.port`,
    /// 15671 by convention); `None`: no HTTPS listener. Needs
    /// `management_tls.cert` and `.key`.
    pub management_tls_listen: Option<SocketAddr>,
    /// The HTTPS listener's certificates (RabbitMQ's `management.ssl.*`).
    pub management_tls: TlsOptions,
    /// Prometheus metrics listener, as RabbitMQ's `rabbitmq_prometheus`
    /// plugin serves it (RabbitMQ: 15692): `/metrics`, `/metrics/per-object`
    /// and `/metrics/detailed`. `None` disables it; port 0 picks a free port
    /// (see `Server::prometheus_addr`).
    pub prometheus_listen: Option<SocketAddr>,
    /// `/metrics` returns per-object series, as `/metrics/per-object` does
    /// (RabbitMQ's `prometheus.return_per_object_metrics`).
    pub prometheus_per_object: bool,
    /// Fault injection for tests: a simulated disk for the data directory
    /// (its free space, and failing calls of any disk operation of the
    /// store, see [`crate::store::DiskOp`]).
    #[doc(hidden)]
    pub faults: Option<Arc<Faults>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5672))],
            tls_listen: Vec::new(),
            tls: TlsOptions::default(),
            auth_mechanisms: vec![
                AuthMechanism::Plain,
                AuthMechanism::Amqplain,
                AuthMechanism::External,
            ],
            ssl_cert_login_from: CertLogin::DistinguishedName,
            mqtt: MqttConfig::default(),
            data_dir: Some(PathBuf::from("data")),
            segment_size: 8 << 20,
            checkpoint_bytes: 64 << 20,
            max_memory: 128 << 20,
            min_free_disk: 64 << 20,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_user_tags: vec!["administrator".into()],
            default_vhost: "/".into(),
            default_permissions: [".*".into(), ".*".into(), ".*".into()],
            loopback_users: vec!["guest".into()],
            loopback_addresses: None,
            max_connections: None,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            max_outbox: 1 << 20,
            definitions: None,
            management_listen: Some(SocketAddr::from(([127, 0, 0, 1], 15672))),
            management_tls_listen: None,
            management_tls: TlsOptions::default(),
            prometheus_listen: Some(SocketAddr::from(([127, 0, 0, 1], 15692))),
            prometheus_per_object: false,
            faults: None,
        }
    }
}

impl Config {
    /// Does a connection to `ip` count as local for `loopback_users`?
    pub fn is_loopback(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match &self.loopback_addresses {
            None => ip.is_loopback(),
            Some(list) => list.contains(&ip),
        }
    }

    /// May `user` log in over a connection to `ip` (RabbitMQ's
    /// `loopback_users`)?
    pub fn may_login_from(&self, user: &[u8], ip: IpAddr) -> bool {
        !self.loopback_users.iter().any(|u| u.as_bytes() == user) || self.is_loopback(ip)
    }
}
