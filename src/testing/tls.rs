//! Fuzz entries for TLS: the certificate subject reader
//! ([`fuzz_x509`]), and AMQP over a TLS session ([`fuzz_tls`]): a rustls
//! client, a [`TlsConn`] as the server loop drives it, and the core behind
//! it, all in memory, with the client's records mutated on their way.

use std::io::{self, IoSlice, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::Pair;
use crate::codec::frame::{write_method, Frame, PROTOCOL_HEADER};
use crate::codec::*;
use crate::config::Config;
use crate::tls::x509;
use crate::tls::{TlsConn, TlsRead};

/// Fuzz entry: arbitrary bytes as a DER certificate. Reading the subject
/// may fail but never panics; a subject read gives an ASCII DN that names
/// each CN the CN user name holds.
pub fn fuzz_x509(data: &[u8]) {
    let Ok(subject) = x509::subject(data) else {
        return;
    };
    let dn = subject.distinguished_name();
    assert!(dn.is_ascii(), "{dn:?}");
    if let Some(cn) = subject.common_name() {
        assert!(dn.starts_with("CN=") || dn.contains(",CN=") || dn.contains("+CN="));
        assert!(!cn.contains('\0') || dn.contains("\\00"));
    }
}

// ---------------------------------------------------------------------------
// Certificates and configurations, made once per process

/// PKCS#8 v1 of an Ed25519 key, up to its 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: &[u8] = &[
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// 1.3.101.112, Ed25519.
const ED25519_OID: &[u8] = &[0x2b, 0x65, 0x70];
const FUZZ_CN: &str = "warren fuzz";

fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![tag];
    let len = body.len();
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x100 => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend(body);
    out
}

/// A fresh Ed25519 key (never stored) and a self-signed certificate for it
/// with subject CN=warren fuzz.
fn key_and_cert(provider: &CryptoProvider) -> (PrivateKeyDer<'static>, CertificateDer<'static>) {
    let mut seed = [0u8; 32];
    provider
        .secure_random
        .fill(&mut seed)
        .expect("random bytes");
    let key = PrivateKeyDer::Pkcs8([ED25519_PKCS8_PREFIX, &seed].concat().into());
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .expect("an Ed25519 key");
    let spki = signing.public_key().expect("its public key");
    let alg = tlv(0x30, &[&tlv(0x06, &[ED25519_OID])]);
    let name = tlv(
        0x31,
        &[&tlv(
            0x30,
            &[
                &tlv(0x06, &[&[0x55, 0x04, 0x03]]),
                &tlv(0x0c, &[FUZZ_CN.as_bytes()]),
            ],
        )],
    );
    let name = tlv(0x30, &[&name]);
    let validity = tlv(
        0x30,
        &[
            &tlv(0x17, &[b"250101000000Z"]),
            &tlv(0x18, &[b"99991231235959Z"]),
        ],
    );
    let tbs = tlv(
        0x30,
        &[
            &tlv(0xa0, &[&tlv(0x02, &[&[2]])]),
            &tlv(0x02, &[&[0x01]]),
            &alg,
            &name,
            &validity,
            &name,
            &spki,
        ],
    );
    let signer = signing
        .choose_scheme(&[SignatureScheme::ED25519])
        .expect("an Ed25519 signer");
    let signature = signer.sign(&tbs).expect("a signature");
    let cert = tlv(0x30, &[&tbs, &alg, &tlv(0x03, &[&[0], &signature])]);
    (key, CertificateDer::from(cert))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side as `tls::server_config` makes it (no client
/// certificates), from a certificate made at start-up.
fn server_config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let (key, cert) = key_and_cert(&provider);
            // The certificate reader agrees with what was written.
            let subject = x509::subject(&cert).expect("the fuzz certificate's subject");
            assert_eq!(subject.common_name().as_deref(), Some(FUZZ_CN));
            let mut config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("the fuzz certificate");
            config.alpn_protocols.clear();
            Arc::new(config)
        })
        .clone()
}

/// A client speaking TLS 1.3, or 1.2; no resumption, so that an input does
/// the same whatever ran before it.
fn client_config(tls12: bool) -> Arc<ClientConfig> {
    static CONFIGS: OnceLock<[Arc<ClientConfig>; 2]> = OnceLock::new();
    let [v13, v12] = CONFIGS.get_or_init(|| {
        [&rustls::version::TLS13, &rustls::version::TLS12].map(|version| {
            let provider = provider();
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .expect("protocol version")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::tls::client::NoVerify(provider)))
                .with_no_client_auth();
            config.resumption = Resumption::disabled();
            Arc::new(config)
        })
    });
    if tls12 { v12 } else { v13 }.clone()
}

// ---------------------------------------------------------------------------
// The session

/// Fuzz entry: AMQP over TLS with the client's records mutated. The first
/// byte: bit 0 TLS 1.2 (else 1.3); bit 1 no clean handshake first (the
/// mutations can hit it). Then operations, a byte each (low 4 bits what,
/// high 4 bits an argument), some with more bytes:
///
/// - 0: the client sends `n` (the next byte) bytes of plaintext that follow;
/// - 1: the client sends a canned piece of AMQP (the argument picks it:
///   the protocol header, start-ok, tune-ok, open, channel.open, a
///   queue.declare, a publish, a consume, an ack, a heartbeat, close);
/// - 2: flip bits (mask: a byte) at a position (two bytes) of the
///   ciphertext not yet delivered; 3: cut it (to a length of two bytes);
/// - 4: replay a record the client wrote (the argument picks it);
/// - 5: drop the first whole record waiting;
/// - 6: insert `n` bytes that follow into the waiting ciphertext;
/// - 7: the client sends close_notify;
/// - 8: time passes (the argument × 250 ms);
/// - 9: the end of the stream;
/// - others: deliver what waits, in reads of (argument + 1) × 97 bytes.
///
/// What the server writes goes to the client at each delivery; the client
/// must take it (or have been sent an alert). No panic, and the core's
/// bookkeeping holds at the end.
pub fn fuzz_tls(data: &[u8]) {
    let _ = run(data);
}

/// [`fuzz_tls`]'s session; what the client received.
fn run(data: &[u8]) -> Session {
    let mut input = data.iter().copied();
    let flags = input.next().unwrap_or(0);
    let mut s = Session::new(flags & 1 != 0);
    if flags & 2 == 0 {
        s.handshake();
    }
    while let Some(op) = input.next() {
        if s.done {
            break;
        }
        let arg = usize::from(op >> 4);
        let what = op & 0x0f;
        s.tampered |= (2..=6).contains(&what);
        match what {
            0 => {
                let n = usize::from(input.next().unwrap_or(0));
                let bytes: Vec<u8> = input.by_ref().take(n).collect();
                s.client_send(&bytes);
            }
            1 => s.client_send(&canned(arg)),
            2 => {
                let at = u16_from(&mut input);
                let mask = input.next().unwrap_or(1);
                let len = s.pending.len();
                if let Some(b) = s.pending.get_mut(at % len.max(1)) {
                    *b ^= mask;
                }
            }
            3 => {
                let to = u16_from(&mut input);
                let len = s.pending.len();
                s.pending.truncate(to % (len + 1));
            }
            4 => {
                if let Some(r) = s.sent.get(arg % s.sent.len().max(1)) {
                    s.pending.extend_from_slice(r);
                }
            }
            5 => {
                let first = record_len(&s.pending).unwrap_or(s.pending.len());
                s.pending.drain(..first.min(s.pending.len()));
            }
            6 => {
                let n = usize::from(input.next().unwrap_or(0));
                s.pending.extend(input.by_ref().take(n));
            }
            7 => {
                s.client.send_close_notify();
                s.client_flush();
            }
            8 => {
                s.pair.advance(Duration::from_millis(250 * arg as u64));
                s.server_flush();
            }
            9 => s.end_of_stream(),
            _ => s.deliver((arg + 1) * 97),
        }
    }
    s.deliver(16 * 1024);
    s.pair.core.peer_closed(s.pair.id);
    if let Err(e) = s.pair.core.check_invariants() {
        panic!("invariant broken: {e}");
    }
    s
}

fn u16_from(input: &mut impl Iterator<Item = u8>) -> usize {
    let hi = input.next().unwrap_or(0);
    let lo = input.next().unwrap_or(0);
    usize::from(u16::from_be_bytes([hi, lo]))
}

/// The length of the first TLS record in `b`, if its header is all there.
fn record_len(b: &[u8]) -> Option<usize> {
    match b {
        [_, _, _, hi, lo, ..] => Some(5 + usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// AMQP a client says, by number.
fn canned(which: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let method = |out: &mut BytesMut, ch: u16, m: Method| write_method(out, ch, &m);
    match which % 11 {
        0 => return PROTOCOL_HEADER.to_vec(),
        1 => method(
            &mut out,
            0,
            ConnectionStartOk {
                client_properties: FieldTable::new(),
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: Bytes::from_static(b"en_US"),
            }
            .into(),
        ),
        2 => method(
            &mut out,
            0,
            ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 0,
            }
            .into(),
        ),
        3 => method(
            &mut out,
            0,
            ConnectionOpen {
                virtual_host: Bytes::from_static(b"/"),
                ..Default::default()
            }
            .into(),
        ),
        4 => method(&mut out, 1, ChannelOpen::default().into()),
        5 => method(
            &mut out,
            1,
            QueueDeclare {
                queue: Bytes::from_static(b"q"),
                ..Default::default()
            }
            .into(),
        ),
        6 => {
            method(
                &mut out,
                1,
                BasicPublish {
                    routing_key: Bytes::from_static(b"q"),
                    ..Default::default()
                }
                .into(),
            );
            Frame::Header(
                1,
                Box::new(ContentHeader {
                    class_id: 60,
                    body_size: 5,
                    properties: BasicProperties::default(),
                }),
            )
            .encode(&mut out);
            Frame::Body(1, Bytes::from_static(b"hello")).encode(&mut out);
        }
        7 => method(
            &mut out,
            1,
            BasicConsume {
                queue: Bytes::from_static(b"q"),
                ..Default::default()
            }
            .into(),
        ),
        8 => method(
            &mut out,
            1,
            BasicAck {
                delivery_tag: 1,
                multiple: true,
            }
            .into(),
        ),
        9 => Frame::Heartbeat(0).encode(&mut out),
        _ => method(&mut out, 0, ConnectionClose::default().into()),
    }
    out.to_vec()
}

/// Reads at most `max` bytes at a time from a slice.
struct Chunks<'a> {
    data: &'a [u8],
    max: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(self.max).min(buf.len());
        let (now, rest) = self.data.split_at(n);
        buf.get_mut(..n)
            .expect("n is within buf")
            .copy_from_slice(now);
        self.data = rest;
        Ok(n)
    }
}

struct Session {
    client: ClientConnection,
    /// The client has failed (an alert from the server, or our own mutation
    /// seen in what came back): it takes nothing more.
    client_failed: bool,
    server: TlsConn,
    pair: Pair,
    /// Ciphertext from the client not yet delivered (the mutations' target).
    pending: Vec<u8>,
    /// Something was done to the client's records: its stream is no longer
    /// what it wrote.
    tampered: bool,
    /// The records the client wrote, to replay (at most 64).
    sent: Vec<Vec<u8>>,
    /// Plaintext from the core that the session has not taken yet.
    backlog: Vec<u8>,
    /// The plaintext the client got (its first 64 KiB).
    received: Vec<u8>,
    scratch: Vec<u8>,
    /// The server closed the connection.
    done: bool,
}

impl Session {
    fn new(tls12: bool) -> Session {
        let name = ServerName::try_from("warren.fuzz").expect("a server name");
        Session {
            client: ClientConnection::new(client_config(tls12), name).expect("a client"),
            client_failed: false,
            server: TlsConn::new(server_config()).expect("a server session"),
            pair: Pair::new(Config::default()),
            pending: Vec::new(),
            tampered: false,
            sent: Vec::new(),
            backlog: Vec::new(),
            received: Vec::new(),
            scratch: vec![0; 64 * 1024],
            done: false,
        }
    }

    /// Handshake with nothing mutated.
    fn handshake(&mut self) {
        for _ in 0..8 {
            if !self.client.is_handshaking() || self.done || self.client_failed {
                break;
            }
            self.client_flush();
            self.deliver(16 * 1024);
        }
    }

    /// The client's records into `pending` (and each into `sent`).
    fn client_flush(&mut self) {
        let mut out = Vec::new();
        while self.client.wants_write() {
            if self.client.write_tls(&mut out).is_err() {
                break;
            }
        }
        let mut rest = out.as_slice();
        while let Some(len) = record_len(rest) {
            let Some((record, tail)) = rest.split_at_checked(len) else {
                break;
            };
            if self.sent.len() < 64 {
                self.sent.push(record.to_vec());
            }
            rest = tail;
        }
        self.pending.extend(out);
    }

    fn client_send(&mut self, plain: &[u8]) {
        if self.client_failed {
            return;
        }
        // Before the handshake is done rustls buffers it; a full buffer
        // takes less, which is fine.
        let _ = io::Write::write(&mut self.client.writer(), plain);
        self.client_flush();
    }

    /// Feed what waits to the server as the server loop reads a socket,
    /// `chunk` bytes a read; then flush the core's output back.
    fn deliver(&mut self, chunk: usize) {
        while !self.pending.is_empty() && !self.done {
            let (core, id) = (&mut self.pair.core, self.pair.id);
            if !core.wants_read(id) {
                break;
            }
            let mut sock = Chunks {
                data: &self.pending,
                max: chunk,
            };
            let res = self.server.read_from(&mut sock, &mut self.scratch, |data| {
                if let Some(buf) = core.input_buffer(id) {
                    buf.extend_from_slice(data);
                }
            });
            let now = self.pair.now;
            match res {
                Ok(TlsRead::Read(n)) => {
                    self.pending.drain(..n.min(self.pending.len()));
                    self.pair.core.process(id, now);
                }
                Ok(TlsRead::Closed) => {
                    self.pair.core.process(id, now);
                    self.done = true;
                }
                Err(_) => {
                    // The server sends its alert and closes.
                    self.done = true;
                }
            }
            self.pair.core.end_turn(now);
            self.server_flush();
        }
    }

    /// The core's output into the session, its records to the client.
    fn server_flush(&mut self) {
        let out = self.pair.core.take_output(self.pair.id);
        self.backlog.extend(out);
        if !self.done {
            while !self.backlog.is_empty() {
                match self.server.write_plain(&[IoSlice::new(&self.backlog)]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.backlog.drain(..n.min(self.backlog.len()));
                    }
                }
            }
        }
        let mut records = Vec::new();
        while self.server.wants_write() {
            match self.server.write_to(&mut records) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.client_take(&records);
    }

    /// The client reads the server's records. Nothing mutates them: while
    /// the client's own records reach the server as written, any failure
    /// but an alert the server sent is the server's fault.
    fn client_take(&mut self, mut records: &[u8]) {
        if self.tampered && !records.is_empty() {
            // The server answered records we changed: the client's view of
            // the session is no longer the server's, and rustls' client
            // can trip its own assertions on what follows (a second fatal
            // alert). Only the server is under test: the client stops.
            self.client_failed = true;
            return;
        }
        while !records.is_empty() && !self.client_failed {
            match self.client.read_tls(&mut records) {
                Ok(0) | Err(_) => {
                    // Full (it should not be: its plaintext is taken).
                    self.client_failed = true;
                    break;
                }
                Ok(_) => {}
            }
            match self.client.process_new_packets() {
                Ok(_) => {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = self.client.reader().read(&mut buf) {
                        let room = (64 * 1024usize).saturating_sub(self.received.len());
                        self.received
                            .extend_from_slice(buf.get(..n.min(room)).unwrap_or(&[]));
                    }
                }
                Err(rustls::Error::AlertReceived(_)) => self.client_failed = true,
                // The server answered records we changed (a ClientHello,
                // say): the client may well disagree.
                Err(_) if self.tampered => self.client_failed = true,
                Err(e) => panic!("the client cannot read the server's records: {e}"),
            }
            // Handshake replies, a key update or an alert of its own.
            self.client_flush();
        }
    }

    /// The peer's end of the stream.
    fn end_of_stream(&mut self) {
        let mut eof = Chunks { data: &[], max: 1 };
        let (core, id) = (&mut self.pair.core, self.pair.id);
        if let Ok(TlsRead::Closed) = self.server.read_from(&mut eof, &mut self.scratch, |data| {
            if let Some(buf) = core.input_buffer(id) {
                buf.extend_from_slice(data);
            }
        }) {
            self.pair.core.process(id, self.pair.now);
        }
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::parse_frame;

    /// A clean session: header, handshake, a queue, a publish, a consume,
    /// close, close_notify; delivering in reads of 16 × 97 bytes.
    const CLEAN: &[u8] = &[
        0x01, 0xfa, 0x11, 0xfa, 0x21, 0x31, 0x41, 0xfa, 0x51, 0x61, 0x71, 0xfa, 0x81, 0x91, 0x18,
        0xfa, 0xa1, 0xfa, 0x07, 0xfa,
    ];

    fn methods(plain: &[u8]) -> Vec<String> {
        let mut buf = BytesMut::from(plain);
        let mut out = Vec::new();
        while let Ok(Some(f)) = parse_frame(&mut buf, 0) {
            if let Frame::Method(_, m) = f {
                out.push(m.name().to_string());
            }
        }
        out
    }

    #[test]
    fn a_clean_session_reaches_the_broker_over_tls_1_3_and_1_2() {
        for flags in [0u8, 1] {
            let s = run(&[&[flags][..], CLEAN].concat());
            assert!(!s.tampered && !s.client_failed);
            assert_eq!(
                methods(&s.received),
                [
                    "connection.start",
                    "connection.tune",
                    "connection.open-ok",
                    "channel.open-ok",
                    "queue.declare-ok",
                    "basic.consume-ok",
                    "basic.deliver",
                    "connection.close-ok",
                ],
                "flags {flags}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_session_before_the_core_sees_it() {
        // the queue.declare record damaged: the server's alert, and no
        // declare-ok
        let mut input = vec![0, 0x01, 0xfa, 0x11, 0xfa, 0x21, 0x31, 0x41, 0xfa, 0x51];
        input.extend([0x02, 0x00, 0x09, 0x40, 0xfa, 0x71, 0xfa]);
        let s = run(&input);
        assert!(s.done && s.client_failed);
        assert_eq!(
            methods(&s.received),
            [
                "connection.start",
                "connection.tune",
                "connection.open-ok",
                "channel.open-ok"
            ]
        );
    }

    #[test]
    fn a_replayed_record_ends_the_session() {
        // a record the client sent before (its sixth: TLS 1.3's
        // ClientHello, change_cipher_spec and Finished, then the header,
        // start-ok, tune-ok) once more after the queue.declare
        let input = [
            0, 0x01, 0xfa, 0x11, 0xfa, 0x21, 0x31, 0x41, 0xfa, 0x51, 0x54, 0xfa, 0x71, 0xfa,
        ];
        let s = run(&input);
        assert!(s.done && s.client_failed);
        assert!(!methods(&s.received).contains(&"basic.consume-ok".to_string()));
    }
}
