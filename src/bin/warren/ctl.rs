//! `warren ctl`: a `rabbitmqctl`-like operator CLI that talks to a running
//! broker's management HTTP API with a small HTTP/1.1 client over
//! `std::net::TcpStream`, or over TLS (rustls) with `--https`: the API's
//! certificate is verified against `--tls-ca` (there is no system trust
//! store), for `--host` or `--tls-server-name`. `--config FILE` reads the
//! broker's `rabbitmq.conf` for where the API is: `management.ssl.port`
//! (HTTPS, trusting `management.ssl.cacertfile`; `management.ssl.ip`),
//! else `management.tcp.port` / `.ip`; flags override it. Before its first
//! request it checks that what
//! answers there is warren (`product_name` in `/api/overview`, or the
//! `server` header when that needs credentials it lacks), and refuses
//! (exit 69) to act on anything else, such as a RabbitMQ that owns the
//! port; `--any-broker` acts on it anyway (RabbitMQ's API has the same
//! paths and JSON).
//!
//! Lists print like `rabbitmqctl`: a header line, then one tab-separated
//! row per item (`--no-table-headers` drops the header, `--json` prints a
//! JSON array of objects instead). The "Listing ..." line goes to stderr
//! (`--quiet` drops it) so stdout is only the table. Errors print
//! `Error: ...` on stderr and exit with `rabbitmqctl`'s sysexits codes: 64
//! usage, 67 no such user, 69 broker unreachable or no such vhost / queue /
//! connection, 70 any other refusal, 77 not authorised.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use warren::support::base64_encode;

mod node;
mod runtime;

/// Bad command line.
pub const EX_USAGE: u8 = 64;
/// No such user.
pub const EX_NOUSER: u8 = 67;
/// Broker unreachable, or the named vhost / queue / connection is missing.
pub const EX_UNAVAILABLE: u8 = 69;
/// The broker refused the request.
pub const EX_SOFTWARE: u8 = 70;
/// Wrong credentials, or the user may not do this.
pub const EX_NOPERM: u8 = 77;
/// Timed out (`await_startup`, `stop`), as rabbitmqctl's timeouts.
pub const EX_TEMPFAIL: u8 = 75;

/// The commands, for `--help` (the table shared with the man page).
const COMMANDS: &str = warren::cli::CTL_COMMANDS_HELP;

/// A failed command: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    /// Process exit code.
    pub code: u8,
    /// Message (printed after `Error: `).
    pub message: String,
    /// The API could not be reached (no connection, or no response to a
    /// request sent): `await_startup` and `stop` wait on this.
    pub unreachable: bool,
}

impl CtlError {
    fn new(code: u8, message: impl Into<String>) -> CtlError {
        CtlError {
            code,
            message: message.into(),
            unreachable: false,
        }
    }

    fn usage(message: impl Into<String>) -> CtlError {
        CtlError::new(EX_USAGE, message)
    }
}

type Result<T> = std::result::Result<T, CtlError>;

/// Entry point: `args` are the words after `ctl`.
pub fn main(args: &[String]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let code = run(args, &mut out, &mut err);
    let _ = out.flush();
    ExitCode::from(code)
}

fn options() -> getopts::Options {
    warren::cli::getopts_for(warren::cli::Program::Ctl)
}

fn usage(o: &getopts::Options) -> String {
    format!(
        "{}\n{COMMANDS}\n",
        o.usage("Usage: warren ctl [OPTIONS] COMMAND [ARGS...]")
    )
}

/// Run a command, writing its output to `out` and messages to `err`;
/// returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let o = options();
    let m = match o.parse(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = write!(err, "Error: {e}\n\n{}", usage(&o));
            return EX_USAGE;
        }
    };
    if m.opt_present("help") || m.free.is_empty() {
        let _ = write!(out, "{}", usage(&o));
        return if m.opt_present("help") { 0 } else { EX_USAGE };
    }
    match Ctl::from_matches(&m).and_then(|ctl| ctl.command(&m.free, out, err)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "Error: {}", e.message);
            if e.code == EX_USAGE {
                let _ = write!(err, "\n{}", usage(&o));
            }
            e.code
        }
    }
}

/// A management API client (HTTP/1.1, one connection per request).
#[derive(Debug, Clone)]
pub struct Client {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Connect / read / write timeout.
    pub timeout: Duration,
    /// Check, before the first request, that the API is warren's.
    pub expect_warren: bool,
    /// HTTPS with this configuration (the trusted CAs).
    pub tls: Option<Arc<ClientConfig>>,
    /// HTTPS: the name verified (default: `host`).
    pub server_name: Option<String>,
    /// The check was made.
    checked: std::cell::Cell<bool>,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
    /// The `server` header.
    pub server: Option<String>,
}

impl Response {
    /// The body as JSON (`null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error text of a failed request: the API's `reason`, else the body.
    fn error_text(&self) -> String {
        let v = self.json();
        match v.get("reason").or_else(|| v.get("error")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `host:port` (checking that it is warren's API).
    pub fn new(host: &str, port: u16, user: &str, password: &str, timeout: Duration) -> Client {
        Client {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.to_string(),
            timeout,
            expect_warren: true,
            tls: None,
            server_name: None,
            checked: std::cell::Cell::new(false),
        }
    }

    /// Where the API is, as messages name it: `HOST:PORT` over HTTP,
    /// `https://HOST:PORT` over HTTPS.
    pub fn at(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.tls {
            None => format!("{host}:{}", self.port),
            Some(_) => format!("https://{host}:{}", self.port),
        }
    }

    /// The bytes of one request (HTTP/1.1, `Connection: close`, basic auth
    /// with the client's credentials, a JSON `body` if any; a POST or PUT
    /// without one says `Content-Length: 0`).
    pub fn request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Vec<u8> {
        let auth = base64_encode(format!("{}:{}", self.user, self.password).as_bytes());
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{}\r\nAuthorization: Basic {auth}\r\n\
             Accept: */*\r\nUser-Agent: warren-ctl\r\nConnection: close\r\n",
            self.port
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )),
            None if matches!(method, "POST" | "PUT") => req.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        req.push_str("\r\n");
        let mut data = req.into_bytes();
        data.extend_from_slice(body.unwrap_or_default());
        data
    }

    /// Is the management API at `host:port` warren's? Asks `/api/overview`
    /// for its `product_name`; when that is refused, the `server` header
    /// tells (warren's says `warren`), and warren's refusal is the error.
    pub fn verify_warren(&self) -> Result<()> {
        let r = self.request_unchecked("GET", "/api/overview", None, &[])?;
        let at = self.at();
        let refuse = |what: String| {
            Err(CtlError::new(
                EX_UNAVAILABLE,
                format!(
                    "the management API at {at} is {what}, not warren: refusing to act on it \
                     (is another broker using the port? --any-broker acts on it anyway)"
                ),
            ))
        };
        if r.is_success() {
            let v = r.json();
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return match field("product_name").as_str() {
                "Warren" => Ok(()),
                "" => refuse(
                    "not a broker's management API (no product_name in /api/overview)".into(),
                ),
                p => refuse(format!(
                    "{p} {} (node {})",
                    field("product_version"),
                    field("node")
                )),
            };
        }
        match r.server.as_deref() {
            Some("warren") => check(&r, "GET", "/api/overview"),
            server => refuse(format!(
                "a server that answered HTTP {} to /api/overview (server: {})",
                r.status,
                server.unwrap_or("not named")
            )),
        }
    }

    /// Send one request and read the whole response (after checking, the
    /// first time, that the API is warren's when `expect_warren`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        if self.expect_warren && !self.checked.get() {
            self.verify_warren()?;
            self.checked.set(true);
        }
        self.request_unchecked(method, path, body, headers)
    }

    /// Send one request, whoever answers.
    fn request_unchecked(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        let unreachable = |e: std::io::Error| CtlError {
            unreachable: true,
            ..CtlError::new(
                EX_UNAVAILABLE,
                format!("cannot reach the management API at {}: {e}", self.at()),
            )
        };
        let mut s = self.connect().map_err(unreachable)?;
        let data = self.request_bytes(method, path, body, headers);
        s.write_all(&data).map_err(unreachable)?;
        let mut raw = Vec::new();
        // Read to EOF (Connection: close); a reset after a complete
        // response is not an error, nor (HTTPS) a close without
        // close_notify.
        if let Err(e) = s.read_to_end(&mut raw) {
            if raw.is_empty() {
                return Err(unreachable(e));
            }
        }
        parse_response(&raw).map_err(|e| {
            let hint = match raw.first() {
                // A TLS record (an alert) where HTTP was expected.
                Some(0x15 | 0x16) if self.tls.is_none() => {
                    " (it answered with TLS: an HTTPS port? use --https and --tls-ca)"
                }
                _ => "",
            };
            CtlError::new(
                EX_SOFTWARE,
                format!("bad HTTP response from {}: {e}{hint}", self.at()),
            )
        })
    }

    /// A connection to the API: TCP, with the TLS handshake done over it
    /// for HTTPS.
    fn connect(&self) -> std::io::Result<HttpStream> {
        let addrs: Vec<_> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last = std::io::Error::other("no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut s = stream.ok_or(last)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let Some(config) = &self.tls else {
            return Ok(HttpStream::Plain(s));
        };
        let name = self.server_name.as_deref().unwrap_or(&self.host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{name}' cannot be verified as a TLS server name: {e}"),
            )
        })?;
        let mut conn = ClientConnection::new(Arc::clone(config), server_name)
            .map_err(std::io::Error::other)?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut s) {
                let invalid_cert = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                let hint = if invalid_cert {
                    format!(
                        " (is --tls-ca the CA that signed the management API's certificate, \
                         and is that certificate for '{name}'? --tls-server-name)"
                    )
                } else if e.kind() == std::io::ErrorKind::InvalidData {
                    " (is this the management API's HTTPS port?)".to_string()
                } else {
                    String::new()
                };
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed: {e}{hint}"),
                ));
            }
        }
        Ok(HttpStream::Tls(Box::new(StreamOwned::new(conn, s))))
    }

    /// A request that must succeed; its body as JSON.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = self.request(method, path, bytes.as_deref(), &[])?;
        check(&r, method, path)?;
        Ok(r.json())
    }
}

/// A connection to the management API.
enum HttpStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            HttpStream::Plain(s) => s.read(buf),
            HttpStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for HttpStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            HttpStream::Plain(s) => s.write(buf),
            HttpStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            HttpStream::Plain(s) => s.flush(),
            HttpStream::Tls(s) => s.flush(),
        }
    }
}

/// The client side of HTTPS: trust the CA certificates (PEM) in `ca`.
pub fn tls_config(ca: &Path) -> std::result::Result<Arc<ClientConfig>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("TLS CA file {}: {e}", ca.display());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// What `--config` tells about the management API: the `management.*`
/// keys of a `rabbitmq.conf` (everything else is the broker's business).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MgmtConfig {
    /// `management.tcp.port` (alias `management.listener.port`).
    pub tcp_port: Option<u16>,
    /// `management.tcp.ip` (alias `management.listener.ip`).
    pub tcp_ip: Option<IpAddr>,
    /// `management.ssl.port`.
    pub ssl_port: Option<u16>,
    /// `management.ssl.ip`.
    pub ssl_ip: Option<IpAddr>,
    /// `management.ssl.cacertfile`.
    pub ssl_ca: Option<PathBuf>,
}

impl MgmtConfig {
    /// Read the management keys of a `rabbitmq.conf` text (`key = value`
    /// lines, `#` comments); a bad value of one of them is an error
    /// naming the line.
    pub fn parse(text: &str) -> std::result::Result<MgmtConfig, String> {
        let mut c = MgmtConfig::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, v) = (key.trim(), value.trim());
            let bad = |what: &str| format!("line {}: {key} = {v}: {what}", i + 1);
            let port = || v.parse::<u16>().map_err(|_| bad("not a port number"));
            let ip = || v.parse::<IpAddr>().map_err(|_| bad("not an IP address"));
            match key {
                "management.tcp.port" | "management.listener.port" => c.tcp_port = Some(port()?),
                "management.tcp.ip" | "management.listener.ip" => c.tcp_ip = Some(ip()?),
                "management.ssl.port" => c.ssl_port = Some(port()?),
                "management.ssl.ip" => c.ssl_ip = Some(ip()?),
                "management.ssl.cacertfile" if !v.is_empty() => c.ssl_ca = Some(v.into()),
                _ => {}
            }
        }
        Ok(c)
    }

    /// Where and how to reach the API: (https, host, port, CA). HTTPS when
    /// the file has `management.ssl.port`. An unspecified address
    /// (`0.0.0.0`, `::`) is reached at `localhost`.
    pub fn endpoint(&self) -> (bool, Option<String>, Option<u16>, Option<PathBuf>) {
        let host = |ip: Option<IpAddr>| {
            ip.map(|ip| {
                if ip.is_unspecified() {
                    "localhost".to_string()
                } else {
                    ip.to_string()
                }
            })
        };
        match self.ssl_port {
            Some(p) => (true, host(self.ssl_ip), Some(p), self.ssl_ca.clone()),
            None => (false, host(self.tcp_ip), self.tcp_port, None),
        }
    }
}

/// Map a failed response to an error (404 and the like handled by callers
/// that know what is missing).
fn check(r: &Response, method: &str, path: &str) -> Result<()> {
    if r.is_success() {
        return Ok(());
    }
    let code = match r.status {
        401 | 403 => EX_NOPERM,
        404 => EX_UNAVAILABLE,
        _ => EX_SOFTWARE,
    };
    Err(CtlError::new(
        code,
        format!(
            "{method} {path}: HTTP {}: {}",
            r.status,
            if r.status == 404 && r.body.is_empty() {
                "Not Found".into()
            } else {
                r.error_text()
            }
        ),
    ))
}

/// Parse a complete HTTP/1.1 response (Content-Length, chunked, or to EOF).
pub fn parse_response(raw: &[u8]) -> std::result::Result<Response, String> {
    let r = warren::support::parse_http_response(raw)?;
    Ok(Response {
        status: r.status,
        body: r.body,
        server: r.server,
    })
}

/// How to show a table.
#[derive(Debug, Clone, Copy)]
struct Format {
    json: bool,
    headers: bool,
    quiet: bool,
}

struct Ctl {
    client: Client,
    vhost: String,
    fmt: Format,
    if_empty: bool,
    if_unused: bool,
    priority: Option<String>,
    apply_to: Option<String>,
    global: bool,
    /// `--timeout`, if given (`await_startup` waits 300 s without it).
    timeout: Option<u64>,
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| CtlError::usage(format!("missing argument: {what}")))
}

fn no_more(args: &[String], n: usize) -> Result<()> {
    match args.get(n..) {
        Some(extra) if !extra.is_empty() => Err(CtlError::usage(format!(
            "unexpected arguments: {}",
            extra.join(" ")
        ))),
        _ => Ok(()),
    }
}

/// One cell as `rabbitmqctl` shows it.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => {
            let items: Vec<String> = a.iter().map(|x| cell(Some(x))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::Object(o)) => {
            // Tables (arguments) as rabbitmqctl prints them: [{"k",v},...].
            let items: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{{{},{}}}", Value::String(k.clone()), v))
                .collect();
            format!("[{}]", items.join(","))
        }
        Some(other) => other.to_string(),
    }
}

/// The value of `column` in an API object, with `rabbitmqctl`'s info-item
/// names mapped onto the API's field names.
fn column(item: &Value, kind: &str, col: &str) -> Value {
    let field = match (kind, col) {
        ("bindings", "source_name") => "source",
        ("bindings", "source_kind") => return json!("exchange"),
        ("bindings", "destination_name") => "destination",
        ("bindings", "destination_kind") => "destination_type",
        // rabbitmqctl prints definitions and limits as JSON.
        ("policies" | "operator-policies", "definition")
        | ("vhost-limits" | "user-limits" | "parameters", "value") => {
            return json!(item.get(col).map_or(String::new(), Value::to_string))
        }
        ("users", "user") => "name",
        ("users", "tags") => {
            // RabbitMQ 3.8 and earlier: a comma-separated string.
            return match item.get("tags") {
                Some(Value::String(s)) => Value::Array(
                    s.split(',')
                        .filter(|t| !t.is_empty())
                        .map(|t| json!(t))
                        .collect(),
                ),
                Some(v) => v.clone(),
                None => json!([]),
            };
        }
        (_, c) => c,
    };
    item.get(field).cloned().unwrap_or(Value::Null)
}

impl Ctl {
    fn from_matches(m: &getopts::Matches) -> Result<Ctl> {
        let (mut https, mut host, mut port, mut ca) = match m.opt_str("config") {
            None => (false, None, None, None),
            Some(f) => {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| CtlError::usage(format!("cannot read --config {f}: {e}")))?;
                MgmtConfig::parse(&text)
                    .map_err(|e| CtlError::usage(format!("--config {f}: {e}")))?
                    .endpoint()
            }
        };
        if let Some(p) = m.opt_str("port") {
            port = Some(
                p.parse()
                    .map_err(|_| CtlError::usage(format!("bad --port '{p}'")))?,
            );
        }
        if let Some(h) = m.opt_str("host") {
            host = Some(h);
        }
        if let Some(c) = m.opt_str("tls-ca") {
            ca = Some(c.into());
            https = true;
        }
        https |= m.opt_present("https");
        let port = port.unwrap_or(if https { 15671 } else { 15672 });
        let tls = match (https, ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(tls_config(&ca).map_err(CtlError::usage)?),
            (true, None) => {
                return Err(CtlError::usage(
                    "HTTPS needs the CA that signed the management API's certificate: \
                     --tls-ca FILE (or management.ssl.cacertfile in --config); \
                     warren ctl has no system trust store",
                ))
            }
        };
        if tls.is_none() && m.opt_present("tls-server-name") {
            return Err(CtlError::usage("--tls-server-name is for HTTPS (--https)"));
        }
        let given = match m.opt_str("timeout") {
            None => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or_else(|| CtlError::usage(format!("bad --timeout '{t}'")))?,
            ),
        };
        let timeout = given.unwrap_or(30);
        let json = match m.opt_str("formatter").as_deref() {
            None | Some("table") => m.opt_present("json"),
            Some("json") => true,
            Some(f) => return Err(CtlError::usage(format!("unknown formatter '{f}'"))),
        };
        Ok(Ctl {
            client: Client {
                expect_warren: !m.opt_present("any-broker"),
                tls,
                server_name: m.opt_str("tls-server-name"),
                ..Client::new(
                    host.as_deref().unwrap_or("localhost"),
                    port,
                    &m.opt_str("user").unwrap_or_else(|| "guest".into()),
                    &m.opt_str("password").unwrap_or_else(|| "guest".into()),
                    Duration::from_secs(timeout),
                )
            },
            vhost: m.opt_str("vhost").unwrap_or_else(|| "/".into()),
            fmt: Format {
                json,
                headers: !m.opt_present("no-table-headers"),
                quiet: m.opt_present("quiet") || m.opt_present("silent"),
            },
            if_empty: m.opt_present("if-empty"),
            if_unused: m.opt_present("if-unused"),
            priority: m.opt_str("priority"),
            apply_to: m.opt_str("apply-to"),
            global: m.opt_present("global"),
            timeout: given,
        })
    }

    fn vh(&self) -> String {
        encode_segment(&self.vhost)
    }

    fn info(&self, err: &mut dyn Write, msg: &str) {
        if !self.fmt.quiet {
            let _ = writeln!(err, "{msg}");
        }
    }

    /// Print a list of API objects as a table (or JSON) of `cols`.
    fn table(&self, out: &mut dyn Write, kind: &str, items: &[Value], cols: &[&str]) -> Result<()> {
        // A closed pipe (`| head`) ends the output quietly.
        let w = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CtlError::new(
                EX_SOFTWARE,
                format!("cannot write output: {e}"),
            )),
            _ => Ok(()),
        };
        if self.fmt.json {
            // Built by hand to keep the columns in the order asked for.
            let rows: Vec<String> = items
                .iter()
                .map(|it| {
                    let fields: Vec<String> = cols
                        .iter()
                        .map(|c| format!("{}:{}", json!(c), column(it, kind, c)))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            return w(writeln!(out, "[{}]", rows.join(",\n")));
        }
        if self.fmt.headers {
            w(writeln!(out, "{}", cols.join("\t")))?;
        }
        for it in items {
            let row: Vec<String> = cols
                .iter()
                .map(|c| cell(Some(&column(it, kind, c))))
                .collect();
            w(writeln!(out, "{}", row.join("\t")))?;
        }
        Ok(())
    }

    fn list(
        &self,
        out: &mut dyn Write,
        kind: &str,
        path: &str,
        args: &[String],
        default: &[&str],
        vhost_scoped: bool,
    ) -> Result<()> {
        let cols: Vec<&str> = if args.is_empty() {
            default.to_vec()
        } else {
            args.iter().map(String::as_str).collect()
        };
        let r = self.client.request("GET", path, None, &[])?;
        if r.status == 404 && vhost_scoped {
            return Err(CtlError::new(
                EX_UNAVAILABLE,
                format!("virtual host '{}' does not exist", self.vhost),
            ));
        }
        check(&r, "GET", path)?;
        let items = match r.json() {
            Value::Array(a) => a,
            other => {
                return Err(CtlError::new(
                    EX_SOFTWARE,
                    format!("GET {path}: expected a JSON list, got {other}"),
                ))
            }
        };
        self.table(out, kind, &items, &cols)
    }

    fn user_path(user: &str) -> String {
        format!("/api/users/{}", encode_segment(user))
    }

    /// GET a user; `does not exist` (67) when it is missing.
    fn get_user(&self, user: &str) -> Result<Value> {
        let path = Ctl::user_path(user);
        let r = self.client.request("GET", &path, None, &[])?;
        if r.status == 404 {
            return Err(CtlError::new(
                EX_NOUSER,
                format!("user \"{user}\" does not exist"),
            ));
        }
        check(&r, "GET", &path)?;
        Ok(r.json())
    }

    fn command(&self, args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
        let (cmd, rest) = match args.split_first() {
            Some((c, r)) => (c.as_str(), r),
            None => return Err(CtlError::usage("missing command")),
        };
        let vhost = self.vhost.clone();
        let c = &self.client;
        match cmd {
            "list_queues" => {
                self.info(err, &format!("Listing queues for vhost {vhost} ..."));
                let path = format!("/api/queues/{}", self.vh());
                self.list(out, "queues", &path, rest, &["name", "messages"], true)
            }
            "list_exchanges" => {
                self.info(err, &format!("Listing exchanges for vhost {vhost} ..."));
                let path = format!("/api/exchanges/{}", self.vh());
                self.list(out, "exchanges", &path, rest, &["name", "type"], true)
            }
            "list_bindings" => {
                self.info(err, &format!("Listing bindings for vhost {vhost}..."));
                let path = format!("/api/bindings/{}", self.vh());
                let default = [
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                    "arguments",
                ];
                self.list(out, "bindings", &path, rest, &default, true)
            }
            "list_connections" => {
                self.info(err, "Listing connections ...");
                let default = ["user", "peer_host", "peer_port", "state"];
                self.list(
                    out,
                    "connections",
                    "/api/connections",
                    rest,
                    &default,
                    false,
                )
            }
            "list_users" => {
                no_more(rest, 0)?;
                self.info(err, "Listing users ...");
                self.list(out, "users", "/api/users", rest, &["user", "tags"], false)
            }
            "list_vhosts" => {
                self.info(err, "Listing vhosts ...");
                self.list(out, "vhosts", "/api/vhosts", rest, &["name"], false)
            }
            "list_permissions" => {
                no_more(rest, 0)?;
                self.info(
                    err,
                    &format!("Listing permissions for vhost \"{vhost}\" ..."),
                );
                let path = format!("/api/vhosts/{}/permissions", self.vh());
                let cols = ["user", "configure", "write", "read"];
                self.list(out, "permissions", &path, rest, &cols, true)
            }
            "list_user_permissions" => {
                let user = arg(rest, 0, "USER")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Listing permissions for user \"{user}\" ..."));
                self.get_user(user)?;
                let path = format!("{}/permissions", Ctl::user_path(user));
                let cols = ["vhost", "configure", "write", "read"];
                self.list(out, "permissions", &path, &[], &cols, false)
            }
            "add_user" => {
                let user = arg(rest, 0, "USER")?;
                let pass = arg(rest, 1, "PASSWORD")?;
                no_more(rest, 2)?;
                self.info(err, &format!("Adding user \"{user}\" ..."));
                let path = Ctl::user_path(user);
                if c.request("GET", &path, None, &[])?.is_success() {
                    return Err(CtlError::new(
                        EX_SOFTWARE,
                        format!("user \"{user}\" already exists"),
                    ));
                }
                c.call("PUT", &path, Some(&json!({"password": pass, "tags": ""})))?;
                Ok(())
            }
            "delete_user" => {
                let user = arg(rest, 0, "USER")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Deleting user \"{user}\" ..."));
                let path = Ctl::user_path(user);
                let r = c.request("DELETE", &path, None, &[])?;
                if r.status == 404 {
                    return Err(CtlError::new(
                        EX_NOUSER,
                        format!("user \"{user}\" does not exist"),
                    ));
                }
                check(&r, "DELETE", &path)
            }
            "change_password" => {
                let user = arg(rest, 0, "USER")?;
                let pass = arg(rest, 1, "PASSWORD")?;
                no_more(rest, 2)?;
                self.info(err, &format!("Changing password for user \"{user}\" ..."));
                let u = self.get_user(user)?;
                let tags = cell(Some(&column(&u, "users", "tags")));
                let tags = tags.trim_start_matches('[').trim_end_matches(']');
                let body = json!({"password": pass, "tags": tags.replace(", ", ",")});
                c.call("PUT", &Ctl::user_path(user), Some(&body))?;
                Ok(())
            }
            "set_user_tags" => {
                let user = arg(rest, 0, "USER")?;
                let tags: Vec<&str> = rest.iter().skip(1).map(String::as_str).collect();
                self.info(
                    err,
                    &format!(
                        "Setting tags for user \"{user}\" to [{}] ...",
                        tags.join(", ")
                    ),
                );
                let u = self.get_user(user)?;
                let mut body = json!({"tags": tags.join(",")});
                for k in ["password_hash", "hashing_algorithm"] {
                    if let (Some(v), Some(o)) = (u.get(k), body.as_object_mut()) {
                        o.insert(k.into(), v.clone());
                    }
                }
                c.call("PUT", &Ctl::user_path(user), Some(&body))?;
                Ok(())
            }
            "set_permissions" => {
                let user = arg(rest, 0, "USER")?;
                let conf = arg(rest, 1, "CONFIGURE")?;
                let write = arg(rest, 2, "WRITE")?;
                let read = arg(rest, 3, "READ")?;
                no_more(rest, 4)?;
                self.info(
                    err,
                    &format!("Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
                );
                self.require_vhost()?;
                self.get_user(user)?;
                let path = format!("/api/permissions/{}/{}", self.vh(), encode_segment(user));
                let body = json!({"configure": conf, "write": write, "read": read});
                c.call("PUT", &path, Some(&body))?;
                Ok(())
            }
            "clear_permissions" => {
                let user = arg(rest, 0, "USER")?;
                no_more(rest, 1)?;
                self.info(
                    err,
                    &format!("Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
                );
                self.require_vhost()?;
                self.get_user(user)?;
                let path = format!("/api/permissions/{}/{}", self.vh(), encode_segment(user));
                let r = c.request("DELETE", &path, None, &[])?;
                // No permissions to clear is not an error (rabbitmqctl).
                if r.status == 404 {
                    return Ok(());
                }
                check(&r, "DELETE", &path)
            }
            "list_topic_permissions" => {
                no_more(rest, 0)?;
                self.info(
                    err,
                    &format!("Listing topic permissions for vhost \"{vhost}\" ..."),
                );
                let path = format!("/api/vhosts/{}/topic-permissions", self.vh());
                let cols = ["user", "exchange", "write", "read"];
                self.list(out, "topic_permissions", &path, rest, &cols, true)
            }
            "set_topic_permissions" => {
                let user = arg(rest, 0, "USER")?;
                let exchange = arg(rest, 1, "EXCHANGE")?;
                let write = arg(rest, 2, "WRITE")?;
                let read = arg(rest, 3, "READ")?;
                no_more(rest, 4)?;
                self.info(
                    err,
                    &format!(
                        "Setting topic permissions on \"{exchange}\" for user \"{user}\" in vhost \"{vhost}\" ..."
                    ),
                );
                self.require_vhost()?;
                self.get_user(user)?;
                let path = format!(
                    "/api/topic-permissions/{}/{}",
                    self.vh(),
                    encode_segment(user)
                );
                let body = json!({"exchange": exchange, "write": write, "read": read});
                c.call("PUT", &path, Some(&body))?;
                Ok(())
            }
            "clear_topic_permissions" => {
                let user = arg(rest, 0, "USER")?;
                let exchange = rest.get(1);
                no_more(rest, 2)?;
                let on = exchange.map_or(String::new(), |x| format!(" on \"{x}\""));
                self.info(
                    err,
                    &format!(
                        "Clearing topic permissions{on} for user \"{user}\" in vhost \"{vhost}\" ..."
                    ),
                );
                self.require_vhost()?;
                self.get_user(user)?;
                let mut path = format!(
                    "/api/topic-permissions/{}/{}",
                    self.vh(),
                    encode_segment(user)
                );
                if let Some(x) = exchange {
                    path.push_str(&format!("?exchange={}", encode_segment(x)));
                }
                let r = c.request("DELETE", &path, None, &[])?;
                // Nothing to clear is not an error (rabbitmqctl).
                if r.status == 404 {
                    return Ok(());
                }
                check(&r, "DELETE", &path)
            }
            "add_vhost" => {
                let name = arg(rest, 0, "VHOST")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Adding vhost \"{name}\" ..."));
                let path = format!("/api/vhosts/{}", encode_segment(name));
                c.call("PUT", &path, Some(&json!({})))?;
                Ok(())
            }
            "delete_vhost" => {
                let name = arg(rest, 0, "VHOST")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Deleting vhost \"{name}\" ..."));
                let path = format!("/api/vhosts/{}", encode_segment(name));
                let r = c.request("DELETE", &path, None, &[])?;
                if r.status == 404 {
                    return Err(CtlError::new(
                        EX_UNAVAILABLE,
                        format!("virtual host '{name}' does not exist"),
                    ));
                }
                check(&r, "DELETE", &path)
            }
            "purge_queue" => {
                let q = arg(rest, 0, "QUEUE")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Purging queue '{q}' in vhost '{vhost}' ..."));
                let path = format!("/api/queues/{}/{}/contents", self.vh(), encode_segment(q));
                let r = c.request("DELETE", &path, None, &[])?;
                if r.status == 404 {
                    return Err(self.no_queue(q));
                }
                check(&r, "DELETE", &path)
            }
            "delete_queue" => {
                let q = arg(rest, 0, "QUEUE")?;
                no_more(rest, 1)?;
                self.info(err, &format!("Deleting queue '{q}' on vhost '{vhost}' ..."));
                let path = format!("/api/queues/{}/{}", self.vh(), encode_segment(q));
                let r = c.request("GET", &path, None, &[])?;
                if r.status == 404 {
                    return Err(self.no_queue(q));
                }
                check(&r, "GET", &path)?;
                let messages = r.json().get("messages").and_then(Value::as_u64);
                let mut query = Vec::new();
                if self.if_empty {
                    query.push("if-empty=true");
                }
                if self.if_unused {
                    query.push("if-unused=true");
                }
                let full = if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{}", query.join("&"))
                };
                let r = c.request("DELETE", &full, None, &[])?;
                if r.status == 404 {
                    return Err(self.no_queue(q));
                }
                check(&r, "DELETE", &path)?;
                if !self.fmt.quiet {
                    let _ = writeln!(
                        out,
                        "Queue was successfully deleted with {} messages",
                        messages.unwrap_or(0)
                    );
                }
                Ok(())
            }
            "close_connection" => {
                let name = arg(rest, 0, "NAME")?;
                let reason = rest.get(1).map_or("Closed via warren ctl", String::as_str);
                no_more(rest, 2)?;
                self.info(
                    err,
                    &format!("Closing connection {name}, reason: {reason}..."),
                );
                let path = format!("/api/connections/{}", encode_segment(name));
                let r = c.request("DELETE", &path, None, &[("X-Reason", reason)])?;
                if r.status == 404 {
                    return Err(CtlError::new(
                        EX_UNAVAILABLE,
                        format!("no connection named '{name}'"),
                    ));
                }
                check(&r, "DELETE", &path)
            }
            "export_definitions" => {
                let file = arg(rest, 0, "FILE (or - for stdout)")?;
                no_more(rest, 1)?;
                let defs = c.call("GET", "/api/definitions", None)?;
                let text = serde_json::to_string_pretty(&defs)
                    .map_err(|e| CtlError::new(EX_SOFTWARE, e.to_string()))?;
                if file == "-" {
                    let _ = writeln!(out, "{text}");
                } else {
                    self.info(
                        err,
                        &format!("Exporting definitions in JSON to a file at \"{file}\" ..."),
                    );
                    std::fs::write(file, text + "\n").map_err(|e| {
                        CtlError::new(EX_SOFTWARE, format!("cannot write {file}: {e}"))
                    })?;
                }
                Ok(())
            }
            "import_definitions" => {
                let file = arg(rest, 0, "FILE (or - for stdin)")?;
                no_more(rest, 1)?;
                let mut text = Vec::new();
                let read = if file == "-" {
                    std::io::stdin().read_to_end(&mut text).map(|_| ())
                } else {
                    std::fs::read(file).map(|t| text = t)
                };
                read.map_err(|e| CtlError::new(EX_SOFTWARE, format!("cannot read {file}: {e}")))?;
                let defs: Value = serde_json::from_slice(&text).map_err(|e| {
                    CtlError::new(EX_SOFTWARE, format!("{file} is not valid JSON: {e}"))
                })?;
                self.info(
                    err,
                    &format!("Importing definitions in JSON from a file at \"{file}\" ..."),
                );
                c.call("POST", "/api/definitions", Some(&defs))?;
                if !self.fmt.quiet {
                    let _ = writeln!(out, "Successfully started definition import.");
                }
                Ok(())
            }
            "reload_certificates" => {
                no_more(rest, 0)?;
                self.info(
                    err,
                    "Reloading TLS certificates and keys from their files ...",
                );
                let path = "/api/reload-certificates";
                let r = c.request("POST", path, None, &[])?;
                check(&r, "POST", path)?;
                if !self.fmt.quiet {
                    let _ = writeln!(out, "TLS certificates reloaded.");
                }
                Ok(())
            }
            "status" => {
                no_more(rest, 0)?;
                let ov = c.call("GET", "/api/overview", None)?;
                let nodes = c.call("GET", "/api/nodes", None)?;
                self.status(out, &ov, nodes.get(0).unwrap_or(&Value::Null))
            }
            other => match self.runtime_command(other, rest, out, err) {
                Some(r) => r,
                None => match self.node_command(other, rest, out, err) {
                    Some(r) => r,
                    None => Err(CtlError::usage(format!("unknown command '{other}'"))),
                },
            },
        }
    }

    fn no_queue(&self, q: &str) -> CtlError {
        CtlError::new(
            EX_UNAVAILABLE,
            format!("queue '{q}' in vhost '{}' not found", self.vhost),
        )
    }

    fn require_vhost(&self) -> Result<()> {
        let path = format!("/api/vhosts/{}", self.vh());
        let r = self.client.request("GET", &path, None, &[])?;
        if r.status == 404 {
            return Err(CtlError::new(
                EX_UNAVAILABLE,
                format!("virtual host '{}' does not exist", self.vhost),
            ));
        }
        check(&r, "GET", &path)
    }

    fn status(&self, out: &mut dyn Write, ov: &Value, node: &Value) -> Result<()> {
        if self.fmt.json {
            let _ = writeln!(out, "{}", json!({"overview": ov, "node": node}));
            return Ok(());
        }
        let s = |v: &Value, k: &str| cell(v.get(k));
        let totals = ov.get("object_totals").cloned().unwrap_or(Value::Null);
        let queue_totals = ov.get("queue_totals").cloned().unwrap_or(Value::Null);
        let mut lines = vec![
            format!("Status of node {} ...", s(ov, "node")),
            format!(
                "Product: {} {}",
                s(ov, "product_name"),
                s(ov, "product_version")
            ),
            format!(
                "RabbitMQ compatibility version: {}",
                s(ov, "rabbitmq_version")
            ),
            format!(
                "Uptime (seconds): {}",
                node.get("uptime").and_then(Value::as_u64).unwrap_or(0) / 1000
            ),
            format!("Memory used (bytes): {}", s(node, "mem_used")),
            format!("Memory limit (bytes): {}", s(node, "mem_limit")),
            format!("Disk free (bytes): {}", s(node, "disk_free")),
            format!("Disk free limit (bytes): {}", s(node, "disk_free_limit")),
            format!(
                "Alarms: {}",
                if node.get("mem_alarm") == Some(&json!(true))
                    || node.get("disk_free_alarm") == Some(&json!(true))
                {
                    "resource alarm in effect"
                } else {
                    "(none)"
                }
            ),
            format!("Connections: {}", s(&totals, "connections")),
            format!("Channels: {}", s(&totals, "channels")),
            format!("Queues: {}", s(&totals, "queues")),
            format!("Consumers: {}", s(&totals, "consumers")),
            format!("Messages: {}", s(&queue_totals, "messages")),
        ];
        if let Some(Value::Array(ls)) = ov.get("listeners") {
            for l in ls {
                lines.push(format!(
                    "Listener: interface {}, port {}, protocol {}",
                    s(l, "ip_address"),
                    s(l, "port"),
                    s(l, "protocol")
                ));
            }
        }
        for l in lines {
            writeln!(out, "{l}")
                .map_err(|e| CtlError::new(EX_SOFTWARE, format!("cannot write output: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]extra").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.json(), json!([1, 2]));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"Object Not Found\",\"reason\":\"Not Found\"}").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.error_text(), "Not Found");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n[]").is_err());
    }

    #[test]
    fn cells_look_like_rabbitmqctl() {
        assert_eq!(cell(Some(&json!("q"))), "q");
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(cell(Some(&json!(false))), "false");
        assert_eq!(cell(None), "");
        assert_eq!(
            cell(Some(&json!(["administrator", "management"]))),
            "[administrator, management]"
        );
        assert_eq!(cell(Some(&json!({}))), "[]");
        assert_eq!(
            cell(Some(
                &json!({"x-max-length": 10, "x-dead-letter-exchange": "dlx"})
            )),
            "[{\"x-dead-letter-exchange\",\"dlx\"},{\"x-max-length\",10}]"
        );
        let b = json!({"source": "", "destination": "q", "destination_type": "queue"});
        assert_eq!(column(&b, "bindings", "source_kind"), json!("exchange"));
        assert_eq!(column(&b, "bindings", "destination_kind"), json!("queue"));
        let u = json!({"name": "bob", "tags": "administrator,monitoring"});
        assert_eq!(column(&u, "users", "user"), json!("bob"));
        assert_eq!(
            column(&u, "users", "tags"),
            json!(["administrator", "monitoring"])
        );
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(encode_segment("a b.c-d_e~"), "a%20b.c-d_e~");
    }

    #[test]
    fn usage_errors_exit_64() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(run(&args(&[]), &mut out, &mut err), EX_USAGE);
        assert_eq!(run(&args(&["frobnicate"]), &mut out, &mut err), EX_USAGE);
        assert!(String::from_utf8_lossy(&err).contains("unknown command 'frobnicate'"));
        assert_eq!(
            run(&args(&["add_user", "bob"]), &mut out, &mut err),
            EX_USAGE
        );
        assert_eq!(
            run(&args(&["--port", "x", "status"]), &mut out, &mut err),
            EX_USAGE
        );
        assert_eq!(run(&args(&["--help"]), &mut out, &mut err), 0);
    }

    #[test]
    fn requests_are_built_whole() {
        let c = Client::new("::1", 15671, "u", "p", Duration::from_secs(1));
        let r = String::from_utf8(c.request_bytes("POST", "/api/reload-certificates", None, &[]))
            .unwrap();
        assert_eq!(
            r,
            "POST /api/reload-certificates HTTP/1.1\r\nHost: [::1]:15671\r\n\
             Authorization: Basic dTpw\r\nAccept: */*\r\nUser-Agent: warren-ctl\r\n\
             Connection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let r = c.request_bytes("PUT", "/api/vhosts/v", Some(b"{}"), &[("X-Reason", "r")]);
        assert!(String::from_utf8(r).unwrap().ends_with(
            "X-Reason: r\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        ));
        let r = String::from_utf8(c.request_bytes("GET", "/api/overview", None, &[])).unwrap();
        assert!(!r.contains("Content-Length"), "{r}");
        assert_eq!(c.at(), "[::1]:15671");
    }

    #[test]
    fn config_file_says_where_the_api_is() {
        let c = MgmtConfig::parse(
            "# comment\nlisteners.tcp.default = 5672\nmanagement.tcp.port = 15673 # http\n\
             management.tcp.ip = 0.0.0.0\n",
        )
        .unwrap();
        assert_eq!(
            c.endpoint(),
            (false, Some("localhost".into()), Some(15673), None)
        );
        let c = MgmtConfig::parse(
            "management.tcp.port = 15672\nmanagement.ssl.port = 15671\n\
             management.ssl.ip = 127.0.0.1\nmanagement.ssl.cacertfile = /etc/warren/ca.pem\n\
             management.ssl.certfile = /etc/warren/server.pem\n",
        )
        .unwrap();
        assert_eq!(
            c.endpoint(),
            (
                true,
                Some("127.0.0.1".into()),
                Some(15671),
                Some("/etc/warren/ca.pem".into())
            )
        );
        assert_eq!(
            MgmtConfig::parse("management.ssl.port = 15671\n")
                .unwrap()
                .endpoint(),
            (true, None, Some(15671), None)
        );
        let e = MgmtConfig::parse("\nmanagement.ssl.port = https\n").unwrap_err();
        assert_eq!(e, "line 2: management.ssl.port = https: not a port number");
    }

    #[test]
    fn https_without_a_ca_is_a_usage_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            run(&args(&["--https", "status"]), &mut out, &mut err),
            EX_USAGE
        );
        let text = String::from_utf8_lossy(&err).into_owned();
        assert!(text.contains("HTTPS needs the CA"), "{text}");
        assert!(text.contains("--tls-ca FILE"), "{text}");
        let mut err = Vec::new();
        assert_eq!(
            run(
                &args(&["--tls-ca", "/nonexistent/ca.pem", "status"]),
                &mut out,
                &mut err
            ),
            EX_USAGE
        );
        let text = String::from_utf8_lossy(&err).into_owned();
        assert!(text.contains("TLS CA file /nonexistent/ca.pem"), "{text}");
    }

    #[test]
    fn unreachable_broker_exits_69() {
        // A port nothing listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "list_vhosts",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        assert_eq!(run(&args, &mut out, &mut err), EX_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&err).contains("cannot reach the management API"));
    }
}
