//! `amqp://user:pass@host:port/vhost` and `amqps://...` parsing
//! (percent-decoded user, password and vhost; missing or empty vhost means
//! `/`; `amqps` defaults to port 5671). Of the RabbitMQ URI spec's query
//! parameters, `amqps://` URIs take the TLS ones: `cacertfile`, `certfile`,
//! `keyfile`, `server_name_indication` and `verify=verify_peer`; the others
//! (`heartbeat`, `channel_max`, ...) are ignored.

use std::fmt;

use super::tls::Tls;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// PLAIN user name.
    pub user: String,
    /// PLAIN password.
    pub pass: String,
    /// Virtual host.
    pub vhost: String,
    /// `amqps://`: TLS, with these settings.
    pub tls: Option<Tls>,
}

impl Default for Uri {
    fn default() -> Uri {
        Uri {
            host: "127.0.0.1".into(),
            port: 5672,
            user: "guest".into(),
            pass: "guest".into(),
            vhost: "/".into(),
            tls: None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{}@{}:{}/{}",
            if self.tls.is_some() { "amqps" } else { "amqp" },
            self.user,
            host,
            self.port,
            self.vhost.replace('%', "%25").replace('/', "%2f")
        )
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("truncated percent escape in '{s}'"))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| format!("bad percent escape '%{hex}' in '{s}'"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8 once decoded"))
}

/// Parse an `amqp://` or `amqps://` URI.
pub fn parse(s: &str) -> Result<Uri, String> {
    let mut uri = Uri::default();
    let rest = if let Some(r) = s.strip_prefix("amqp://") {
        r
    } else if let Some(r) = s.strip_prefix("amqps://") {
        uri.port = 5671;
        uri.tls = Some(Tls::default());
        r
    } else {
        return Err(format!("'{s}' is not an amqp:// or amqps:// URI"));
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if let (Some(q), Some(tls)) = (query, uri.tls.as_mut()) {
        tls_params(q, tls)?;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let hostport = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            match userinfo.find(':') {
                Some(j) => {
                    uri.user = percent_decode(&userinfo[..j])?;
                    uri.pass = percent_decode(&userinfo[j + 1..])?;
                }
                None => uri.user = percent_decode(userinfo)?,
            }
            &authority[i + 1..]
        }
        None => authority,
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let end = h
            .find(']')
            .ok_or_else(|| format!("unterminated IPv6 address in '{s}'"))?;
        let after = &h[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("junk after IPv6 address in '{s}'")),
        };
        (&h[..end], port)
    } else {
        match hostport.rfind(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        uri.host = host.to_string();
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        uri.port = p.parse().map_err(|_| format!("bad port '{p}' in '{s}'"))?;
    }
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        uri.vhost = percent_decode(p)?;
    }
    Ok(uri)
}

/// The TLS query parameters of an `amqps://` URI.
fn tls_params(query: &str, tls: &mut Tls) -> Result<(), String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "cacertfile" => tls.ca = Some(v.into()),
            "certfile" => tls.cert = Some(v.into()),
            "keyfile" => tls.key = Some(v.into()),
            "server_name_indication" => tls.server_name = Some(v),
            "verify" if v == "verify_peer" => {}
            "verify" => {
                return Err(format!(
                    "verify={v}: warren-perf always verifies the broker's certificate \
                     (verify_peer)"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_defaults() {
        let u = parse("amqp://a%40b:p%3Aw@example.com:5673/v%2fh").unwrap();
        assert_eq!(u.user, "a@b");
        assert_eq!(u.pass, "p:w");
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 5673);
        assert_eq!(u.vhost, "v/h");
        assert_eq!(parse("amqp://").unwrap(), Uri::default());
        assert_eq!(parse("amqp://h/").unwrap().vhost, "/");
        assert_eq!(parse("amqp://h/%2f").unwrap().vhost, "/");
        let u = parse("amqp://[::1]:1234/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1234));
        assert!(parse("http://x").is_err());
        assert!(parse("amqp://h:notaport").is_err());
        assert_eq!(parse("amqp://h/v?heartbeat=5#frag").unwrap().vhost, "v");
        assert_eq!(parse("amqp://h?cacertfile=x").unwrap().tls, None);
    }

    #[test]
    fn amqps_and_its_query_parameters() {
        let u = parse("amqps://h").unwrap();
        assert_eq!((u.port, u.tls.clone()), (5671, Some(Tls::default())));
        assert_eq!(u.to_string(), "amqps://guest@h:5671/%2f");
        let u = parse(
            "amqps://u:p@[::1]:6000/v?cacertfile=%2Fetc%2Fca.pem&certfile=c.pem\
             &keyfile=k.pem&server_name_indication=broker.example&verify=verify_peer&heartbeat=9",
        )
        .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("::1", 6000, "v")
        );
        let tls = u.tls.unwrap();
        assert_eq!(tls.ca, Some("/etc/ca.pem".into()));
        assert_eq!(tls.cert, Some("c.pem".into()));
        assert_eq!(tls.key, Some("k.pem".into()));
        assert_eq!(tls.server_name.as_deref(), Some("broker.example"));
        let u = parse("amqps://h:5999?cacertfile=ca.pem").unwrap();
        assert_eq!((u.port, u.vhost.as_str()), (5999, "/"));
        assert_eq!(u.tls.unwrap().ca, Some("ca.pem".into()));
        let e = parse("amqps://h/?verify=verify_none").unwrap_err();
        assert!(e.contains("always verifies"), "{e}");
    }
}
