//! `--config FILE`: RabbitMQ's `rabbitmq.conf` format (cuttlefish's
//! sysctl-like `key = value` lines, `#` comments) for the settings that
//! apply to warren, plus a few of warren's own (`data_dir`, `segment_size`,
//! `loopback_addresses`). An unknown key or a malformed value is an error
//! naming the file and the line, so a typo never silently falls back to a
//! default; every bad line of the file is reported at once.
//!
//! | key | value | Config |
//! | --- | --- | --- |
//! | `listeners.tcp.NAME` | `5672` (all interfaces: `[::]`, dual-stack, as RabbitMQ; `0.0.0.0` on a host without IPv6), `HOST:PORT`, `[::1]:PORT`, `::1:PORT` | `listen` (the first such line replaces the default) |
//! | `listeners.tcp` | `none` | `listen` emptied |
//! | `listeners.ssl.NAME` | as `listeners.tcp.NAME` (RabbitMQ's AMQPS port is 5671) | `tls_listen` (needs `ssl_options.certfile` and `.keyfile`) |
//! | `listeners.ssl` | `none` | `tls_listen` emptied |
//! | `ssl_options.certfile`, `.keyfile`, `.cacertfile` | PEM file paths (the key unencrypted) | `tls.cert`, `tls.key`, `tls.ca` |
//! | `ssl_options.verify` | `verify_peer` (the default with a CA file: a client certificate presented is verified) or `verify_none` | `tls.verify_peer` |
//! | `ssl_options.fail_if_no_peer_cert` | `true`: a client without a certificate fails the handshake | `tls.fail_if_no_peer_cert` |
//! | `ssl_options.versions.N` | `tlsv1.2`, `tlsv1.3` (older ones are refused: rustls has none) | `tls.versions` |
//! | `ssl_options.ciphers.N` | a suite rustls implements, IANA (`TLS_AES_128_GCM_SHA256`) or OpenSSL (`ECDHE-RSA-AES128-GCM-SHA256`) name | `tls.ciphers` |
//! | `ssl_options.honor_cipher_order` | `true`/`false` | `tls.honor_cipher_order` |
//! | `ssl_options.sni.HOSTNAME.certfile`, `.keyfile` | warren's own: another certificate for clients asking for HOSTNAME | `tls.sni` |
//! | `ssl_cert_login_from` | `distinguished_name` (default) or `common_name`: the user SASL EXTERNAL logs in as | `ssl_cert_login_from` |
//! | `auth_mechanisms.N` | `PLAIN`, `AMQPLAIN`, `EXTERNAL` (the first line replaces the default list, all three; EXTERNAL is offered only over TLS with a verified client certificate) | `auth_mechanisms` |
//! | `management.ssl.port`, `management.ssl.ip` | the management API over HTTPS (RabbitMQ's 15671) | `management_tls_listen` |
//! | `management.ssl.certfile`, `.keyfile`, `.cacertfile`, ... | as `ssl_options.*` | `management_tls` |
//! | `default_user`, `default_pass`, `default_vhost` | string | same |
//! | `default_user_tags.TAG` | `true`/`false` | `default_user_tags` |
//! | `default_permissions.configure`/`.write`/`.read` | regex | `default_permissions` |
//! | `loopback_users.USER` | `true`/`false` | `loopback_users` |
//! | `loopback_users` | `none` | `loopback_users` emptied |
//! | `connection_max` (alias `max_connections`) | integer or `infinity` | `max_connections` |
//! | `channel_max` | 0..65535 (0: no limit) | `channel_max` |
//! | `consumer_timeout` | milliseconds; `0` or `false`: none | `consumer_timeout` |
//! | `frame_max` | bytes (`KB`/`MB`/`GB` = 1024-based, cuttlefish's bytesize), ≥ 4096 | `frame_max` |
//! | `heartbeat` | seconds | `heartbeat` |
//! | `handshake_timeout` | milliseconds | `handshake_timeout` |
//! | `max_message_size` | bytes, ≤ 512 MiB | `max_message_size` |
//! | `vm_memory_high_watermark.absolute` | bytes or RabbitMQ units (`1GB`, `512MiB`, `2G`) | `max_memory` |
//! | `vm_memory_high_watermark.relative` | fraction (`0.4`) of the memory available: the host's RAM, or the cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) where lower ([`crate::host`]) | `max_memory` |
//! | `disk_free_limit.absolute` | bytes or units | `min_free_disk` |
//! | `disk_free_limit.relative` | multiple (`1.5`) of that memory, as RabbitMQ | `min_free_disk` |
//! | `management.tcp.port`, `management.tcp.ip` | port / IP | `management_listen` |
//! | `prometheus.tcp.port`, `prometheus.tcp.ip` | port / IP | `prometheus_listen` |
//! | `prometheus.return_per_object_metrics` | `true`/`false` | `prometheus_per_object` |
//! | `log.console` | `true`/`false` | `false`: nothing logged to stderr |
//! | `log.console.level` | `debug`, `info`, `notice`, `warning`, `error`, `critical`, `none` | stderr's filter (`RUST_LOG` wins) |
//! | `log.file` | a path, or `false` (the default: no log file) | [`FileSettings::log_file`] |
//! | `log.file.level` | as `log.console.level` (default `info`) | the file's filter (`RUST_LOG` wins) |
//! | `log.file.rotation.size` | bytes or units; the file is rotated to `NAME.0`, `NAME.1`, ... before it would grow past it (0: never) | |
//! | `log.file.rotation.count` | rotated files kept (default 5) | |
//! | `mqtt.listeners.tcp.NAME`, `mqtt.listeners.ssl.NAME` | as `listeners.tcp.NAME` (RabbitMQ's 1883, 8883) | `mqtt.listen`, `mqtt.tls_listen` (TLS uses `ssl_options.*`) |
//! | `web_mqtt.tcp.port`, `web_mqtt.tcp.ip`, `web_mqtt.ws_path` | MQTT over WebSocket (RabbitMQ's 15675, `/ws`) | `mqtt.ws_listen`, `mqtt.ws_path` |
//! | `mqtt.vhost`, `mqtt.exchange` | the vhost of clients that name none (`/`), the exchange topics map onto (`amq.topic`) | same |
//! | `mqtt.port_to_vhost.PORT` | the vhost of clients connecting to that port that name none (RabbitMQ's `mqtt_port_to_vhost_mapping`) | `mqtt.port_vhosts` |
//! | `mqtt.allow_anonymous`, `mqtt.default_user`, `mqtt.default_pass` | clients without credentials log in as this user (`true`, guest/guest) | same |
//! | `mqtt.prefetch` | unacknowledged deliveries per MQTT 3.1.1 client (100) | same |
//! | `mqtt.max_packet_size_authenticated`, `..._unauthenticated` | bytes (268435455 as RabbitMQ, 64 KiB) | `mqtt.max_packet`, `mqtt.max_packet_unauth` |
//! | `mqtt.topic_alias_maximum` | aliases an MQTT 5 client may use (64) | same |
//! | `data_dir` | path | `data_dir` |
//! | `segment_size` | bytes or units, 4 KiB ..= 1 GiB | `segment_size` |
//! | `loopback_addresses` | comma-separated IPs | `loopback_addresses` |
//! | `load_definitions` (alias `definitions.local.path`) | path of a JSON definitions file | `definitions` |
//!
//! Refused with a reason: the other `ssl_options.*` keys (`.password`:
//! encrypted keys, `.depth`, ...), `auth_backends`, clustering
//! (`cluster_formation.*`, `cluster_name`), and `log.file.rotation.date`
//! (warren rotates by size only).
//!
//! RabbitMQ's units: `k`/`K`/`kiB`/`KiB` = 1024, `M`/`MiB`, `G`/`GiB`;
//! `kB`/`KB` = 1000, `MB`, `GB` (rabbit_resource_monitor_misc).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::auth::Permission;
use crate::config::{AuthMechanism, CertLogin, SniCert, TlsOptions, TlsVersion};
use crate::Config;

/// Settings from the file that are not part of [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    /// `log.console.level` as an `env_logger` filter (`RUST_LOG` still
    /// wins); `off` after `log.console = false`.
    pub log_filter: Option<String>,
    /// `log.file = PATH` and its level and rotation.
    pub log_file: Option<LogFile>,
}

/// A log file (`log.file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Where (relative paths: to the working directory).
    pub path: PathBuf,
    /// `log.file.level` as an `env_logger` filter (default `info`).
    pub filter: String,
    /// `log.file.rotation.size`: rotate before the file would grow past
    /// this many bytes; 0 never rotates.
    pub rotation_size: u64,
    /// `log.file.rotation.count`: rotated files kept (`NAME.0` the newest).
    pub rotation_count: u32,
}

/// RabbitMQ's default `log.file.rotation.count`.
pub const DEFAULT_ROTATION_COUNT: u32 = 5;

/// A bad line in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line number (0: the file as a whole, e.g. unreadable).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every bad line of a configuration file (at least one), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The first error (there always is one).
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read `path` and apply it to `config`; every bad line is reported.
pub fn load(path: &Path, config: &mut Config) -> Result<FileSettings, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, config).map_err(|errors| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|(line, message)| ConfigError {
                    file: file.clone(),
                    line,
                    message,
                })
                .collect(),
        )
    })
}

/// Read and parse a RabbitMQ JSON definitions file (an object).
pub fn read_definitions(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    if !v.is_object() {
        return Err(format!(
            "{}: definitions must be a JSON object",
            path.display()
        ));
    }
    Ok(v)
}

/// RabbitMQ settings that are recognised but have no meaning in warren.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("auth_backends", "only the internal user database exists"),
    ("cluster_formation", "warren is a single node"),
    ("cluster_name", "warren is a single node"),
    (
        "log.file.rotation.date",
        "warren rotates log files by size only: use log.file.rotation.size",
    ),
];

/// Parse a whole file; on error every bad line's 1-based number and
/// message, in file order.
pub fn parse(text: &str, config: &mut Config) -> Result<FileSettings, Vec<(usize, String)>> {
    let mut p = Parser {
        config,
        settings: FileSettings::default(),
        listeners: None,
        ssl_listeners: None,
        tags_seen: false,
        loopback_seen: false,
        mechanisms_seen: false,
        sni: Vec::new(),
        management_sni: Vec::new(),
        line: 0,
        log_file: None,
        log_file_options: None,
        log_file_level: None,
        rotation_size: None,
        rotation_count: None,
    };
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errors.push((i + 1, format!("expected 'key = value', got '{line}'")));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            errors.push((i + 1, "missing key before '='".into()));
            continue;
        }
        if value.is_empty() {
            errors.push((i + 1, format!("{key}: missing value")));
            continue;
        }
        p.line = i + 1;
        if let Err(e) = p.setting(key, value) {
            errors.push((i + 1, format!("{key} = {value}: {e}")));
        }
    }
    if let Some(l) = p.listeners.take() {
        p.config.listen = l.into_iter().map(|(_, a)| a).collect();
    }
    if let Some(l) = p.ssl_listeners.take() {
        p.config.tls_listen = l.into_iter().map(|(_, a)| a).collect();
    }
    for (parts, opts, prefix) in [
        (&mut p.sni, &mut p.config.tls, "ssl_options"),
        (
            &mut p.management_sni,
            &mut p.config.management_tls,
            "management.ssl",
        ),
    ] {
        for part in parts.drain(..) {
            match (part.cert, part.key) {
                (Some(cert), Some(key)) => opts.sni.push(SniCert {
                    name: part.name,
                    cert,
                    key,
                }),
                (cert, _) => {
                    let missing = if cert.is_none() {
                        "certfile"
                    } else {
                        "keyfile"
                    };
                    errors.push((
                        part.line,
                        format!(
                            "{prefix}.sni.{}: {prefix}.sni.{}.{missing} is missing",
                            part.name, part.name
                        ),
                    ));
                }
            }
        }
    }
    match (p.log_file.take(), p.log_file_options) {
        (Some(Some(path)), _) => {
            p.settings.log_file = Some(LogFile {
                path,
                filter: p.log_file_level.take().unwrap_or_else(|| "info".into()),
                rotation_size: p.rotation_size.unwrap_or(0),
                rotation_count: p.rotation_count.unwrap_or(DEFAULT_ROTATION_COUNT),
            });
        }
        // `log.file = false` turns the options off with the file.
        (Some(None), _) | (None, None) => {}
        (None, Some((line, key))) => errors.push((
            line,
            format!("{key}: warren has no default log file; set log.file = PATH too"),
        )),
    }
    if errors.is_empty() {
        Ok(p.settings)
    } else {
        errors.sort_by_key(|(line, _)| *line);
        Err(errors)
    }
}

/// One `ssl_options.sni.NAME.*` certificate being read.
struct SniPart {
    name: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Its first line.
    line: usize,
}

/// One `ssl_options.KEY` (or `management.ssl.KEY`) setting, `rest` being
/// KEY.
fn tls_option(
    o: &mut TlsOptions,
    sni: &mut Vec<SniPart>,
    line: usize,
    rest: &str,
    v: &str,
) -> Result<(), String> {
    match rest {
        "certfile" => o.cert = Some(v.into()),
        "keyfile" => o.key = Some(v.into()),
        "cacertfile" => o.ca = Some(v.into()),
        "verify" => {
            o.verify_peer = Some(match v {
                "verify_peer" => true,
                "verify_none" => false,
                _ => return Err("expected verify_peer or verify_none".into()),
            })
        }
        "fail_if_no_peer_cert" => o.fail_if_no_peer_cert = boolean(v)?,
        "honor_cipher_order" | "honor_ecc_order" => o.honor_cipher_order = boolean(v)?,
        "password" => {
            return Err("encrypted private keys are not supported: decrypt the key \
                 (openssl pkey -in KEY -out PLAIN_KEY) and give the unencrypted file"
                .into())
        }
        "depth" => {
            // Chains are verified to any depth rustls accepts; a limit
            // cannot be set.
            return Err("not supported by warren (rustls verifies chains of any length up to its own limit)".into());
        }
        _ => {
            if let Some(n) = rest.strip_prefix("versions.") {
                if n.is_empty() {
                    return Err(unknown(rest));
                }
                let version = match v {
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1.1" | "tlsv1" | "sslv3" => {
                        return Err(format!(
                            "{v} is not supported: warren (rustls) speaks tlsv1.2 and tlsv1.3 only"
                        ))
                    }
                    _ => return Err("expected tlsv1.2 or tlsv1.3".into()),
                };
                if !o.versions.contains(&version) {
                    o.versions.push(version);
                }
            } else if let Some(n) = rest.strip_prefix("ciphers.") {
                if n.is_empty() {
                    return Err(unknown(rest));
                }
                crate::tls::cipher_suite(v)?;
                o.ciphers.push(v.to_string());
            } else if let Some(name_file) = rest.strip_prefix("sni.") {
                let (name, file) = name_file
                    .rsplit_once('.')
                    .filter(|(n, _)| !n.is_empty())
                    .filter(|(_, f)| matches!(*f, "certfile" | "keyfile"))
                    .ok_or("expected sni.HOSTNAME.certfile or sni.HOSTNAME.keyfile")?;
                let part = match sni.iter_mut().position(|p| p.name == name) {
                    Some(i) => sni.get_mut(i),
                    None => {
                        sni.push(SniPart {
                            name: name.to_string(),
                            cert: None,
                            key: None,
                            line,
                        });
                        sni.last_mut()
                    }
                }
                .ok_or("internal error")?;
                match file {
                    "certfile" => part.cert = Some(v.into()),
                    _ => part.key = Some(v.into()),
                }
            } else {
                return Err(
                    "not supported by warren (it reads certfile, keyfile, cacertfile, \
                     verify, fail_if_no_peer_cert, versions.N, ciphers.N, honor_cipher_order \
                     and sni.HOSTNAME.certfile/keyfile)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// Everything after an unquoted `#` is a comment (cuttlefish: values
/// cannot contain `#`).
fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(i) => line.get(..i).unwrap_or(""),
        None => line,
    }
}

struct Parser<'a> {
    config: &'a mut Config,
    settings: FileSettings,
    /// `listeners.tcp.NAME` lines seen so far (a later line with the same
    /// name replaces the earlier one).
    listeners: Option<Vec<(String, SocketAddr)>>,
    /// `listeners.ssl.NAME` lines seen so far, the same way.
    ssl_listeners: Option<Vec<(String, SocketAddr)>>,
    /// The first `default_user_tags.*` line replaces the default tags.
    tags_seen: bool,
    /// The first `loopback_users.*` line replaces the default list.
    loopback_seen: bool,
    /// The first `auth_mechanisms.*` line replaces the default list.
    mechanisms_seen: bool,
    /// `ssl_options.sni.NAME.certfile`/`.keyfile` seen so far.
    sni: Vec<SniPart>,
    /// The same for `management.ssl.sni.*`.
    management_sni: Vec<SniPart>,
    /// `log.file`: a path, or `false` (`Some(None)`).
    log_file: Option<Option<PathBuf>>,
    /// The first `log.file.*` option line and its key (an option without
    /// `log.file` is an error).
    log_file_options: Option<(usize, String)>,
    log_file_level: Option<String>,
    rotation_size: Option<u64>,
    rotation_count: Option<u32>,
    /// The line being parsed.
    line: usize,
}

impl Parser<'_> {
    fn setting(&mut self, key: &str, v: &str) -> Result<(), String> {
        let c = &mut *self.config;
        match key {
            "listeners.tcp" => {
                if v != "none" {
                    return Err("the only value is 'none' (use listeners.tcp.NAME = ADDR)".into());
                }
                self.listeners = Some(Vec::new());
            }
            "listeners.ssl" => {
                if v != "none" {
                    return Err("the only value is 'none' (use listeners.ssl.NAME = ADDR)".into());
                }
                self.ssl_listeners = Some(Vec::new());
            }
            "ssl_cert_login_from" => {
                c.ssl_cert_login_from = match v {
                    "common_name" => CertLogin::CommonName,
                    "distinguished_name" => CertLogin::DistinguishedName,
                    _ => return Err("expected common_name or distinguished_name".into()),
                }
            }
            "management.ssl.port" => {
                let port = uint(v, u16::MAX as u64)? as u16;
                let mut a = c
                    .management_tls_listen
                    .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 15671)));
                a.set_port(port);
                c.management_tls_listen = Some(a);
            }
            "management.ssl.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| "not an IP address".to_string())?;
                let port = c.management_tls_listen.map_or(15671, |a| a.port());
                c.management_tls_listen = Some(SocketAddr::new(ip, port));
            }
            "mqtt.vhost" => c.mqtt.vhost = non_empty(v)?,
            "mqtt.exchange" => c.mqtt.exchange = non_empty(v)?,
            "mqtt.allow_anonymous" => c.mqtt.allow_anonymous = boolean(v)?,
            "mqtt.default_user" => c.mqtt.default_user = non_empty(v)?,
            "mqtt.default_pass" => c.mqtt.default_pass = v.to_string(),
            "mqtt.prefetch" => c.mqtt.prefetch = uint(v, u16::MAX as u64)?.max(1) as u16,
            "mqtt.topic_alias_maximum" => c.mqtt.topic_alias_max = uint(v, u16::MAX as u64)? as u16,
            "mqtt.max_packet_size_authenticated" | "mqtt.max_packet_size_unauthenticated" => {
                let n = info_units(v)?;
                // MQTT's remaining length stops at 268,435,455 bytes.
                if n == 0 || n > 268_435_455 {
                    return Err("must be between 1 and 268435455".into());
                }
                if key.ends_with("unauthenticated") {
                    c.mqtt.max_packet_unauth = n as usize;
                } else {
                    c.mqtt.max_packet = n as usize;
                }
            }
            "web_mqtt.tcp.port" => {
                let port = uint(v, u16::MAX as u64)? as u16;
                let ip = c.mqtt.ws_listen.first().map(|a| a.ip());
                let ip = ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
                c.mqtt.ws_listen = vec![SocketAddr::new(ip, port)];
            }
            "web_mqtt.tcp.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| "not an IP address".to_string())?;
                let port = c.mqtt.ws_listen.first().map_or(15675, |a| a.port());
                c.mqtt.ws_listen = vec![SocketAddr::new(ip, port)];
            }
            "web_mqtt.ws_path" => {
                if !v.starts_with('/') {
                    return Err("must start with /".into());
                }
                c.mqtt.ws_path = v.to_string();
            }
            "default_user" => c.default_user = non_empty(v)?,
            "default_pass" => c.default_pass = v.to_string(),
            "default_vhost" => c.default_vhost = non_empty(v)?,
            "connection_max" | "max_connections" => {
                c.max_connections = if v == "infinity" {
                    None
                } else {
                    Some(uint(v, usize::MAX as u64)? as usize)
                };
            }
            "consumer_timeout" => {
                c.consumer_timeout = match v {
                    "false" | "infinity" | "undefined" => None,
                    _ => match uint(v, u64::MAX)? {
                        0 => None,
                        ms => Some(Duration::from_millis(ms)),
                    },
                };
            }
            "channel_max" => {
                let n = uint(v, u16::MAX as u64)? as u16;
                // RabbitMQ: 0 means no limit.
                c.channel_max = if n == 0 { u16::MAX } else { n };
            }
            "frame_max" => {
                let n = bytesize(v)?;
                if n < 4096 {
                    return Err("must be at least 4096".into());
                }
                c.frame_max = u32::try_from(n).map_err(|_| "too large".to_string())?;
            }
            "heartbeat" => c.heartbeat = uint(v, u16::MAX as u64)? as u16,
            "handshake_timeout" => c.handshake_timeout = Duration::from_millis(uint(v, u64::MAX)?),
            "max_message_size" => {
                let n = info_units(v)?;
                if n == 0 || n > 512 << 20 {
                    return Err("must be between 1 and 536870912 (512 MiB)".into());
                }
                c.max_message_size = n;
            }
            "vm_memory_high_watermark.absolute" => c.max_memory = info_units(v)?,
            "disk_free_limit.absolute" => c.min_free_disk = info_units(v)?,
            "management.tcp.port" | "management.listener.port" => {
                let port = uint(v, u16::MAX as u64)? as u16;
                let mut a = c
                    .management_listen
                    .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 15672)));
                a.set_port(port);
                c.management_listen = Some(a);
            }
            "management.tcp.ip" | "management.listener.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| "not an IP address".to_string())?;
                let port = c.management_listen.map_or(15672, |a| a.port());
                c.management_listen = Some(SocketAddr::new(ip, port));
            }
            "prometheus.tcp.port" => {
                let port = uint(v, u16::MAX as u64)? as u16;
                let mut a = c
                    .prometheus_listen
                    .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 15692)));
                a.set_port(port);
                c.prometheus_listen = Some(a);
            }
            "prometheus.tcp.ip" => {
                let ip: IpAddr = v.parse().map_err(|_| "not an IP address".to_string())?;
                let port = c.prometheus_listen.map_or(15692, |a| a.port());
                c.prometheus_listen = Some(SocketAddr::new(ip, port));
            }
            "prometheus.return_per_object_metrics" => c.prometheus_per_object = boolean(v)?,
            "vm_memory_high_watermark.relative" => {
                let f = fraction(v)?;
                c.max_memory = of_total_memory(f)?;
            }
            "disk_free_limit.relative" => {
                let f = fraction(v)?;
                c.min_free_disk = of_total_memory(f)?;
            }
            "log.console.level" => self.settings.log_filter = Some(level(v)?.into()),
            "log.console" => {
                if !boolean(v)? {
                    self.settings.log_filter = Some("off".into());
                }
            }
            "log.file" => {
                self.log_file = Some(match v {
                    "false" => None,
                    "true" => return Err("expected a file name or false".into()),
                    path => Some(PathBuf::from(path)),
                });
            }
            "log.file.level" | "log.file.rotation.size" | "log.file.rotation.count" => {
                match key {
                    "log.file.level" => self.log_file_level = Some(level(v)?.into()),
                    "log.file.rotation.size" => self.rotation_size = Some(info_units(v)?),
                    _ => self.rotation_count = Some(uint(v, 1000)? as u32),
                }
                if self.log_file_options.is_none() {
                    self.log_file_options = Some((self.line, key.to_string()));
                }
            }
            "data_dir" => c.data_dir = Some(v.into()),
            "load_definitions" | "definitions.local.path" => c.definitions = Some(v.into()),
            "segment_size" => {
                let n = info_units(v)?;
                if !(4096..=1 << 30).contains(&n) {
                    return Err("must be between 4096 and 1073741824 (1 GiB)".into());
                }
                c.segment_size = n;
            }
            "loopback_addresses" => {
                let ips = v
                    .split(',')
                    .map(|s| {
                        let s = s.trim();
                        s.parse::<IpAddr>()
                            .map_err(|_| format!("'{s}' is not an IP address"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                c.loopback_addresses = Some(ips);
            }
            "loopback_users" => {
                if v != "none" {
                    return Err("the only value is 'none' (use loopback_users.USER = true)".into());
                }
                c.loopback_users.clear();
                self.loopback_seen = true;
            }
            _ => return self.prefixed(key, v),
        }
        Ok(())
    }

    /// Keys with a variable last part, and the unsupported ones.
    fn prefixed(&mut self, key: &str, v: &str) -> Result<(), String> {
        let c = &mut *self.config;
        let tcp = key.strip_prefix("listeners.tcp.");
        let ssl = key.strip_prefix("listeners.ssl.");
        if let Some(name) = tcp.or(ssl) {
            let addr = listener(v)?;
            let l = match tcp {
                Some(_) => self.listeners.get_or_insert_with(Vec::new),
                None => self.ssl_listeners.get_or_insert_with(Vec::new),
            };
            match l.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = addr,
                None => l.push((name.to_string(), addr)),
            }
        } else if let Some(name) = key
            .strip_prefix("mqtt.listeners.tcp.")
            .or(key.strip_prefix("mqtt.listeners.ssl."))
        {
            if name.is_empty() {
                return Err(unknown(key));
            }
            let addr = listener(v)?;
            if key.starts_with("mqtt.listeners.tcp.") {
                c.mqtt.listen.push(addr);
            } else {
                c.mqtt.tls_listen.push(addr);
            }
        } else if let Some(port) = key.strip_prefix("mqtt.port_to_vhost.") {
            let port = uint(port, u16::MAX as u64)? as u16;
            c.mqtt.port_vhosts.retain(|(p, _)| *p != port);
            c.mqtt.port_vhosts.push((port, non_empty(v)?));
        } else if let Some(rest) = key.strip_prefix("ssl_options.") {
            tls_option(&mut c.tls, &mut self.sni, self.line, rest, v)?;
        } else if let Some(rest) = key.strip_prefix("management.ssl.") {
            tls_option(
                &mut c.management_tls,
                &mut self.management_sni,
                self.line,
                rest,
                v,
            )?;
        } else if let Some(n) = key.strip_prefix("auth_mechanisms.") {
            if n.is_empty() {
                return Err(unknown(key));
            }
            let m = AuthMechanism::from_name(v.as_bytes())
                .ok_or("expected PLAIN, AMQPLAIN or EXTERNAL (the mechanisms warren has)")?;
            if !self.mechanisms_seen {
                c.auth_mechanisms.clear();
                self.mechanisms_seen = true;
            }
            c.auth_mechanisms.retain(|&x| x != m);
            c.auth_mechanisms.push(m);
        } else if let Some(tag) = key.strip_prefix("default_user_tags.") {
            if !self.tags_seen {
                c.default_user_tags.clear();
                self.tags_seen = true;
            }
            c.default_user_tags.retain(|t| t != tag);
            if boolean(v)? {
                c.default_user_tags.push(tag.to_string());
            }
        } else if let Some(user) = key.strip_prefix("loopback_users.") {
            if !self.loopback_seen {
                c.loopback_users.clear();
                self.loopback_seen = true;
            }
            c.loopback_users.retain(|u| u != user);
            if boolean(v)? {
                c.loopback_users.push(user.to_string());
            }
        } else if let Some(kind) = key.strip_prefix("default_permissions.") {
            let i = match kind {
                "configure" => 0,
                "write" => 1,
                "read" => 2,
                _ => return Err(unknown(key)),
            };
            // Compile it now: a bad pattern is a start-up error.
            Permission::new(v, "", "")?;
            if let Some(slot) = c.default_permissions.get_mut(i) {
                *slot = v.to_string();
            }
        } else if let Some((_, why)) = UNSUPPORTED
            .iter()
            .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
        {
            return Err(format!("not supported by warren ({why})"));
        } else {
            return Err(unknown(key));
        }
        Ok(())
    }
}

fn unknown(key: &str) -> String {
    format!("unknown key '{key}'")
}

/// A RabbitMQ log level as an `env_logger` filter.
fn level(v: &str) -> Result<&'static str, String> {
    Ok(match v {
        "debug" => "debug",
        "info" | "notice" => "info",
        "warning" => "warn",
        "error" | "critical" | "alert" | "emergency" => "error",
        "none" => "off",
        _ => return Err("expected debug, info, notice, warning, error, critical or none".into()),
    })
}

/// A non-negative decimal number (`0.4`, `2`, `1.5`).
fn fraction(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err("expected a non-negative number such as 0.4".into()),
    }
}

/// `f` times the memory available to this process ([`crate::host`]).
fn of_total_memory(f: f64) -> Result<u64, String> {
    let total = crate::host::total_memory()
        .ok_or("cannot read the host's total memory (/proc/meminfo); use the .absolute key")?;
    Ok((total as f64 * f) as u64)
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

fn uint(v: &str, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(format!("must be at most {max}")),
        Err(_) => Err("expected a non-negative integer".into()),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// RabbitMQ's information units (`rabbit_resource_monitor_misc`): a
/// number with an optional unit; `k`, `kiB`, `M`, `MiB`, `G`, `GiB` are
/// powers of 1024, `kB`, `MB`, `GB` powers of 1000.
pub fn info_units(v: &str) -> Result<u64, String> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = v.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of bytes, optionally with a unit (1GB, 512MiB)")?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" | "kiB" | "KiB" | "kib" | "KIB" => 1 << 10,
        "m" | "M" | "MiB" | "mib" | "MIB" => 1 << 20,
        "g" | "G" | "GiB" | "gib" | "GIB" => 1 << 30,
        "kB" | "KB" | "kb" | "Kb" => 1_000,
        "MB" | "mB" | "mb" | "Mb" => 1_000_000,
        "GB" | "gB" | "gb" | "Gb" => 1_000_000_000,
        _ => return Err(format!("unknown unit '{unit}'")),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".into())
}

/// cuttlefish's `bytesize`: a number with an optional `KB`, `MB` or `GB`
/// (powers of 1024).
fn bytesize(v: &str) -> Result<u64, String> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = v.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of bytes, optionally with KB, MB or GB")?;
    let mult: u64 = match unit {
        "" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return Err(format!("unknown unit '{unit}' (KB, MB or GB)")),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".into())
}

/// A TCP listener as RabbitMQ writes it: a port alone (all interfaces:
/// `[::]`, which the server binds dual-stack, as RabbitMQ does),
/// `HOST:PORT`, `[IPV6]:PORT`, or `IPV6:PORT` (split at the last colon).
pub fn listener(v: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("expected PORT, HOST:PORT or [IPV6]:PORT, got '{v}'");
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.is_empty() || host.starts_with('[') {
        return Err(bad());
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve host '{host}'"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Config, FileSettings) {
        let mut c = Config::default();
        let s = parse(text, &mut c).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        (c, s)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    type Check = fn(&Config, &FileSettings) -> bool;

    /// Every key, one line each, with what it must set.
    const KEYS: &[(&str, Check)] = &[
        ("listeners.tcp.default = 5673", |c, _| {
            c.listen == vec![sa("[::]:5673")]
        }),
        ("listeners.tcp = none", |c, _| c.listen.is_empty()),
        ("mqtt.listeners.tcp.default = 1883", |c, _| {
            c.mqtt.listen == vec!["[::]:1883".parse().unwrap()]
        }),
        ("mqtt.listeners.ssl.default = 127.0.0.1:8883", |c, _| {
            c.mqtt.tls_listen == vec!["127.0.0.1:8883".parse().unwrap()]
        }),
        ("web_mqtt.tcp.port = 15675", |c, _| {
            c.mqtt.ws_listen[0].port() == 15675
        }),
        ("web_mqtt.ws_path = /mqtt", |c, _| c.mqtt.ws_path == "/mqtt"),
        ("mqtt.vhost = v", |c, _| c.mqtt.vhost == "v"),
        ("mqtt.exchange = x", |c, _| c.mqtt.exchange == "x"),
        ("mqtt.allow_anonymous = false", |c, _| {
            !c.mqtt.allow_anonymous
        }),
        ("mqtt.prefetch = 10", |c, _| c.mqtt.prefetch == 10),
        ("mqtt.max_packet_size_unauthenticated = 1MB", |c, _| {
            c.mqtt.max_packet_unauth == 1_000_000
        }),
        ("mqtt.port_to_vhost.1884 = v2", |c, _| {
            c.mqtt.port_vhosts == vec![(1884, "v2".to_string())]
        }),
        ("default_user = admin", |c, _| c.default_user == "admin"),
        ("default_pass = s3cr=t", |c, _| c.default_pass == "s3cr=t"),
        ("default_vhost = prod", |c, _| c.default_vhost == "prod"),
        ("default_user_tags.monitoring = true", |c, _| {
            c.default_user_tags == vec!["monitoring"]
        }),
        ("default_permissions.configure = ^amq\\.gen", |c, _| {
            c.default_permissions[0] == "^amq\\.gen"
        }),
        ("default_permissions.write = ^w", |c, _| {
            c.default_permissions[1] == "^w"
        }),
        ("default_permissions.read = ^r", |c, _| {
            c.default_permissions[2] == "^r"
        }),
        ("loopback_users.guest = false", |c, _| {
            c.loopback_users.is_empty()
        }),
        ("loopback_users.admin = true", |c, _| {
            c.loopback_users == vec!["admin"]
        }),
        ("loopback_users = none", |c, _| c.loopback_users.is_empty()),
        ("connection_max = 10", |c, _| c.max_connections == Some(10)),
        ("max_connections = 3", |c, _| c.max_connections == Some(3)),
        ("consumer_timeout = 2000", |c, _| {
            c.consumer_timeout == Some(Duration::from_millis(2000))
        }),
        ("consumer_timeout = false", |c, _| {
            c.consumer_timeout.is_none()
        }),
        ("consumer_timeout = 0", |c, _| c.consumer_timeout.is_none()),
        ("connection_max = infinity", |c, _| {
            c.max_connections.is_none()
        }),
        ("channel_max = 16", |c, _| c.channel_max == 16),
        ("channel_max = 0", |c, _| c.channel_max == u16::MAX),
        ("frame_max = 8192", |c, _| c.frame_max == 8192),
        ("frame_max = 128KB", |c, _| c.frame_max == 131_072),
        ("heartbeat = 30", |c, _| c.heartbeat == 30),
        ("handshake_timeout = 2500", |c, _| {
            c.handshake_timeout == Duration::from_millis(2500)
        }),
        ("max_message_size = 1048576", |c, _| {
            c.max_message_size == 1 << 20
        }),
        ("vm_memory_high_watermark.absolute = 1GB", |c, _| {
            c.max_memory == 1_000_000_000
        }),
        ("vm_memory_high_watermark.absolute = 512MiB", |c, _| {
            c.max_memory == 512 << 20
        }),
        ("vm_memory_high_watermark.absolute = 2G", |c, _| {
            c.max_memory == 2 << 30
        }),
        ("vm_memory_high_watermark.absolute = 1073741824", |c, _| {
            c.max_memory == 1 << 30
        }),
        ("disk_free_limit.absolute = 50MB", |c, _| {
            c.min_free_disk == 50_000_000
        }),
        ("disk_free_limit.absolute = 100k", |c, _| {
            c.min_free_disk == 102_400
        }),
        ("management.tcp.port = 15673", |c, _| {
            c.management_listen == Some(sa("127.0.0.1:15673"))
        }),
        ("management.tcp.ip = 0.0.0.0", |c, _| {
            c.management_listen == Some(sa("0.0.0.0:15672"))
        }),
        ("management.listener.port = 0", |c, _| {
            c.management_listen == Some(sa("127.0.0.1:0"))
        }),
        ("log.console.level = debug", |_, s| {
            s.log_filter.as_deref() == Some("debug")
        }),
        ("log.console.level = warning", |_, s| {
            s.log_filter.as_deref() == Some("warn")
        }),
        ("log.console.level = none", |_, s| {
            s.log_filter.as_deref() == Some("off")
        }),
        ("log.console = false", |_, s| {
            s.log_filter.as_deref() == Some("off")
        }),
        ("log.console = true", |_, s| s.log_filter.is_none()),
        ("vm_memory_high_watermark.relative = 0.4", |c, _| {
            c.max_memory == (crate::host::total_memory().unwrap() as f64 * 0.4) as u64
        }),
        ("vm_memory_high_watermark.relative = 1", |c, _| {
            c.max_memory == crate::host::total_memory().unwrap()
        }),
        ("disk_free_limit.relative = 1.5", |c, _| {
            c.min_free_disk == (crate::host::total_memory().unwrap() as f64 * 1.5) as u64
        }),
        ("prometheus.tcp.port = 15693", |c, _| {
            c.prometheus_listen == Some(sa("127.0.0.1:15693"))
        }),
        ("prometheus.tcp.ip = ::", |c, _| {
            c.prometheus_listen == Some(sa("[::]:15692"))
        }),
        ("prometheus.return_per_object_metrics = true", |c, _| {
            c.prometheus_per_object
        }),
        ("log.file = /var/log/warren.log", |_, s| {
            s.log_file
                == Some(LogFile {
                    path: "/var/log/warren.log".into(),
                    filter: "info".into(),
                    rotation_size: 0,
                    rotation_count: DEFAULT_ROTATION_COUNT,
                })
        }),
        ("log.file = false", |_, s| s.log_file.is_none()),
        ("data_dir = /var/lib/warren", |c, _| {
            c.data_dir.as_deref() == Some(Path::new("/var/lib/warren"))
        }),
        ("segment_size = 16MiB", |c, _| c.segment_size == 16 << 20),
        ("load_definitions = /etc/warren/defs.json", |c, _| {
            c.definitions.as_deref() == Some(Path::new("/etc/warren/defs.json"))
        }),
        ("definitions.local.path = d.json", |c, _| {
            c.definitions.as_deref() == Some(Path::new("d.json"))
        }),
        ("loopback_addresses = 127.0.0.1, ::1", |c, _| {
            c.loopback_addresses == Some(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
        }),
    ];

    #[test]
    fn every_key_is_parsed() {
        for (line, check) in KEYS {
            let (c, s) = parsed(line);
            assert!(check(&c, &s), "{line}: {c:?} {s:?}");
            // With a comment after it and odd spacing, too.
            let (c, s) = parsed(&format!(
                "# comment\n\n   {}   # trailing\n",
                line.replace(" = ", "=")
            ));
            assert!(check(&c, &s), "{line} (respaced): {c:?} {s:?}");
        }
    }

    #[test]
    fn a_realistic_file() {
        let text = "\
# warren / RabbitMQ config
listeners.tcp.default = 127.0.0.1:5672
listeners.tcp.other   = [::1]:5673
listeners.tcp.v6      = ::1:5674
listeners.tcp.local   = localhost:5675

default_user = admin
default_pass = secret
default_vhost = prod
default_user_tags.administrator = true
default_user_tags.management = true
loopback_users.guest = false
connection_max = 100
vm_memory_high_watermark.absolute = 256MiB
disk_free_limit.absolute = 1GB
management.tcp.port = 15673
management.tcp.ip = 127.0.0.1
log.console.level = info
";
        let (c, s) = parsed(text);
        assert_eq!(c.listen.len(), 4);
        assert_eq!(c.listen[0], sa("127.0.0.1:5672"));
        assert_eq!(c.listen[1], sa("[::1]:5673"));
        assert_eq!(c.listen[2], sa("[::1]:5674"));
        assert_eq!(c.listen[3].port(), 5675);
        assert!(c.listen[3].ip().is_loopback());
        assert_eq!(c.default_user_tags, vec!["administrator", "management"]);
        assert!(c.loopback_users.is_empty());
        assert_eq!(c.max_memory, 256 << 20);
        assert_eq!(c.min_free_disk, 1_000_000_000);
        assert_eq!(c.management_listen, Some(sa("127.0.0.1:15673")));
        assert_eq!(s.log_filter.as_deref(), Some("info"));
        // The same listener name twice: the later line wins.
        let (c, _) = parsed("listeners.tcp.a = 1111\nlisteners.tcp.a = 2222\n");
        assert_eq!(c.listen, vec![sa("[::]:2222")]);
        // No listener lines: the default stays.
        let (c, _) = parsed("heartbeat = 5\n");
        assert_eq!(c.listen, Config::default().listen);
    }

    #[test]
    fn bad_keys_and_values_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("no_such_key = 1", "unknown key 'no_such_key'"),
            ("listeners.tcp.default = 70000", "expected PORT"),
            ("listeners.tcp.default = [::1:5672", "expected PORT"),
            ("listeners.tcp = 5672", "only value is 'none'"),
            ("default_user =", "missing value"),
            ("just words", "expected 'key = value'"),
            ("= 5", "missing key"),
            (
                "default_user_tags.administrator = yes",
                "expected true or false",
            ),
            (
                "default_permissions.configure = (",
                "invalid regular expression",
            ),
            ("default_permissions.delete = .*", "unknown key"),
            ("loopback_users.guest = 1", "expected true or false"),
            ("loopback_users = all", "only value is 'none'"),
            ("connection_max = -1", "non-negative integer"),
            ("channel_max = 65536", "at most 65535"),
            ("frame_max = 1024", "at least 4096"),
            ("frame_max = 4TB", "unknown unit"),
            ("heartbeat = soon", "non-negative integer"),
            ("max_message_size = 1GiB", "between 1 and 536870912"),
            ("vm_memory_high_watermark.absolute = 1.5GB", "unknown unit"),
            (
                "vm_memory_high_watermark.absolute = lots",
                "expected a number",
            ),
            (
                "vm_memory_high_watermark.relative = 40%",
                "non-negative number",
            ),
            (
                "vm_memory_high_watermark.relative = -0.1",
                "non-negative number",
            ),
            ("disk_free_limit.absolute = 1TB", "unknown unit"),
            ("disk_free_limit.relative = lots", "non-negative number"),
            ("prometheus.tcp.port = 99999", "at most 65535"),
            ("prometheus.tcp.ip = any", "not an IP address"),
            ("prometheus.return_per_object_metrics = 1", "true or false"),
            ("log.file = true", "file name or false"),
            ("log.file.rotation.date = $D0", "by size only"),
            ("management.tcp.port = http", "non-negative integer"),
            ("management.tcp.ip = localhost", "not an IP address"),
            ("log.console.level = chatty", "expected debug"),
            ("log.console = maybe", "expected true or false"),
            ("segment_size = 1k", "between 4096"),
            ("segment_size = 2GiB", "between 4096"),
            (
                "loopback_addresses = 127.0.0.1, nope",
                "'nope' is not an IP address",
            ),
            ("listeners.ssl.default = 70000", "expected PORT"),
            ("listeners.ssl = 5671", "only value is 'none'"),
            ("ssl_options.password = secret", "encrypted private keys"),
            (
                "ssl_options.ciphers.1 = DES-CBC3-SHA",
                "'DES-CBC3-SHA' is not implemented",
            ),
            (
                "ssl_options.versions.1 = tlsv1.1",
                "tlsv1.2 and tlsv1.3 only",
            ),
            ("ssl_options.verify = maybe", "verify_peer or verify_none"),
            ("ssl_options.fail_if_no_peer_cert = yes", "true"),
            ("ssl_options.depth = 3", "not supported"),
            ("ssl_options.sni.x.pem = a", "sni.HOSTNAME.certfile"),
            (
                "ssl_options.sni.only.certfile = /a.pem",
                "sni.only.keyfile is missing",
            ),
            (
                "auth_mechanisms.1 = CRAM-MD5",
                "PLAIN, AMQPLAIN or EXTERNAL",
            ),
            ("ssl_cert_login_from = email", "common_name"),
            ("management.ssl.port = https", "non-negative integer"),
            ("log.file.level = info", "set log.file = PATH too"),
            ("log.file.rotation.count = 3", "set log.file = PATH too"),
            ("log.file.level = loud", "expected debug"),
        ];
        for (line, want) in cases {
            let text = format!("# first line\nheartbeat = 10\n\n{line}\nheartbeat = 20\n");
            let mut c = Config::default();
            let errs = parse(&text, &mut c).unwrap_err();
            assert_eq!(errs.len(), 1, "{line}: {errs:?}");
            let (n, msg) = &errs[0];
            assert_eq!(*n, 4, "{line}: {msg}");
            assert!(msg.contains(want), "{line}: {msg}");
        }
    }

    #[test]
    fn tls_listeners_and_files() {
        let (c, _) = parsed(
            "listeners.ssl.default = 5671\n\
             listeners.ssl.other = 127.0.0.1:5681\n\
             ssl_options.certfile = /etc/warren/cert.pem\n\
             ssl_options.keyfile = /etc/warren/key.pem\n\
             ssl_options.cacertfile = /etc/warren/ca.pem\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = false\n",
        );
        assert_eq!(c.tls_listen, vec![sa("[::]:5671"), sa("127.0.0.1:5681")]);
        // The plain listener stays as it was.
        assert_eq!(c.listen, Config::default().listen);
        assert_eq!(c.tls.cert, Some("/etc/warren/cert.pem".into()));
        assert_eq!(c.tls.key, Some("/etc/warren/key.pem".into()));
        assert_eq!(c.tls.ca, Some("/etc/warren/ca.pem".into()));
        assert_eq!(c.tls.verify_peer, Some(true));
        assert!(!c.tls.fail_if_no_peer_cert);
        let (c, _) = parsed("listeners.ssl.a = 5671\nlisteners.ssl = none\n");
        assert!(c.tls_listen.is_empty());
        let (c, _) = parsed("listeners.ssl.a = 5671\nlisteners.ssl.a = 5672\n");
        assert_eq!(c.tls_listen, vec![sa("[::]:5672")]);
    }

    #[test]
    fn tls_options_mechanisms_and_https_management() {
        let (c, _) = parsed(
            "ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = true\n\
             ssl_options.versions.1 = tlsv1.3\n\
             ssl_options.versions.2 = tlsv1.2\n\
             ssl_options.ciphers.1 = ECDHE-ECDSA-AES256-GCM-SHA384\n\
             ssl_options.ciphers.2 = TLS_AES_128_GCM_SHA256\n\
             ssl_options.honor_cipher_order = true\n\
             ssl_options.sni.mq.example.com.certfile = /c/mq.pem\n\
             ssl_options.sni.mq.example.com.keyfile = /c/mq.key\n\
             ssl_cert_login_from = common_name\n\
             auth_mechanisms.1 = EXTERNAL\n\
             auth_mechanisms.2 = PLAIN\n\
             management.ssl.port = 15671\n\
             management.ssl.certfile = /c/m.pem\n\
             management.ssl.keyfile = /c/m.key\n",
        );
        assert_eq!(c.tls.verify_peer, Some(false));
        assert!(c.tls.fail_if_no_peer_cert);
        assert_eq!(c.tls.versions, vec![TlsVersion::Tls13, TlsVersion::Tls12]);
        assert_eq!(
            c.tls.ciphers,
            vec!["ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_128_GCM_SHA256"]
        );
        assert!(c.tls.honor_cipher_order);
        assert_eq!(
            c.tls.sni,
            vec![SniCert {
                name: "mq.example.com".into(),
                cert: "/c/mq.pem".into(),
                key: "/c/mq.key".into(),
            }]
        );
        assert_eq!(c.ssl_cert_login_from, CertLogin::CommonName);
        assert_eq!(
            c.auth_mechanisms,
            vec![AuthMechanism::External, AuthMechanism::Plain]
        );
        assert_eq!(c.management_tls_listen, Some(sa("127.0.0.1:15671")));
        assert_eq!(c.management_tls.cert, Some("/c/m.pem".into()));
        assert_eq!(c.management_tls.key, Some("/c/m.key".into()));
        // The plain management listener stays.
        assert_eq!(c.management_listen, Config::default().management_listen);
    }

    #[test]
    fn every_bad_line_is_reported_at_once() {
        let text = "\
heartbeat = 10
no_such_key = 1
log.file.rotation.date = $D0
channel_max = lots
default_user = admin
ssl_options.password = x
just words
";
        let errs = parse(text, &mut Config::default()).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![2, 3, 4, 6, 7], "{errs:?}");
        assert!(errs[0].1.contains("unknown key 'no_such_key'"));
        assert!(errs[1].1.contains("by size only"));
        assert!(errs[2].1.contains("non-negative integer"));
        assert!(errs[3].1.contains("encrypted private keys"));
        assert!(errs[4].1.contains("expected 'key = value'"));
    }

    #[test]
    fn log_file_settings() {
        let (_, s) = parsed(
            "log.file.level = debug\nlog.file = /tmp/w.log\n\
             log.file.rotation.size = 10MiB\nlog.file.rotation.count = 3\n\
             log.console.level = warning\n",
        );
        assert_eq!(
            s.log_file,
            Some(LogFile {
                path: "/tmp/w.log".into(),
                filter: "debug".into(),
                rotation_size: 10 << 20,
                rotation_count: 3,
            })
        );
        assert_eq!(s.log_filter.as_deref(), Some("warn"));
        // `log.file = false` with options: no file, no error.
        let (_, s) = parsed("log.file = false\nlog.file.level = debug\n");
        assert_eq!(s.log_file, None);
        // The later of absolute and relative wins, as in RabbitMQ.
        let (c, _) = parsed(
            "vm_memory_high_watermark.relative = 0.5\nvm_memory_high_watermark.absolute = 1GB\n",
        );
        assert_eq!(c.max_memory, 1_000_000_000);
    }

    #[test]
    fn load_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("warren-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("rabbitmq.conf");
        std::fs::write(&f, "heartbeat = 5\nbogus.key = 1\n").unwrap();
        let e = load(&f, &mut Config::default()).unwrap_err();
        assert_eq!(e.first().unwrap().line, 2);
        assert_eq!(
            e.to_string(),
            format!("{}:2: bogus.key = 1: unknown key 'bogus.key'", f.display())
        );
        std::fs::write(&f, "heartbeat = x\nbogus.key = 1\n").unwrap();
        let e = load(&f, &mut Config::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{0}:1: heartbeat = x: expected a non-negative integer\n\
                 {0}:2: bogus.key = 1: unknown key 'bogus.key'",
                f.display()
            )
        );
        let e = load(&dir.join("missing.conf"), &mut Config::default()).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn units() {
        assert_eq!(info_units("0").unwrap(), 0);
        assert_eq!(info_units("1kiB").unwrap(), 1024);
        assert_eq!(info_units("1kB").unwrap(), 1000);
        assert_eq!(info_units("3MB").unwrap(), 3_000_000);
        assert_eq!(info_units("3M").unwrap(), 3 << 20);
        assert!(info_units("").is_err());
        assert!(info_units("GB").is_err());
        assert!(info_units("99999999999999999999").is_err());
        assert!(info_units("18446744073709551615G").is_err());
        assert_eq!(listener("[::1]:5672").unwrap(), sa("[::1]:5672"));
        assert_eq!(listener("0.0.0.0:1").unwrap(), sa("0.0.0.0:1"));
    }

    #[test]
    fn loopback_addresses_decide_who_is_local() {
        let mut c = Config::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c.is_loopback(ip("127.0.0.2")));
        assert!(c.is_loopback(ip("::1")));
        assert!(c.is_loopback(ip("::ffff:127.0.0.1")));
        assert!(!c.is_loopback(ip("192.0.2.1")));
        assert!(!c.may_login_from(b"guest", ip("192.0.2.1")));
        assert!(c.may_login_from(b"bob", ip("192.0.2.1")));
        parse("loopback_addresses = 127.0.0.1\n", &mut c).unwrap();
        assert!(c.is_loopback(ip("127.0.0.1")));
        assert!(c.is_loopback(ip("::ffff:127.0.0.1")));
        assert!(!c.is_loopback(ip("127.0.0.2")));
        assert!(!c.may_login_from(b"guest", ip("127.0.0.2")));
    }
}
