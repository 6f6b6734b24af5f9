//! The management HTTP API and Prometheus metrics, sans-IO like the core:
//! the server reads socket bytes into an [`HttpConn`], which parses requests
//! (httparse; `Content-Length` and chunked bodies; keep-alive and
//! pipelining; limits on header and body size), hands each to [`api::handle`] with `&mut Core`,
//! and queues the response for the server to write. Served from the broker's
//! one poll loop, so every request sees (and changes) the broker between
//! two AMQP frames, with no locks.

pub mod api;
pub mod definitions;
pub mod json;
pub mod metrics;
pub mod ops;
pub mod stats;
pub mod ui;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::amqp::Core;
pub use stats::Mgmt;

/// Largest request head (request line and headers): 431 beyond it.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body: 413 beyond it.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Most bytes of chunked framing (size lines, extensions, line ends) one
/// body may carry on top of its data: 413 beyond it.
const MAX_CHUNK_OVERHEAD: usize = 1 << 20;
/// Largest input one request may need buffered: its head, its body with
/// chunked framing, and trailers.
const MAX_INPUT: usize = 2 * MAX_HEADER_BYTES + MAX_BODY_BYTES + MAX_CHUNK_OVERHEAD;
/// Pending output above which no further (pipelined) request is handled and
/// the socket is not read until the peer has taken some.
pub const MAX_OUTPUT: usize = 4 << 20;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method (`GET`, `PUT`, …).
    pub method: String,
    /// Path without the query string, still percent-encoded.
    pub path: String,
    /// Query string (after `?`), still encoded.
    pub query: String,
    /// Basic auth credentials, if any.
    pub auth: Option<(String, String)>,
    /// `X-Reason` header (closing connections).
    pub reason: Option<String>,
    /// `X-Requested-With: XMLHttpRequest` (a script, such as the web UI's):
    /// a 401 then comes without the `WWW-Authenticate` challenge, which
    /// would make the browser ask for credentials itself.
    pub scripted: bool,
    /// Body.
    pub body: Vec<u8>,
    /// Peer address.
    pub peer: SocketAddr,
}

impl Request {
    #[cfg(test)]
    /// A request (tests and embedding).
    pub fn new(method: &str, path: &str, body: &[u8], peer: SocketAddr) -> Request {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            auth: None,
            reason: None,
            scripted: false,
            body: body.to_vec(),
            peer,
        }
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (content-length and connection are added).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serialize a response; `head` leaves the body out (HEAD requests).
pub fn write_response(out: &mut Vec<u8>, r: &Response, close: bool, head: bool) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nserver: warren\r\ncontent-length: {}\r\n",
        r.status,
        reason_phrase(r.status),
        r.body.len()
    );
    for (k, v) in &r.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&r.body);
    }
}

fn basic_auth(value: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = crate::broker::auth::base64_decode(cred.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// What the head of a request said about its body and connection.
struct Head {
    method: String,
    target: String,
    auth: Option<(String, String)>,
    reason: Option<String>,
    scripted: bool,
    head_len: usize,
    body: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

/// How a request's body is delimited.
#[derive(Clone, Copy)]
enum BodyFraming {
    /// `Content-Length` bytes (0 without the header).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The outcome of decoding a chunked body.
#[derive(Debug, PartialEq)]
enum Chunked {
    /// Not all of it yet.
    Partial,
    /// Complete: the data's ranges in the input, and the encoded length
    /// (chunks, last chunk and trailers).
    Done {
        ranges: Vec<(usize, usize)>,
        used: usize,
    },
    /// Malformed or over a limit: answer with this status and close.
    Fail(u16, &'static str),
}

/// The next line (without its CRLF) of `buf` from `from`, and where the
/// line after it starts; None if no CRLF yet. A bare LF is not a line end.
fn line_at(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((rest.get(..i)?, from + i + 2))
}

/// Decode a chunked body at the start of `buf` (RFC 9112 section 7.1):
/// chunk extensions and trailer fields are read past and ignored. Only the
/// positions are worked out (nothing copied), so calling it again as more
/// input comes costs a walk over the size lines, not the data.
fn decode_chunked(buf: &[u8]) -> Chunked {
    // A size line longer than this is not one a client sends.
    const MAX_LINE: usize = 4096;
    let mut ranges = Vec::new();
    let mut data = 0usize;
    let mut pos = 0usize;
    loop {
        let Some((line, next)) = line_at(buf, pos) else {
            if buf.len().saturating_sub(pos) > MAX_LINE {
                return Chunked::Fail(400, "bad chunk size line");
            }
            return Chunked::Partial;
        };
        if line.len() > MAX_LINE {
            return Chunked::Fail(400, "bad chunk size line");
        }
        // `size [; ext]`, whitespace tolerated before the extensions.
        let digits = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii_end();
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Chunked::Fail(400, "bad chunk size");
        }
        let size = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| usize::from_str_radix(d, 16).ok());
        let Some(size) = size else {
            return Chunked::Fail(400, "bad chunk size");
        };
        pos = next;
        if size == 0 {
            // Trailer fields, up to an empty line.
            let trailers_from = pos;
            loop {
                match line_at(buf, pos) {
                    Some(([], n)) => {
                        return Chunked::Done { ranges, used: n };
                    }
                    Some((_, n)) => pos = n,
                    None => {
                        if buf.len().saturating_sub(trailers_from) > MAX_HEADER_BYTES {
                            return Chunked::Fail(431, "request trailers too large");
                        }
                        return Chunked::Partial;
                    }
                }
                if pos - trailers_from > MAX_HEADER_BYTES {
                    return Chunked::Fail(431, "request trailers too large");
                }
            }
        }
        // Framing so far: everything read but the data of earlier chunks.
        let overhead = pos.saturating_sub(data);
        data = data.saturating_add(size);
        if data > MAX_BODY_BYTES || overhead > MAX_CHUNK_OVERHEAD {
            return Chunked::Fail(413, "request body too large");
        }
        let end = pos + size;
        match buf.get(end..end + 2) {
            None => return Chunked::Partial,
            Some(b"\r\n") => {}
            Some(_) => return Chunked::Fail(400, "chunk data not followed by CRLF"),
        }
        ranges.push((pos, end));
        pos = end + 2;
    }
}

/// The outcome of parsing the input buffer's head.
enum Parsed {
    /// Not a complete head yet.
    Partial,
    /// A complete head.
    Head(Head),
    /// A malformed or over-limit request: answer with this status and close.
    Fail(u16, &'static str),
}

fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEADER_BYTES {
                return Parsed::Fail(431, "request header too large");
            }
            return Parsed::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Fail(431, "too many headers"),
        Err(_) => return Parsed::Fail(400, "malformed request"),
    };
    if head_len > MAX_HEADER_BYTES {
        return Parsed::Fail(431, "request header too large");
    }
    let version = req.version.unwrap_or(1);
    let mut body_len: Option<usize> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    let mut auth = None;
    let mut reason = None;
    let mut scripted = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            match (n, body_len) {
                (Some(n), None) => body_len = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::Fail(400, "bad content-length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked`, once, as the last (here: only) coding.
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            let codings: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            match codings.as_slice() {
                ["chunked"] if !chunked => chunked = true,
                [others @ .., "chunked"] if !chunked && !others.contains(&"chunked") => {
                    return Parsed::Fail(
                        501,
                        "transfer codings other than chunked are not supported",
                    )
                }
                _ => return Parsed::Fail(400, "bad transfer-encoding"),
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            conn_close |= v.contains("close");
            conn_keep |= v.contains("keep-alive");
        } else if name.eq_ignore_ascii_case("authorization") {
            auth = basic_auth(h.value);
        } else if name.eq_ignore_ascii_case("x-reason") {
            reason = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if name.eq_ignore_ascii_case("x-requested-with") {
            scripted = h.value.eq_ignore_ascii_case(b"XMLHttpRequest");
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let body = match (chunked, body_len) {
        // Both would let a proxy and this server disagree on where the
        // request ends (RFC 9112 section 6.3): refuse.
        (true, Some(_)) => return Parsed::Fail(400, "both transfer-encoding and content-length"),
        (true, None) => BodyFraming::Chunked,
        (false, n) => BodyFraming::Length(n.unwrap_or(0)),
    };
    if let BodyFraming::Length(n) = body {
        if n > MAX_BODY_BYTES {
            return Parsed::Fail(413, "request body too large");
        }
    }
    Parsed::Head(Head {
        method: req.method.unwrap_or("GET").to_string(),
        target: req.path.unwrap_or("/").to_string(),
        auth,
        reason,
        scripted,
        head_len,
        body,
        keep_alive: if version == 0 { conn_keep } else { !conn_close },
        expect_continue,
    })
}

/// One management HTTP connection's protocol state.
#[derive(Debug)]
pub struct HttpConn {
    /// Peer address.
    pub peer: SocketAddr,
    /// Bytes read and not yet parsed.
    pub inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Close once the output is written.
    closing: bool,
    /// `100 Continue` already sent for the request being received.
    continue_sent: bool,
    /// Last time anything was read or written.
    pub last_active: Instant,
    /// A connection to the Prometheus listener: only the metrics paths
    /// are served, without credentials.
    pub metrics_only: bool,
}

impl HttpConn {
    /// A new connection.
    pub fn new(peer: SocketAddr, now: Instant) -> HttpConn {
        HttpConn {
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            closing: false,
            continue_sent: false,
            last_active: now,
            metrics_only: false,
        }
    }

    /// Should the server read more input now?
    pub fn wants_read(&self) -> bool {
        !self.closing && self.pending_output() < MAX_OUTPUT && self.inbuf.len() < MAX_INPUT
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.out.len().saturating_sub(self.out_pos)
    }

    /// The bytes to write next.
    pub fn output(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or(&[])
    }

    /// `n` bytes of output were written.
    pub fn consume(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Don't keep a large response's buffer around.
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            }
        }
    }

    /// Finished: the socket may be closed.
    pub fn is_done(&self) -> bool {
        self.closing && self.pending_output() == 0
    }

    /// Nothing read or written for [`IDLE_TIMEOUT`]: an idle keep-alive
    /// connection, or a peer that does not read its responses.
    pub fn is_idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_active) >= IDLE_TIMEOUT
    }

    fn fail(&mut self, status: u16, reason: &str) {
        let v = serde_json::json!({"error": "bad_request", "reason": reason});
        write_response(&mut self.out, &Response::json(status, &v), true, false);
        self.inbuf.clear();
        self.closing = true;
    }

    /// The body is not all there yet: ask for it if the client waits to be
    /// asked (`Expect: 100-continue`).
    fn await_body(&mut self, expect_continue: bool) {
        if expect_continue && !self.continue_sent {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.continue_sent = true;
        }
    }

    /// Handle every complete request in the input buffer.
    pub fn process(&mut self, core: &mut Core, mgmt: &mut Mgmt, now: Instant) {
        self.last_active = now;
        while !self.closing && self.pending_output() < MAX_OUTPUT && !self.inbuf.is_empty() {
            let head = match parse_head(&self.inbuf) {
                Parsed::Partial => return,
                Parsed::Fail(status, reason) => return self.fail(status, reason),
                Parsed::Head(h) => h,
            };
            let (body, total) = match head.body {
                BodyFraming::Length(n) => {
                    let total = head.head_len + n;
                    if self.inbuf.len() < total {
                        return self.await_body(head.expect_continue);
                    }
                    let body = self.inbuf.get(head.head_len..total).map(<[u8]>::to_vec);
                    (body.unwrap_or_default(), total)
                }
                BodyFraming::Chunked => {
                    let encoded = self.inbuf.get(head.head_len..).unwrap_or_default();
                    match decode_chunked(encoded) {
                        Chunked::Partial => return self.await_body(head.expect_continue),
                        Chunked::Fail(status, reason) => return self.fail(status, reason),
                        Chunked::Done { ranges, used } => {
                            let mut body = Vec::new();
                            for (from, to) in ranges {
                                body.extend_from_slice(encoded.get(from..to).unwrap_or_default());
                            }
                            (body, head.head_len + used)
                        }
                    }
                }
            };
            self.continue_sent = false;
            self.inbuf.drain(..total.min(self.inbuf.len()));
            let (path, query) = head
                .target
                .split_once('?')
                .unwrap_or((head.target.as_str(), ""));
            let is_head = head.method == "HEAD";
            let req = Request {
                method: if is_head { "GET".into() } else { head.method },
                path: path.to_string(),
                query: query.to_string(),
                auth: head.auth,
                reason: head.reason,
                scripted: head.scripted,
                body,
                peer: self.peer,
            };
            let changes = req.method != "GET";
            let mut resp = match self.metrics_only {
                true => metrics::handle(&req, core, mgmt, now),
                false => api::handle(&req, core, mgmt, now),
            };
            // A change is answered only once it is durable.
            if changes && resp.status < 300 {
                if let Err(e) = core.group_commit(now, true) {
                    resp = Response::json(
                        500,
                        &serde_json::json!({
                            "error": "internal_error",
                            "reason": format!("the change could not be made durable: {e}"),
                        }),
                    );
                }
            }
            let close = !head.keep_alive;
            write_response(&mut self.out, &resp, close, is_head);
            if close {
                self.closing = true;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;

    fn setup() -> (Core, Mgmt, HttpConn) {
        let core = Core::new(crate::Config {
            data_dir: None,
            ..crate::Config::default()
        });
        let mgmt = Mgmt::new(Vec::new(), None);
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        (core, mgmt, HttpConn::new(peer, Instant::now()))
    }

    fn out(h: &mut HttpConn) -> String {
        let s = String::from_utf8_lossy(h.output()).into_owned();
        let n = h.output().len();
        h.consume(n);
        s
    }

    #[test]
    fn parses_pipelined_requests_and_partial_input() {
        let (mut core, mut mgmt, mut h) = setup();
        let req = "GET /api/whoami HTTP/1.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n";
        let two = format!("{req}{req}");
        let (a, b) = two.split_at(30);
        h.inbuf.extend_from_slice(a.as_bytes());
        h.process(&mut core, &mut mgmt, Instant::now());
        assert_eq!(out(&mut h), "");
        h.inbuf.extend_from_slice(b.as_bytes());
        h.process(&mut core, &mut mgmt, Instant::now());
        let s = out(&mut h);
        assert_eq!(s.matches("HTTP/1.1 200 OK").count(), 2, "{s}");
        assert!(s.contains("\"name\":\"guest\""));
        assert!(!h.is_done());
    }

    #[test]
    fn body_with_expect_continue() {
        let (mut core, mut mgmt, mut h) = setup();
        let body = r#"{"durable":false}"#;
        let head = format!(
            "PUT /api/queues/%2F/q1 HTTP/1.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        h.inbuf.extend_from_slice(head.as_bytes());
        h.process(&mut core, &mut mgmt, Instant::now());
        assert_eq!(out(&mut h), "HTTP/1.1 100 Continue\r\n\r\n");
        h.inbuf.extend_from_slice(body.as_bytes());
        h.process(&mut core, &mut mgmt, Instant::now());
        let s = out(&mut h);
        assert!(s.starts_with("HTTP/1.1 201 Created"), "{s}");
        assert!(s.contains("connection: close"));
        assert!(h.is_done());
        assert!(core
            .engine
            .broker
            .vhost(b"/")
            .unwrap()
            .queues
            .contains_key(&b"q1"[..]));
    }

    #[test]
    fn limits() {
        let (mut core, mut mgmt, mut h) = setup();
        h.inbuf.extend_from_slice(b"GET / HTTP/1.1\r\nX: ");
        h.inbuf
            .extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 10));
        h.process(&mut core, &mut mgmt, Instant::now());
        assert!(out(&mut h).starts_with("HTTP/1.1 431"));
        assert!(h.is_done());

        let (mut core, mut mgmt, mut h) = setup();
        let r = format!(
            "POST /api/definitions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        h.inbuf.extend_from_slice(r.as_bytes());
        h.process(&mut core, &mut mgmt, Instant::now());
        assert!(out(&mut h).starts_with("HTTP/1.1 413"));

        let (mut core, mut mgmt, mut h) = setup();
        h.inbuf.extend_from_slice(b"\x16\x03\x01garbage\r\n\r\n");
        h.process(&mut core, &mut mgmt, Instant::now());
        assert!(out(&mut h).starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn chunked_bodies() {
        // Two chunks (one with an extension), a trailer; then a second,
        // pipelined request on the same connection, fed a byte at a time.
        let (mut core, mut mgmt, mut h) = setup();
        let req = "PUT /api/queues/%2F/{q} HTTP/1.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
                   Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
                   a;name=value\r\n{\"durable\"\r\n7 \r\n:false}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let two = format!("{}{}", req.replace("{q}", "c1"), req.replace("{q}", "c2"));
        for b in two.as_bytes() {
            h.inbuf.push(*b);
            h.process(&mut core, &mut mgmt, Instant::now());
        }
        let s = out(&mut h);
        assert_eq!(s.matches("HTTP/1.1 201 Created").count(), 2, "{s}");
        assert_eq!(s.matches("100 Continue").count(), 2, "{s}");
        assert!(h.inbuf.is_empty() && !h.is_done());
        let vhost = core.engine.broker.vhost(b"/").unwrap();
        assert!(vhost.queues.contains_key(&b"c1"[..]) && vhost.queues.contains_key(&b"c2"[..]));

        // The decoder on its own.
        let done = |ranges: Vec<(usize, usize)>, used| Chunked::Done { ranges, used };
        assert_eq!(decode_chunked(b"0\r\n\r\n"), done(vec![], 5));
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n0\r\n\r\nGET"),
            done(vec![(3, 6)], 13)
        );
        assert_eq!(
            decode_chunked(b"A\r\n0123456789\r\n0;x\r\nT: v\r\n\r\n"),
            done(vec![(3, 13)], 28)
        );
        for partial in [
            &b""[..],
            b"3",
            b"3\r\nab",
            b"3\r\nabc\r",
            b"3\r\nabc\r\n0\r\n",
            b"0\r\nT: v\r\n",
        ] {
            assert_eq!(decode_chunked(partial), Chunked::Partial, "{partial:?}");
        }
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"+3\r\nabc\r\n",
            b"3\r\nabcd\r\n",
            b"123456789\r\n",
        ] {
            assert!(
                matches!(decode_chunked(bad), Chunked::Fail(400, _)),
                "{bad:?}"
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'e', 5000));
        assert!(matches!(decode_chunked(&long), Chunked::Fail(400, _)));

        // Over the body limit: 413 as soon as a size line says so, before
        // the data comes; bad syntax: 400; both framings: 400.
        for (body, status) in [
            (format!("{:x}\r\n", MAX_BODY_BYTES + 1), "413"),
            (format!("{:x}\r\n", MAX_BODY_BYTES), "HTTP/1.1 100"),
            ("zz\r\n".to_string(), "400"),
        ] {
            let (mut core, mut mgmt, mut h) = setup();
            let r = format!(
                "POST /api/definitions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
                 Expect: 100-continue\r\n\r\n{body}"
            );
            h.inbuf.extend_from_slice(r.as_bytes());
            h.process(&mut core, &mut mgmt, Instant::now());
            let s = out(&mut h);
            assert!(
                s.starts_with(&format!("HTTP/1.1 {status}")) || s.starts_with(status),
                "{s}"
            );
        }
        for head in [
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: identity",
        ] {
            let (mut core, mut mgmt, mut h) = setup();
            h.inbuf.extend_from_slice(
                format!("POST /api/definitions HTTP/1.1\r\n{head}\r\n\r\n").as_bytes(),
            );
            h.process(&mut core, &mut mgmt, Instant::now());
            assert!(out(&mut h).starts_with("HTTP/1.1 400"), "{head}");
            assert!(h.is_done());
        }
        let (mut core, mut mgmt, mut h) = setup();
        h.inbuf.extend_from_slice(
            b"POST /api/definitions HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        h.process(&mut core, &mut mgmt, Instant::now());
        assert!(out(&mut h).starts_with("HTTP/1.1 501"));
    }

    #[test]
    fn http10_closes_and_head_has_no_body() {
        let (mut core, mut mgmt, mut h) = setup();
        h.inbuf.extend_from_slice(b"HEAD /metrics HTTP/1.0\r\n\r\n");
        h.process(&mut core, &mut mgmt, Instant::now());
        let s = out(&mut h);
        assert!(s.starts_with("HTTP/1.1 200 OK"), "{s}");
        assert!(s.ends_with("\r\n\r\n"), "{s}");
        assert!(h.is_done());
    }
}
