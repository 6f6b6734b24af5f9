//! Every method of AMQP 0-9-1 as RabbitMQ speaks it (classes connection,
//! channel, access, exchange, queue, basic, confirm, tx, with RabbitMQ's
//! extensions), as typed values with decode and encode.
//!
//! Each method is declared once in the `methods!` table below, transcribed by
//! hand from `amqp-rabbitmq-0.9.1.json`: name, (class id, method id), and
//! arguments in wire order with their spec types. The macro expands that into
//! a struct per method, the `Method` enum, and both directions of the codec.
//! Consecutive `bit` arguments share octets, first bit in the lowest bit
//! (spec 4.2.5.2); any other argument closes the current bit octet.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Error, ReplyCode, Result};
use super::reader::Reader;
use super::table::FieldTable;
use super::writer::{put_longstr, put_shortstr};

/// Reads packed bit arguments.
#[derive(Default)]
struct BitReader {
    octet: u8,
    next: u8,
}

impl BitReader {
    fn new() -> BitReader {
        BitReader { octet: 0, next: 8 }
    }
    fn bit(&mut self, r: &mut Reader<'_>) -> Result<bool> {
        if self.next >= 8 {
            self.octet = r.u8()?;
            self.next = 0;
        }
        let v = self.octet & (1 << self.next) != 0;
        self.next += 1;
        Ok(v)
    }
    fn reset(&mut self) {
        self.next = 8;
    }
}

/// Packs bit arguments; flushed before any non-bit argument and at the end.
struct BitWriter {
    octet: u8,
    used: u8,
}

impl BitWriter {
    fn new() -> BitWriter {
        BitWriter { octet: 0, used: 0 }
    }
    fn bit(&mut self, out: &mut BytesMut, v: bool) {
        if self.used == 8 {
            self.flush(out);
        }
        self.octet |= (v as u8) << self.used;
        self.used += 1;
    }
    fn flush(&mut self, out: &mut BytesMut) {
        if self.used > 0 {
            out.put_u8(self.octet);
            self.octet = 0;
            self.used = 0;
        }
    }
}

macro_rules! amqp_type {
    (octet) => {
        u8
    };
    (short) => {
        u16
    };
    (long) => {
        u32
    };
    (longlong) => {
        u64
    };
    (timestamp) => {
        u64
    };
    (bit) => {
        bool
    };
    (shortstr) => {
        Bytes
    };
    (longstr) => {
        Bytes
    };
    (table) => {
        FieldTable
    };
}

macro_rules! decode_arg {
    (bit, $r:ident, $b:ident, $u:ident) => {
        $b.bit(&mut $r)?
    };
    (octet, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.u8()?
    }};
    (short, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.u16()?
    }};
    (long, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.u32()?
    }};
    (longlong, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.u64()?
    }};
    (timestamp, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.u64()?
    }};
    (shortstr, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        let v = $r.shortstr()?;
        if $u && std::str::from_utf8(&v).is_err() {
            return Err(Error::frame("Malformed UTF-8 in shortstr"));
        }
        v
    }};
    (longstr, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        $r.longstr()?
    }};
    (table, $r:ident, $b:ident, $u:ident) => {{
        $b.reset();
        FieldTable::decode(&mut $r)?
    }};
}

macro_rules! encode_arg {
    (bit, $v:expr, $o:ident, $b:ident) => {
        $b.bit($o, $v)
    };
    (octet, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $o.put_u8($v)
    }};
    (short, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $o.put_u16($v)
    }};
    (long, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $o.put_u32($v)
    }};
    (longlong, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $o.put_u64($v)
    }};
    (timestamp, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $o.put_u64($v)
    }};
    (shortstr, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        put_shortstr($o, &$v)
    }};
    (longstr, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        put_longstr($o, &$v)
    }};
    (table, $v:expr, $o:ident, $b:ident) => {{
        $b.flush($o);
        $v.encode($o)
    }};
}

macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $name:ident = ($class:literal, $method:literal, $wire:literal, content: $content:literal)
            { $( $field:ident : $kind:ident ),* $(,)? }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $name {
                $( #[doc = concat!("`", stringify!($field), "` (", stringify!($kind), ")")]
                   pub $field: amqp_type!($kind), )*
            }

            impl $name {
                /// Class id.
                pub const CLASS_ID: u16 = $class;
                /// Method id.
                pub const METHOD_ID: u16 = $method;

                /// `utf8`: shortstr arguments must be valid UTF-8.
                #[allow(unused_mut, unused_variables)]
                fn decode_args(mut r: Reader<'_>, utf8: bool) -> Result<$name> {
                    let mut bits = BitReader::new();
                    let m = $name { $( $field: decode_arg!($kind, r, bits, utf8), )* };
                    if r.remaining() != 0 {
                        return Err(Error::syntax(concat!("trailing bytes after ", $wire, " arguments")));
                    }
                    Ok(m)
                }

                #[allow(unused_variables)]
                fn encode_args(&self, out: &mut BytesMut) {
                    let mut bits = BitWriter::new();
                    $( encode_arg!($kind, self.$field.clone(), out, bits); )*
                    bits.flush(out);
                }
            }

            impl From<$name> for Method {
                fn from(m: $name) -> Method {
                    Method::$name(m)
                }
            }
        )*

        /// Any AMQP 0-9-1 method.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Method {
            $( $(#[$doc])* $name($name), )*
        }

        impl Method {
            /// (class id, method id).
            pub fn ids(&self) -> (u16, u16) {
                match self { $( Method::$name(_) => ($class, $method), )* }
            }

            /// The spec name, e.g. `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$name(_) => $wire, )* }
            }

            /// True for methods followed by a content header and body.
            pub fn has_content(&self) -> bool {
                match self { $( Method::$name(_) => $content, )* }
            }

            /// Decode a method frame payload: class id, method id, arguments.
            ///
            /// Unknown class or method: 540 NOT_IMPLEMENTED. Truncated or
            /// trailing arguments, bad tables: 502 SYNTAX_ERROR. Both carry
            /// the class and method ids read. Strings are taken as bytes
            /// (a client must read whatever a broker sends).
            pub fn decode(payload: &Bytes) -> Result<Method> {
                Method::decode_with(payload, false)
            }

            /// Decode a method a client sent, as RabbitMQ does: like
            /// [`Method::decode`], and a shortstr argument that is not
            /// UTF-8 is 501 FRAME_ERROR "Malformed UTF-8 in shortstr", with
            /// no class and method — except in basic.publish, whose
            /// exchange and routing key RabbitMQ passes through unchecked.
            pub fn decode_from_client(payload: &Bytes) -> Result<Method> {
                Method::decode_with(payload, true)
            }

            fn decode_with(payload: &Bytes, check_utf8: bool) -> Result<Method> {
                let mut r = Reader::new(payload);
                let class = r.u16()?;
                let method = r.u16()?;
                let utf8 = check_utf8 && (class, method) != (60, 40);
                let res = match (class, method) {
                    $( ($class, $method) => $name::decode_args(r, utf8).map(Method::$name), )*
                    _ => Err(Error::new(
                        ReplyCode::NOT_IMPLEMENTED,
                        format!("unknown method: class {class}, method {method}"),
                    )),
                };
                res.map_err(|e| {
                    if e.code == ReplyCode::FRAME_ERROR {
                        e
                    } else {
                        e.with_method(class, method)
                    }
                })
            }

            /// Encode class id, method id and arguments (the method frame payload).
            pub fn encode(&self, out: &mut BytesMut) {
                let (c, m) = self.ids();
                out.put_u16(c);
                out.put_u16(m);
                match self { $( Method::$name(x) => x.encode_args(out), )* }
            }

            /// One default-valued instance of every method (for tests and fuzz corpora).
            pub fn all_defaults() -> Vec<Method> {
                vec![ $( Method::$name($name::default()), )* ]
            }
        }
    };
}

methods! {
    /// connection.start (server → client).
    ConnectionStart = (10, 10, "connection.start", content: false) {
        version_major: octet, version_minor: octet, server_properties: table,
        mechanisms: longstr, locales: longstr,
    }
    /// connection.start-ok.
    ConnectionStartOk = (10, 11, "connection.start-ok", content: false) {
        client_properties: table, mechanism: shortstr, response: longstr, locale: shortstr,
    }
    /// connection.secure.
    ConnectionSecure = (10, 20, "connection.secure", content: false) { challenge: longstr }
    /// connection.secure-ok.
    ConnectionSecureOk = (10, 21, "connection.secure-ok", content: false) { response: longstr }
    /// connection.tune.
    ConnectionTune = (10, 30, "connection.tune", content: false) {
        channel_max: short, frame_max: long, heartbeat: short,
    }
    /// connection.tune-ok.
    ConnectionTuneOk = (10, 31, "connection.tune-ok", content: false) {
        channel_max: short, frame_max: long, heartbeat: short,
    }
    /// connection.open.
    ConnectionOpen = (10, 40, "connection.open", content: false) {
        virtual_host: shortstr, capabilities: shortstr, insist: bit,
    }
    /// connection.open-ok.
    ConnectionOpenOk = (10, 41, "connection.open-ok", content: false) { known_hosts: shortstr }
    /// connection.close.
    ConnectionClose = (10, 50, "connection.close", content: false) {
        reply_code: short, reply_text: shortstr, class_id: short, method_id: short,
    }
    /// connection.close-ok.
    ConnectionCloseOk = (10, 51, "connection.close-ok", content: false) {}
    /// connection.blocked (RabbitMQ extension).
    ConnectionBlocked = (10, 60, "connection.blocked", content: false) { reason: shortstr }
    /// connection.unblocked (RabbitMQ extension).
    ConnectionUnblocked = (10, 61, "connection.unblocked", content: false) {}
    /// connection.update-secret (RabbitMQ extension).
    ConnectionUpdateSecret = (10, 70, "connection.update-secret", content: false) {
        new_secret: longstr, reason: shortstr,
    }
    /// connection.update-secret-ok.
    ConnectionUpdateSecretOk = (10, 71, "connection.update-secret-ok", content: false) {}

    /// channel.open.
    ChannelOpen = (20, 10, "channel.open", content: false) { out_of_band: shortstr }
    /// channel.open-ok.
    ChannelOpenOk = (20, 11, "channel.open-ok", content: false) { channel_id: longstr }
    /// channel.flow.
    ChannelFlow = (20, 20, "channel.flow", content: false) { active: bit }
    /// channel.flow-ok.
    ChannelFlowOk = (20, 21, "channel.flow-ok", content: false) { active: bit }
    /// channel.close.
    ChannelClose = (20, 40, "channel.close", content: false) {
        reply_code: short, reply_text: shortstr, class_id: short, method_id: short,
    }
    /// channel.close-ok.
    ChannelCloseOk = (20, 41, "channel.close-ok", content: false) {}

    /// access.request (deprecated; RabbitMQ still answers it).
    AccessRequest = (30, 10, "access.request", content: false) {
        realm: shortstr, exclusive: bit, passive: bit, active: bit, write: bit, read: bit,
    }
    /// access.request-ok.
    AccessRequestOk = (30, 11, "access.request-ok", content: false) { ticket: short }

    /// exchange.declare.
    ExchangeDeclare = (40, 10, "exchange.declare", content: false) {
        ticket: short, exchange: shortstr, kind: shortstr, passive: bit, durable: bit,
        auto_delete: bit, internal: bit, nowait: bit, arguments: table,
    }
    /// exchange.declare-ok.
    ExchangeDeclareOk = (40, 11, "exchange.declare-ok", content: false) {}
    /// exchange.delete.
    ExchangeDelete = (40, 20, "exchange.delete", content: false) {
        ticket: short, exchange: shortstr, if_unused: bit, nowait: bit,
    }
    /// exchange.delete-ok.
    ExchangeDeleteOk = (40, 21, "exchange.delete-ok", content: false) {}
    /// exchange.bind (RabbitMQ extension).
    ExchangeBind = (40, 30, "exchange.bind", content: false) {
        ticket: short, destination: shortstr, source: shortstr, routing_key: shortstr,
        nowait: bit, arguments: table,
    }
    /// exchange.bind-ok.
    ExchangeBindOk = (40, 31, "exchange.bind-ok", content: false) {}
    /// exchange.unbind (RabbitMQ extension).
    ExchangeUnbind = (40, 40, "exchange.unbind", content: false) {
        ticket: short, destination: shortstr, source: shortstr, routing_key: shortstr,
        nowait: bit, arguments: table,
    }
    /// exchange.unbind-ok (method id 51, as in RabbitMQ).
    ExchangeUnbindOk = (40, 51, "exchange.unbind-ok", content: false) {}

    /// queue.declare.
    QueueDeclare = (50, 10, "queue.declare", content: false) {
        ticket: short, queue: shortstr, passive: bit, durable: bit, exclusive: bit,
        auto_delete: bit, nowait: bit, arguments: table,
    }
    /// queue.declare-ok.
    QueueDeclareOk = (50, 11, "queue.declare-ok", content: false) {
        queue: shortstr, message_count: long, consumer_count: long,
    }
    /// queue.bind.
    QueueBind = (50, 20, "queue.bind", content: false) {
        ticket: short, queue: shortstr, exchange: shortstr, routing_key: shortstr,
        nowait: bit, arguments: table,
    }
    /// queue.bind-ok.
    QueueBindOk = (50, 21, "queue.bind-ok", content: false) {}
    /// queue.purge.
    QueuePurge = (50, 30, "queue.purge", content: false) {
        ticket: short, queue: shortstr, nowait: bit,
    }
    /// queue.purge-ok.
    QueuePurgeOk = (50, 31, "queue.purge-ok", content: false) { message_count: long }
    /// queue.delete.
    QueueDelete = (50, 40, "queue.delete", content: false) {
        ticket: short, queue: shortstr, if_unused: bit, if_empty: bit, nowait: bit,
    }
    /// queue.delete-ok.
    QueueDeleteOk = (50, 41, "queue.delete-ok", content: false) { message_count: long }
    /// queue.unbind.
    QueueUnbind = (50, 50, "queue.unbind", content: false) {
        ticket: short, queue: shortstr, exchange: shortstr, routing_key: shortstr,
        arguments: table,
    }
    /// queue.unbind-ok.
    QueueUnbindOk = (50, 51, "queue.unbind-ok", content: false) {}

    /// basic.qos.
    BasicQos = (60, 10, "basic.qos", content: false) {
        prefetch_size: long, prefetch_count: short, global: bit,
    }
    /// basic.qos-ok.
    BasicQosOk = (60, 11, "basic.qos-ok", content: false) {}
    /// basic.consume.
    BasicConsume = (60, 20, "basic.consume", content: false) {
        ticket: short, queue: shortstr, consumer_tag: shortstr, no_local: bit, no_ack: bit,
        exclusive: bit, nowait: bit, arguments: table,
    }
    /// basic.consume-ok.
    BasicConsumeOk = (60, 21, "basic.consume-ok", content: false) { consumer_tag: shortstr }
    /// basic.cancel (either direction).
    BasicCancel = (60, 30, "basic.cancel", content: false) { consumer_tag: shortstr, nowait: bit }
    /// basic.cancel-ok.
    BasicCancelOk = (60, 31, "basic.cancel-ok", content: false) { consumer_tag: shortstr }
    /// basic.publish.
    BasicPublish = (60, 40, "basic.publish", content: true) {
        ticket: short, exchange: shortstr, routing_key: shortstr, mandatory: bit, immediate: bit,
    }
    /// basic.return.
    BasicReturn = (60, 50, "basic.return", content: true) {
        reply_code: short, reply_text: shortstr, exchange: shortstr, routing_key: shortstr,
    }
    /// basic.deliver.
    BasicDeliver = (60, 60, "basic.deliver", content: true) {
        consumer_tag: shortstr, delivery_tag: longlong, redelivered: bit, exchange: shortstr,
        routing_key: shortstr,
    }
    /// basic.get.
    BasicGet = (60, 70, "basic.get", content: false) { ticket: short, queue: shortstr, no_ack: bit }
    /// basic.get-ok.
    BasicGetOk = (60, 71, "basic.get-ok", content: true) {
        delivery_tag: longlong, redelivered: bit, exchange: shortstr, routing_key: shortstr,
        message_count: long,
    }
    /// basic.get-empty.
    BasicGetEmpty = (60, 72, "basic.get-empty", content: false) { cluster_id: shortstr }
    /// basic.ack (either direction).
    BasicAck = (60, 80, "basic.ack", content: false) { delivery_tag: longlong, multiple: bit }
    /// basic.reject.
    BasicReject = (60, 90, "basic.reject", content: false) { delivery_tag: longlong, requeue: bit }
    /// basic.recover-async (deprecated).
    BasicRecoverAsync = (60, 100, "basic.recover-async", content: false) { requeue: bit }
    /// basic.recover.
    BasicRecover = (60, 110, "basic.recover", content: false) { requeue: bit }
    /// basic.recover-ok.
    BasicRecoverOk = (60, 111, "basic.recover-ok", content: false) {}
    /// basic.nack (RabbitMQ extension; either direction).
    BasicNack = (60, 120, "basic.nack", content: false) {
        delivery_tag: longlong, multiple: bit, requeue: bit,
    }

    /// confirm.select (RabbitMQ extension).
    ConfirmSelect = (85, 10, "confirm.select", content: false) { nowait: bit }
    /// confirm.select-ok.
    ConfirmSelectOk = (85, 11, "confirm.select-ok", content: false) {}

    /// tx.select.
    TxSelect = (90, 10, "tx.select", content: false) {}
    /// tx.select-ok.
    TxSelectOk = (90, 11, "tx.select-ok", content: false) {}
    /// tx.commit.
    TxCommit = (90, 20, "tx.commit", content: false) {}
    /// tx.commit-ok.
    TxCommitOk = (90, 21, "tx.commit-ok", content: false) {}
    /// tx.rollback.
    TxRollback = (90, 30, "tx.rollback", content: false) {}
    /// tx.rollback-ok.
    TxRollbackOk = (90, 31, "tx.rollback-ok", content: false) {}
}
