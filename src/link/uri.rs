//! The URIs shovels and federation upstreams name their ends with, as
//! RabbitMQ reads them: `amqp://user:pass@host:port/vhost?heartbeat=N`,
//! `amqps://...` (port 5671), and `amqp://` with no host for this broker
//! itself (`amqp:///vhost` for another of its vhosts). User and password
//! default to `guest`, the vhost to `/`.

use crate::broker::params::AmqpUri;

/// One end of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uri {
    /// None: this broker.
    pub host: Option<String>,
    pub port: u16,
    pub tls: bool,
    /// The user named in the URI, if any.
    pub user: Option<String>,
    pub pass: String,
    pub vhost: String,
    /// `heartbeat` query parameter (seconds).
    pub heartbeat: Option<u16>,
    /// `connection_timeout` query parameter (milliseconds).
    pub connect_timeout_ms: Option<u64>,
    /// Every query parameter (the TLS ones: `cacertfile`, `certfile`,
    /// `keyfile`, `verify`, `server_name_indication`).
    pub query: Vec<(String, String)>,
}

impl Uri {
    /// The URI without its password, for logs and status.
    pub(crate) fn redacted(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        match &self.host {
            None => format!("{scheme}:///{}", self.vhost.replace('/', "%2F")),
            Some(h) => format!(
                "{scheme}://{}{h}:{}/{}",
                self.user
                    .as_ref()
                    .map_or(String::new(), |u| format!("{u}@")),
                self.port,
                self.vhost.replace('/', "%2F")
            ),
        }
    }
}

/// Parse one URI (the grammar is `crate::broker::params::AmqpUri`'s, the
/// one parameters are validated with; this adds the defaults).
pub(crate) fn parse(s: &str) -> Result<Uri, String> {
    let u = AmqpUri::parse(s)?;
    let mut uri = Uri {
        port: u.port.unwrap_or(if u.tls { 5671 } else { 5672 }),
        host: u.host,
        tls: u.tls,
        pass: u.password.unwrap_or_else(|| "guest".into()),
        user: u.user,
        vhost: if u.vhost.is_empty() {
            "/".into()
        } else {
            u.vhost
        },
        heartbeat: None,
        connect_timeout_ms: None,
        query: u.query.clone(),
    };
    for (k, v) in &u.query {
        let bad = || format!("bad {k} '{v}' in '{s}'");
        match k.as_str() {
            "heartbeat" => uri.heartbeat = Some(v.parse().map_err(|_| bad())?),
            "connection_timeout" => uri.connect_timeout_ms = Some(v.parse().map_err(|_| bad())?),
            // RabbitMQ's other parameters (TLS files, channel_max, auth
            // mechanisms) are accepted and not used here.
            _ => {}
        }
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn local_and_remote() {
        let u = parse("amqp://").unwrap();
        assert_eq!((u.host, u.vhost.as_str(), u.user), (None, "/", None));
        let u = parse("amqp:///other").unwrap();
        assert_eq!((u.host, u.vhost.as_str()), (None, "other"));
        let u = parse("amqp://bob:s%40cret@rabbit.example:5673/%2F?heartbeat=5").unwrap();
        assert_eq!(u.host.as_deref(), Some("rabbit.example"));
        assert_eq!(
            (u.port, u.user.as_deref(), u.pass.as_str()),
            (5673, Some("bob"), "s@cret")
        );
        assert_eq!((u.vhost.as_str(), u.heartbeat), ("/", Some(5)));
        assert_eq!(u.redacted(), "amqp://bob@rabbit.example:5673/%2F");
        let u = parse("amqps://[::1]/v").unwrap();
        assert_eq!(
            (u.host.as_deref(), u.port, u.tls),
            (Some("::1"), 5671, true)
        );
        assert!(parse("http://x").is_err());
        assert!(parse("amqp://h:port/").is_err());
        assert!(parse("amqp://h/?heartbeat=x").is_err());
    }
}
