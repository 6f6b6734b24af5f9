//! `--config FILE`: RabbitMQ's `rabbitmq.conf` format (cuttlefish's
//! sysctl-like `key = value` lines, `#` comments) for the settings that
//! apply to warren, plus a few of warren's own (`data_dir`, `segment_size`,
//! `loopback_addresses`). An unknown key or a malformed value is an error
//! naming the file and the line, so a typo never silently falls back to a
//! default.
//!
//! | key | value | Config |
//! | --- | --- | --- |
//! | `listeners.tcp.NAME` | `5672` (all IPv4 interfaces), `HOST:PORT`, `[::1]:PORT`, `::1:PORT` | `listen` (the first such line replaces the default) |
//! | `listeners.tcp` | `none` | `listen` emptied |
//! | `default_user`, `default_pass`, `default_vhost` | string | same |
//! | `default_user_tags.TAG` | `true`/`false` | `default_user_tags` |
//! | `default_permissions.configure`/`.write`/`.read` | regex | `default_permissions` |
//! | `loopback_users.USER` | `true`/`false` | `loopback_users` |
//! | `loopback_users` | `none` | `loopback_users` emptied |
//! | `connection_max` (alias `max_connections`) | integer or `infinity` | `max_connections` |
//! | `channel_max` | 0..65535 (0: no limit) | `channel_max` |
//! | `frame_max` | bytes (`KB`/`MB`/`GB` = 1024-based, cuttlefish's bytesize), ≥ 4096 | `frame_max` |
//! | `heartbeat` | seconds | `heartbeat` |
//! | `handshake_timeout` | milliseconds | `handshake_timeout` |
//! | `max_message_size` | bytes, ≤ 512 MiB | `max_message_size` |
//! | `vm_memory_high_watermark.absolute` | bytes or RabbitMQ units (`1GB`, `512MiB`, `2G`) | `max_memory` |
//! | `disk_free_limit.absolute` | bytes or units | `min_free_disk` |
//! | `management.tcp.port`, `management.tcp.ip` | port / IP | `management_listen` |
//! | `log.console.level` | `debug`, `info`, `notice`, `warning`, `error`, `critical`, `none` | default `RUST_LOG` filter |
//! | `log.console` | `true`/`false` | `false`: logging off |
//! | `data_dir` | path | `data_dir` |
//! | `segment_size` | bytes or units, 4 KiB ..= 1 GiB | `segment_size` |
//! | `loopback_addresses` | comma-separated IPs | `loopback_addresses` |
//! | `load_definitions` (alias `definitions.local.path`) | path of a JSON definitions file | `definitions` |
//!
//! RabbitMQ's units: `k`/`K`/`kiB`/`KiB` = 1024, `M`/`MiB`, `G`/`GiB`;
//! `kB`/`KB` = 1000, `MB`, `GB` (rabbit_resource_monitor_misc).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::broker::auth::Permission;
use crate::core::Core;
use crate::Config;

/// Settings from the file that are not part of [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    /// `log.console.level` as an `env_logger` filter (`RUST_LOG` still wins).
    pub log_filter: Option<String>,
}

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

/// Read `path` and apply it to `config`.
pub fn load(path: &Path, config: &mut Config) -> Result<FileSettings, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, config).map_err(|(line, message)| ConfigError {
        file,
        line,
        message,
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

impl Core {
    /// Import `config.definitions` (after the durable state is restored).
    /// Whatever can be applied is; any error fails the start, as in RabbitMQ.
    pub(crate) fn load_definitions_file(&mut self) -> std::io::Result<()> {
        let Some(path) = self.config.definitions.clone() else {
            return Ok(());
        };
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let defs = read_definitions(&path).map_err(bad)?;
        let rep = crate::mgmt::definitions::import(self, &defs, None)
            .and_then(|rep| match rep.errors.is_empty() {
                true => Ok(rep),
                false => Err(rep.error_text()),
            })
            .map_err(|e| {
                bad(format!(
                    "{}: importing definitions failed: {e}",
                    path.display()
                ))
            })?;
        log::info!(
            "imported definitions from {} ({} skipped)",
            path.display(),
            rep.skipped.len()
        );
        Ok(())
    }
}

/// RabbitMQ settings that are recognised but have no meaning in warren.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "vm_memory_high_watermark.relative",
        "use vm_memory_high_watermark.absolute",
    ),
    ("disk_free_limit.relative", "use disk_free_limit.absolute"),
    ("listeners.ssl", "TLS is not supported"),
    ("ssl_options", "TLS is not supported"),
    ("management.ssl", "TLS is not supported"),
    ("auth_backends", "only the internal user database exists"),
    ("auth_mechanisms", "PLAIN and AMQPLAIN are always offered"),
    ("cluster_formation", "warren is a single node"),
    ("cluster_name", "warren is a single node"),
    ("log.file", "warren logs to stderr only"),
];

/// Parse a whole file; on error the 1-based line number and the message.
pub fn parse(text: &str, config: &mut Config) -> Result<FileSettings, (usize, String)> {
    let mut p = Parser {
        config,
        settings: FileSettings::default(),
        listeners: None,
        tags_seen: false,
        loopback_seen: false,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, format!("expected 'key = value', got '{line}'")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err((i + 1, "missing key before '='".into()));
        }
        if value.is_empty() {
            return Err((i + 1, format!("{key}: missing value")));
        }
        p.setting(key, value)
            .map_err(|e| (i + 1, format!("{key} = {value}: {e}")))?;
    }
    if let Some(l) = p.listeners.take() {
        p.config.listen = l.into_iter().map(|(_, a)| a).collect();
    }
    Ok(p.settings)
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
    /// The first `default_user_tags.*` line replaces the default tags.
    tags_seen: bool,
    /// The first `loopback_users.*` line replaces the default list.
    loopback_seen: bool,
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
            "log.console.level" => {
                let f = match v {
                    "debug" => "debug",
                    "info" | "notice" => "info",
                    "warning" => "warn",
                    "error" | "critical" | "alert" | "emergency" => "error",
                    "none" => "off",
                    _ => {
                        return Err(
                            "expected debug, info, notice, warning, error, critical or none".into(),
                        )
                    }
                };
                self.settings.log_filter = Some(f.into());
            }
            "log.console" => {
                if !boolean(v)? {
                    self.settings.log_filter = Some("off".into());
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
        if let Some(name) = key.strip_prefix("listeners.tcp.") {
            let addr = listener(v)?;
            let l = self.listeners.get_or_insert_with(Vec::new);
            match l.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = addr,
                None => l.push((name.to_string(), addr)),
            }
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

/// A TCP listener as RabbitMQ writes it: a port alone (all IPv4
/// interfaces), `HOST:PORT`, `[IPV6]:PORT`, or `IPV6:PORT` (split at the
/// last colon).
pub fn listener(v: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
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
            c.listen == vec![sa("0.0.0.0:5673")]
        }),
        ("listeners.tcp = none", |c, _| c.listen.is_empty()),
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
        assert_eq!(c.listen, vec![sa("0.0.0.0:2222")]);
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
                "vm_memory_high_watermark.relative = 0.4",
                "not supported by warren",
            ),
            ("disk_free_limit.absolute = 1TB", "unknown unit"),
            ("disk_free_limit.relative = 2.0", "not supported by warren"),
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
            ("listeners.ssl.default = 5671", "TLS is not supported"),
            ("log.file.level = info", "warren logs to stderr only"),
        ];
        for (line, want) in cases {
            let text = format!("# first line\nheartbeat = 10\n\n{line}\nheartbeat = 20\n");
            let mut c = Config::default();
            let (n, msg) = parse(&text, &mut c).unwrap_err();
            assert_eq!(n, 4, "{line}: {msg}");
            assert!(msg.contains(want), "{line}: {msg}");
        }
    }

    #[test]
    fn load_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("warren-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("rabbitmq.conf");
        std::fs::write(&f, "heartbeat = 5\nbogus.key = 1\n").unwrap();
        let e = load(&f, &mut Config::default()).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(
            e.to_string(),
            format!("{}:2: bogus.key = 1: unknown key 'bogus.key'", f.display())
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
